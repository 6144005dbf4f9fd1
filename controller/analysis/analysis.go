// Package analysis judges a canary: metric queries against Prometheus, their verdicts, and
// Flagger-compatible webhooks. Verdict logic is pure and table-tested; I/O sits in the providers.
package analysis

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"canarygate.io/canarygate/api/v1alpha1"
)

// Vars are the variables a PromQL template may use, as in Flagger.
type Vars struct {
	Namespace string // the Canary's namespace
	Name      string // the Canary's name
	Target    string // the canary workload: <deployment>-canary
	Service   string // the stable Service's name
	Interval  string // the metric's interval, for example 1m
}

// Verdict is the outcome of one check.
type Verdict string

const (
	// Pass: the value lies within the threshold range.
	Pass Verdict = "Pass"
	// Fail: the value lies outside the range, the query failed, or there was no data under NoData=Fail.
	Fail Verdict = "Fail"
	// Wait: no data under NoData=Wait; the round neither passes nor fails.
	Wait Verdict = "Wait"
)

// MetricProvider runs one query and returns its single value; ok is false when the query returned
// no samples (or NaN), which is never a pass.
type MetricProvider interface {
	Query(ctx context.Context, query string) (value float64, ok bool, err error)
}

// QueryTimeout bounds each metric query of RunMetrics (Flagger uses the same), so one slow query
// cannot hold a whole round; a query that times out fails like any other query error.
const QueryTimeout = 5 * time.Second

// MetricResult is the judged outcome of one check (a metric, or a rollout webhook).
type MetricResult struct {
	Name string
	// Value is the measured value; it is meaningful only when HasValue is true.
	Value    float64
	HasValue bool
	Verdict  Verdict
	// Message explains a Fail or Wait in one sentence naming the check; empty on Pass.
	Message string
}

// RoundResult is the outcome of one analysis round.
type RoundResult struct {
	Verdict Verdict
	// Message joins the messages of the checks that decided the verdict (the failing ones on Fail,
	// the waiting ones on Wait); empty on Pass.
	Message string
	// Results holds every check in order, for status and logs.
	Results []MetricResult
}

// Evaluate judges one metric value. value, ok and err are what MetricProvider.Query returned.
// The threshold range is inclusive on both sides; a metric without a range passes whenever it has
// data. No data (ok false, NaN or ±Inf) never passes: it fails unless noData is Wait. A query error
// always fails, with the error text in the message.
func Evaluate(m v1alpha1.CanaryMetric, value float64, ok bool, err error, noData v1alpha1.NoDataPolicy) MetricResult {
	r := MetricResult{Name: m.Name}
	switch {
	case err != nil:
		r.Verdict = Fail
		r.Message = fmt.Sprintf("metric %s: %v", m.Name, err)
		return r
	case !ok || math.IsNaN(value) || math.IsInf(value, 0):
		if noData == v1alpha1.NoDataWait {
			r.Verdict = Wait
			r.Message = fmt.Sprintf("metric %s: no data, waiting", m.Name)
		} else {
			r.Verdict = Fail
			r.Message = fmt.Sprintf("metric %s: no data", m.Name)
		}
		return r
	}

	r.Value, r.HasValue, r.Verdict = value, true, Pass
	if tr := m.ThresholdRange; tr != nil {
		if tr.Min != nil && value < *tr.Min {
			r.Verdict = Fail
			r.Message = fmt.Sprintf("metric %s: %s is below the minimum %s", m.Name, formatValue(value), formatValue(*tr.Min))
		} else if tr.Max != nil && value > *tr.Max {
			r.Verdict = Fail
			r.Message = fmt.Sprintf("metric %s: %s is above the maximum %s", m.Name, formatValue(value), formatValue(*tr.Max))
		}
	}
	return r
}

// formatValue prints enough digits to tell a value from a nearby threshold without the noise of
// full float precision.
func formatValue(v float64) string {
	return strconv.FormatFloat(v, 'g', 6, 64)
}

// Round aggregates the checks of one round: any Fail fails the round, else any Wait makes it wait,
// else it passes. A round without checks passes, as in Flagger (nothing is configured to fail it).
func Round(results []MetricResult) RoundResult {
	var failed, waiting []string
	for _, r := range results {
		switch r.Verdict {
		case Fail:
			failed = append(failed, r.Message)
		case Wait:
			waiting = append(waiting, r.Message)
		}
	}
	switch {
	case len(failed) > 0:
		return RoundResult{Verdict: Fail, Message: strings.Join(failed, "; "), Results: results}
	case len(waiting) > 0:
		return RoundResult{Verdict: Wait, Message: strings.Join(waiting, "; "), Results: results}
	default:
		return RoundResult{Verdict: Pass, Results: results}
	}
}

// RunMetrics renders, queries and judges every metric in order, each query bounded by QueryTimeout
// (and by ctx), and aggregates them with Round. A template error fails its metric like a query error.
// vars.Interval is the fallback interval for metrics that set none (DefaultMetricInterval when empty).
func RunMetrics(ctx context.Context, p MetricProvider, metrics []v1alpha1.CanaryMetric, vars Vars, noData v1alpha1.NoDataPolicy) RoundResult {
	results := make([]MetricResult, 0, len(metrics))
	for _, m := range metrics {
		results = append(results, runMetric(ctx, p, m, vars, noData))
	}
	return Round(results)
}

func runMetric(ctx context.Context, p MetricProvider, m v1alpha1.CanaryMetric, vars Vars, noData v1alpha1.NoDataPolicy) MetricResult {
	query, err := RenderQuery(m, vars)
	if err != nil {
		return Evaluate(m, 0, false, err, noData)
	}
	qctx, cancel := context.WithTimeout(ctx, QueryTimeout)
	defer cancel()
	value, ok, err := p.Query(qctx, query)
	return Evaluate(m, value, ok, err, noData)
}
