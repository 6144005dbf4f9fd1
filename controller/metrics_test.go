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
	if v := value(t, phaseGauge.WithLabelValues("m", "web", string(v1alpha1.PhaseProgressing))); v != 1 {
		t.Errorf("phase Progressing = %v, want 1", v)
	}
	// A phase change moves the one series to the new phase.
	c.Status.Phase = v1alpha1.PhaseSucceeded
	recordStatus(c)
	if n := seriesCount(phaseGauge); n != 1 {
		t.Errorf("%d phase series for one Canary, want 1", n)
	}
	if v := value(t, phaseGauge.WithLabelValues("m", "web", string(v1alpha1.PhaseSucceeded))); v != 1 {
		t.Errorf("phase Succeeded = %v, want 1", v)
	}
	forgetCanary("m", "web")
	if n := seriesCount(phaseGauge); n != 0 {
		t.Errorf("%d phase series left after forgetCanary", n)
	}
}

func seriesCount(c prometheus.Collector) int {
	ch := make(chan prometheus.Metric, 100)
	c.Collect(ch)
	close(ch)
	return len(ch)
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
