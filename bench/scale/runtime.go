package scale

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// heapMetrics are the Go runtime's memory figures canarygate exports on its metrics endpoint: where
// its resident memory goes (live heap versus what the runtime holds).
var heapMetrics = []string{"go_memstats_heap_alloc_bytes", "go_memstats_heap_inuse_bytes", "go_memstats_sys_bytes"}

// reconcileMetric counts reconciles per controller (label controller) and result.
const reconcileMetric = "controller_runtime_reconcile_total"

// RuntimeMetrics scrapes canarygate's /metrics for heapMetrics, and for reconcileMetric summed per
// controller (keys "reconciles <controller>"): the work canarygate does without the API server.
func RuntimeMetrics(ctx context.Context, metricsAddr string) (map[string]int64, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+metricsAddr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	out := map[string]int64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, reconcileMetric+"{") {
			labels, val, ok := strings.Cut(strings.TrimPrefix(line, reconcileMetric), " ")
			if !ok {
				continue
			}
			v, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", reconcileMetric, err)
			}
			out["reconciles "+label(labels, "controller")] += int64(v)
			continue
		}
		name, val, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		for _, m := range heapMetrics {
			if name == m {
				v, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
				if err != nil {
					return nil, fmt.Errorf("%s: %w", name, err)
				}
				out[name] = int64(v)
			}
		}
	}
	return out, sc.Err()
}

// label returns a label's value from a Prometheus text-format label set, {a="x",b="y"}.
func label(set, name string) string {
	_, rest, ok := strings.Cut(set, name+`="`)
	if !ok {
		return ""
	}
	v, _, _ := strings.Cut(rest, `"`)
	return v
}

// metricsSize is the size of one /metrics response.
func metricsSize(ctx context.Context, metricsAddr string) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+metricsAddr+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	return io.Copy(io.Discard, resp.Body)
}
