package harness

import (
	"context"
	"fmt"
	"net/http"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Metrics scrapes canarygate's metrics endpoint.
func (c *Canarygate) Metrics(ctx context.Context) (map[string]*dto.MetricFamily, error) {
	return ScrapeMetrics(ctx, c.MetricsAddr)
}

// ScrapeMetrics reads the Prometheus text exposition at http://addr/metrics.
func ScrapeMetrics(ctx context.Context, addr string) (map[string]*dto.MetricFamily, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET http://%s/metrics: %s", addr, resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	return parser.TextToMetricFamilies(resp.Body)
}

// Matching returns the series of f that carry labelName=labelValue; every series when labelName
// is empty.
func Matching(f *dto.MetricFamily, labelName, labelValue string) []*dto.Metric {
	if f == nil {
		return nil
	}
	var out []*dto.Metric
	for _, m := range f.GetMetric() {
		if labelName == "" || Label(m, labelName) == labelValue {
			out = append(out, m)
		}
	}
	return out
}

// Label is a series' value of the label name, "" when it has none.
func Label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// Value is a counter's, gauge's or untyped sample's value.
func Value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.GetCounter().GetValue()
	case m.Gauge != nil:
		return m.GetGauge().GetValue()
	}
	return m.GetUntyped().GetValue()
}

// Sum adds up the values of Matching(f, labelName, labelValue).
func Sum(f *dto.MetricFamily, labelName, labelValue string) float64 {
	var v float64
	for _, m := range Matching(f, labelName, labelValue) {
		v += Value(m)
	}
	return v
}
