package scale

import (
	"context"
	"io"
	"net/http"

	dto "github.com/prometheus/client_model/go"

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
		for _, m := range fams[name].GetMetric() {
			out[name] += int64(value(m))
		}
	}
	for _, m := range fams[reconcileMetric].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "controller" {
				out["reconciles "+l.GetValue()] += int64(value(m))
			}
		}
	}
	return out, nil
}

// value is a sample's value, whichever type its family declares.
func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.GetCounter().GetValue()
	case m.Gauge != nil:
		return m.GetGauge().GetValue()
	}
	return m.GetUntyped().GetValue()
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
