package scale

import (
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

func TestHistogramQuantile(t *testing.T) {
	h := histogram{
		bounds: []float64{0.1, 1, 10, math.Inf(1)},
		counts: []uint64{50, 90, 99, 100},
		count:  100,
	}
	cases := []struct {
		q    float64
		want time.Duration
	}{
		{0.25, 50 * time.Millisecond}, // half-way through the first bucket, from 0
		{0.5, 100 * time.Millisecond}, // the first bucket's bound
		{0.7, 550 * time.Millisecond}, // half-way through (0.1, 1]
		{0.99, 10 * time.Second},      // the third bucket's bound
		{0.999, 10 * time.Second},     // in +Inf: the largest finite bound
	}
	for _, c := range cases {
		if got := h.quantile(c.q); got != c.want {
			t.Errorf("quantile(%v) = %v, want %v", c.q, got, c.want)
		}
	}
	if got := (histogram{}).quantile(0.5); got != 0 {
		t.Errorf("empty histogram quantile = %v, want 0", got)
	}
}

func TestHistogramDelta(t *testing.T) {
	parse := func(text string) map[string]*dto.MetricFamily {
		t.Helper()
		parser := expfmt.NewTextParser(model.UTF8Validation)
		fams, err := parser.TextToMetricFamilies(strings.NewReader(text))
		if err != nil {
			t.Fatal(err)
		}
		return fams
	}
	const tmpl = `# TYPE workqueue_queue_duration_seconds histogram
workqueue_queue_duration_seconds_bucket{name="canary",le="0.1"} %d
workqueue_queue_duration_seconds_bucket{name="canary",le="1"} %d
workqueue_queue_duration_seconds_bucket{name="canary",le="+Inf"} %d
workqueue_queue_duration_seconds_sum{name="canary"} 1
workqueue_queue_duration_seconds_count{name="canary"} %d
workqueue_queue_duration_seconds_bucket{name="optin",le="0.1"} 1000
workqueue_queue_duration_seconds_bucket{name="optin",le="1"} 1000
workqueue_queue_duration_seconds_bucket{name="optin",le="+Inf"} 1000
workqueue_queue_duration_seconds_sum{name="optin"} 1
workqueue_queue_duration_seconds_count{name="optin"} 1000
`
	before := parse(fmt.Sprintf(tmpl, 10, 10, 10, 10))
	after := parse(fmt.Sprintf(tmpl, 20, 110, 110, 110))
	h := histogramDelta(before[queueWaitMetric], after[queueWaitMetric], "name", "canary")
	if h.count != 100 {
		t.Fatalf("delta count = %d, want 100 (the other queue's series must not count)", h.count)
	}
	// 10 new observations ≤ 0.1 s, 90 in (0.1, 1]: the median is 4/9 of the way into the second.
	if got, want := h.quantile(0.5), 500*time.Millisecond; got != want {
		t.Errorf("median = %v, want %v", got, want)
	}
}
