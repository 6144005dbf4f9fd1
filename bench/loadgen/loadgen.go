// Package loadgen sends HTTP POSTs at a fixed rate, open loop: request i is sent at start+i/rate
// whether or not earlier ones were answered, so a slow server cannot slow the offered load down
// (no coordinated omission). Each request's latency is recorded.
package loadgen

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"canarygate.io/canarygate/bench/stats"
)

// Config is one load run.
type Config struct {
	URL      string
	Rate     int           // requests per second
	Duration time.Duration // how long requests are started
	// Body returns the body of request i; it must be safe for concurrent use.
	Body   func(i int) []byte
	Client *http.Client
	// Check validates a 200 response body; nil accepts any.
	Check func(body []byte) error
}

// Result summarises a run.
type Result struct {
	Sent, OK, Failed int
	// Elapsed is from the first scheduled send to the last answer.
	Elapsed time.Duration
	// Throughput is answered-OK requests per second over Elapsed.
	Throughput float64
	// P50, P99 and Max are response times, from writing the request to reading the whole answer.
	P50, P99, Max time.Duration
	// P99Scheduled is measured from when the request was due: it adds the client's own delay in
	// sending it (on a busy machine, the load generator's goroutines wait for a CPU too).
	P99Scheduled time.Duration
	// FirstError is the first failure seen, "" when none.
	FirstError string
}

// HTTP1Client is a keep-alive HTTP/1.1 client trusting caPEM, as kube-apiserver calls webhooks
// registered through a Service: it pins http/1.1 (https://issue.k8s.io/75791) and keeps
// connections in a pool. At most maxConns connections are open at once: an overloaded server
// then makes requests queue in the client (and time out) instead of exhausting file descriptors.
func HTTP1Client(caPEM []byte, timeout time.Duration, maxConns int) (*http.Client, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("loadgen: no certificate in the CA bundle")
	}
	tr := &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: pool, NextProtos: []string{"http/1.1"}, MinVersion: tls.VersionTLS12},
		MaxIdleConns:        maxConns,
		MaxIdleConnsPerHost: maxConns,
		MaxConnsPerHost:     maxConns,
		IdleConnTimeout:     90 * time.Second,
		// A non-nil empty map turns HTTP/2 off.
		TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{},
	}
	return &http.Client{Transport: tr, Timeout: timeout}, nil
}

// Run sends cfg.Rate*cfg.Duration requests and waits for every answer.
func Run(ctx context.Context, cfg Config) (Result, error) {
	if cfg.Rate <= 0 || cfg.Duration <= 0 || cfg.Body == nil || cfg.Client == nil {
		return Result{}, errors.New("loadgen: Rate, Duration, Body and Client are required")
	}
	n := int(int64(cfg.Rate) * int64(cfg.Duration) / int64(time.Second))
	type sample struct {
		latency, sinceDue time.Duration
		err               error
	}
	samples := make([]sample, n)
	period := time.Second / time.Duration(cfg.Rate)
	var wg sync.WaitGroup
	start := time.Now()
	sent := 0
	for i := 0; i < n; i++ {
		due := start.Add(time.Duration(i) * period)
		if d := time.Until(due); d > 0 {
			select {
			case <-ctx.Done():
				wg.Wait()
				return Result{}, ctx.Err()
			case <-time.After(d):
			}
		}
		sent++
		wg.Add(1)
		go func(i int, due time.Time) {
			defer wg.Done()
			began := time.Now()
			err := post(ctx, cfg, cfg.Body(i))
			end := time.Now()
			samples[i] = sample{latency: end.Sub(began), sinceDue: end.Sub(due), err: err}
		}(i, due)
	}
	wg.Wait()
	elapsed := time.Since(start)

	res := Result{Sent: sent, Elapsed: elapsed}
	var lat, due []time.Duration
	for _, s := range samples[:sent] {
		if s.err != nil {
			res.Failed++
			if res.FirstError == "" {
				res.FirstError = s.err.Error()
			}
			continue
		}
		res.OK++
		lat = append(lat, s.latency)
		due = append(due, s.sinceDue)
	}
	res.Throughput = float64(res.OK) / elapsed.Seconds()
	res.P50, res.P99, res.Max = stats.Quantile(lat, 0.5), stats.Quantile(lat, 0.99), stats.Quantile(lat, 1)
	res.P99Scheduled = stats.Quantile(due, 0.99)
	return res, nil
}

func post(ctx context.Context, cfg Config, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, cfg.URL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	resp, err := cfg.Client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(out))
	}
	if cfg.Check != nil {
		return cfg.Check(out)
	}
	return nil
}
