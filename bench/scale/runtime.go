package scale

import (
	"context"
	"io"
	"net/http"

	"canarygate.io/canarygate/e2e/harness"
)

// heapMetrics are the Go runtime's memory figures canarygate exports on its metrics endpoint: where
// its resident memory goes (live heap versus what the runtime holds).
var heapMetrics = []string{"go_memstats_heap_alloc_bytes", "go_memstats_heap_inuse_bytes", "go_memstats_sys_bytes"}

// reconcileMetric counts reconciles per controller (label controller) and result.
const reconcileMetric = "controller_runtime_reconcile_total"

// RuntimeMetrics scrapes canarygate's /metrics for heapMetrics, and for reconcileMetric summed per
// controller (keys "reconciles <controller>"): the work canarygate does without the API server.
func RuntimeMetrics(ctx context.Context, metricsAddr string) (map[string]int64, error) {
	fams, err := harness.ScrapeMetrics(ctx, metricsAddr)
	if err != nil {
		return nil, err
	}
	out := map[string]int64{}
	for _, name := range heapMetrics {
		out[name] = int64(harness.Sum(fams[name], "", ""))
	}
	for _, m := range fams[reconcileMetric].GetMetric() {
		out["reconciles "+harness.Label(m, "controller")] += int64(harness.Value(m))
	}
	return out, nil
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
