package controller

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"canarygate.io/canarygate/api/v1alpha1"
)

func TestRecordStatus(t *testing.T) {
	c := &v1alpha1.Canary{ObjectMeta: metav1.ObjectMeta{Namespace: "m", Name: "web"},
		Status: v1alpha1.CanaryStatus{Phase: v1alpha1.PhaseProgressing, CanaryWeight: 30, FailedChecks: 1}}
	recordStatus(c)
	if v := value(t, weightGauge.WithLabelValues("m", "web")); v != 30 {
		t.Errorf("weight %v", v)
	}
	if v := value(t, failedChecksGauge.WithLabelValues("m", "web")); v != 1 {
		t.Errorf("failed checks %v", v)
	}
	for _, p := range phases {
		want := 0.0
		if p == v1alpha1.PhaseProgressing {
			want = 1
		}
		if v := value(t, phaseGauge.WithLabelValues("m", "web", string(p))); v != want {
			t.Errorf("phase %s = %v, want %v", p, v, want)
		}
	}
	forgetCanary("m", "web")
	ch := make(chan prometheus.Metric, 100)
	phaseGauge.Collect(ch)
	close(ch)
	if n := len(ch); n != 0 {
		t.Errorf("%d phase series left after forgetCanary", n)
	}
}

func TestCountFinished(t *testing.T) {
	before := value(t, finishedTotal.WithLabelValues("failed"))
	countFinished(v1alpha1.PhaseProgressing, v1alpha1.PhaseFailed)
	countFinished(v1alpha1.PhaseFailed, v1alpha1.PhaseFailed)
	if got := value(t, finishedTotal.WithLabelValues("failed")) - before; got != 1 {
		t.Errorf("failed counted %v times, want 1", got)
	}
}

// value reads a gauge or counter.
func value(t *testing.T, m prometheus.Metric) float64 {
	t.Helper()
	var out dto.Metric
	if err := m.Write(&out); err != nil {
		t.Fatal(err)
	}
	if g := out.GetGauge(); g != nil {
		return g.GetValue()
	}
	return out.GetCounter().GetValue()
}
