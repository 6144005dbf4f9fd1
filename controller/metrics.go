package controller

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"canarygate.io/canarygate/api/v1alpha1"
)

var phases = []v1alpha1.CanaryPhase{
	v1alpha1.PhaseInitialized, v1alpha1.PhaseWaiting, v1alpha1.PhaseProgressing, v1alpha1.PhasePromoting,
	v1alpha1.PhaseFinalising, v1alpha1.PhaseSucceeded, v1alpha1.PhaseFailed,
}

var (
	weightGauge = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "canarygate_canary_weight",
		Help: "Share of traffic, in percent, routed to the canary.",
	}, []string{"namespace", "name"})
	phaseGauge = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "canarygate_canary_phase",
		Help: "Phase of the Canary: one series per Canary, labeled with its current phase, value 1.",
	}, []string{"namespace", "name", "phase"})
	failedChecksGauge = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "canarygate_canary_failed_checks",
		Help: "Failed analysis rounds of the revision under analysis.",
	}, []string{"namespace", "name"})
	analysisDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "canarygate_analysis_duration_seconds",
		Help:    "Duration of an analysis round (webhooks and metric queries).",
		Buckets: []float64{0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30},
	}, []string{"namespace", "name"})
	finishedTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "canarygate_canaries_finished_total",
		Help: "Canary releases finished, by result (succeeded, failed, withdrawn).",
	}, []string{"result"})
)

func init() {
	metrics.Registry.MustRegister(weightGauge, phaseGauge, failedChecksGauge, analysisDuration, finishedTotal)
}

// recordStatus exports a Canary's status.
func recordStatus(c *v1alpha1.Canary) {
	weightGauge.WithLabelValues(c.Namespace, c.Name).Set(float64(c.Status.CanaryWeight))
	failedChecksGauge.WithLabelValues(c.Namespace, c.Name).Set(float64(c.Status.FailedChecks))
	// Only the current phase has a series: a zero for each other phase would multiply the series
	// of a cluster with thousands of Canaries by seven, and every scrape pays for them.
	for _, p := range phases {
		if p != c.Status.Phase {
			phaseGauge.DeleteLabelValues(c.Namespace, c.Name, string(p))
		}
	}
	if c.Status.Phase != "" {
		phaseGauge.WithLabelValues(c.Namespace, c.Name, string(c.Status.Phase)).Set(1)
	}
}

// forgetCanary drops the series of a deleted Canary.
func forgetCanary(namespace, name string) {
	l := prometheus.Labels{"namespace": namespace, "name": name}
	weightGauge.DeletePartialMatch(l)
	failedChecksGauge.DeletePartialMatch(l)
	phaseGauge.DeletePartialMatch(l)
	analysisDuration.DeletePartialMatch(l)
}
