package admission

import (
	"context"
	"os"
	"strings"
	"time"

	"canarygate.io/canarygate/bench/loadgen"
)

// LoadResult is one server at one rate.
type LoadResult struct {
	Server string // "canarygate" or "floor"
	Rate   int
	Repeat int
	// LoadAvg is /proc/loadavg's 1-minute average before the run: the machine is shared.
	LoadAvg string
	loadgen.Result
}

// maxConns bounds the connections to a server, well below the process' file limit.
const maxConns = 1000

// LoadOptions configure RunLoad.
type LoadOptions struct {
	Rates    []int
	Duration time.Duration
	// Warmup is sent at the lowest rate before each measured run (new connections, first TLS
	// handshakes, the cache's first answer), and not recorded.
	Warmup time.Duration
	// Repeats is how many times each (rate, server) pair is measured, alternating the servers: the
	// machine is shared, and one run can meet someone else's burst.
	Repeats int
	Logf    func(format string, args ...any)
}

// settle is the pause between runs, so that a backlog of one never meets the next.
const settle = 3 * time.Second

// RunLoad loads the floor and canarygate alternately at each rate, the floor first, Repeats times,
// so that both meet the same machine state.
func RunLoad(ctx context.Context, s *Servers, reviews *Reviews, opts LoadOptions) ([]LoadResult, error) {
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	targets := []struct {
		name, url string
		check     func([]byte) error
	}{
		{"floor", s.FloorURL, checkAllowed},
		{"canarygate", s.CanarygateURL, checkDiverted},
	}
	var out []LoadResult
	next := 0 // request numbers continue across runs, so that every image is new
	repeats := max(opts.Repeats, 1)
	for _, rate := range opts.Rates {
		for rep := range repeats {
			for _, t := range targets {
				// A client per run: connections opened for one server never serve the other.
				// The timeout is the webhook configurations' timeoutSeconds: the API server gives up then.
				c, err := loadgen.HTTP1Client(s.CAPEM, 5*time.Second, maxConns)
				if err != nil {
					return nil, err
				}
				body := func(base int) func(int) []byte { return func(i int) []byte { return reviews.Body(base + i) } }
				if opts.Warmup > 0 {
					w, err := loadgen.Run(ctx, loadgen.Config{URL: t.url, Rate: opts.Rates[0], Duration: opts.Warmup, Body: body(next), Client: c, Check: t.check})
					if err != nil {
						return nil, err
					}
					if w.Failed > 0 {
						opts.Logf("warm-up of %s: %d of %d failed, first: %s", t.name, w.Failed, w.Sent, w.FirstError)
					}
					next += w.Sent
				}
				load := loadAvg()
				r, err := loadgen.Run(ctx, loadgen.Config{URL: t.url, Rate: rate, Duration: opts.Duration, Body: body(next), Client: c, Check: t.check})
				if err != nil {
					return nil, err
				}
				next += r.Sent
				c.CloseIdleConnections()
				opts.Logf("%-10s %5d req/s: p50 %v p99 %v, %0.f ok/s, %d failed", t.name, rate, r.P50, r.P99, r.Throughput, r.Failed)
				out = append(out, LoadResult{Server: t.name, Rate: rate, Repeat: rep, LoadAvg: load, Result: r})
				select {
				case <-ctx.Done():
					return nil, ctx.Err()
				case <-time.After(settle):
				}
			}
		}
	}
	return out, nil
}

func loadAvg() string {
	raw, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(raw))
	if len(f) == 0 {
		return ""
	}
	return f[0]
}
