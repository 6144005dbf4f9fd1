// Package analysis judges a canary: metric queries against Prometheus, their verdicts, and
// Flagger-compatible webhooks. Verdict logic is pure and table-tested; I/O sits in the providers.
package analysis

import "context"

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
