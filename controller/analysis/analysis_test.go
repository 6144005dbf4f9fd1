package analysis

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"canarygate.io/canarygate/api/v1alpha1"
)

func ptr(f float64) *float64 { return &f }

func metric(name string, min, max *float64) v1alpha1.CanaryMetric {
	m := v1alpha1.CanaryMetric{Name: name}
	if min != nil || max != nil {
		m.ThresholdRange = &v1alpha1.CanaryThresholdRange{Min: min, Max: max}
	}
	return m
}

func TestEvaluate(t *testing.T) {
	rate := metric("request-success-rate", ptr(99), nil)
	dur := metric("request-duration", nil, ptr(500))
	band := metric("band", ptr(1), ptr(2))
	open := metric("open", nil, nil)

	cases := []struct {
		name    string
		m       v1alpha1.CanaryMetric
		value   float64
		ok      bool
		err     error
		noData  v1alpha1.NoDataPolicy
		verdict Verdict
		has     bool
		msg     string // substring of the message; empty means the message must be empty
	}{
		{"above min passes", rate, 99.5, true, nil, "", Pass, true, ""},
		{"min is inclusive", rate, 99, true, nil, "", Pass, true, ""},
		{"below min fails", rate, 98.9, true, nil, "", Fail, true, "metric request-success-rate: 98.9 is below the minimum 99"},
		{"max is inclusive", dur, 500, true, nil, "", Pass, true, ""},
		{"above max fails", dur, 500.5, true, nil, "", Fail, true, "metric request-duration: 500.5 is above the maximum 500"},
		{"inside band", band, 1.5, true, nil, "", Pass, true, ""},
		{"under band", band, 0.5, true, nil, "", Fail, true, "below the minimum 1"},
		{"over band", band, 2.5, true, nil, "", Fail, true, "above the maximum 2"},
		{"no range passes with data", open, -42, true, nil, "", Pass, true, ""},
		{"no data fails by default", rate, 0, false, nil, "", Fail, false, "metric request-success-rate: no data"},
		{"no data fails under Fail", rate, 0, false, nil, v1alpha1.NoDataFail, Fail, false, "no data"},
		{"no data waits under Wait", rate, 0, false, nil, v1alpha1.NoDataWait, Wait, false, "no data, waiting"},
		{"NaN is no data", rate, math.NaN(), true, nil, "", Fail, false, "no data"},
		{"+Inf is no data", dur, math.Inf(1), true, nil, "", Fail, false, "no data"},
		{"-Inf is no data even without range", open, math.Inf(-1), true, nil, v1alpha1.NoDataWait, Wait, false, "no data"},
		{"no data without range still fails", open, 0, false, nil, "", Fail, false, "no data"},
		{"query error fails", rate, 100, true, errors.New("bad_data: parse error"), "", Fail, false, "metric request-success-rate: bad_data: parse error"},
		{"query error fails under Wait", rate, 0, false, errors.New("timeout"), v1alpha1.NoDataWait, Fail, false, "timeout"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := Evaluate(tc.m, tc.value, tc.ok, tc.err, tc.noData)
			if r.Name != tc.m.Name || r.Verdict != tc.verdict || r.HasValue != tc.has {
				t.Fatalf("got %+v, want name %s verdict %s hasValue %v", r, tc.m.Name, tc.verdict, tc.has)
			}
			if tc.has && r.Value != tc.value {
				t.Errorf("value %v, want %v", r.Value, tc.value)
			}
			if tc.msg == "" && r.Message != "" {
				t.Errorf("message %q, want none", r.Message)
			}
			if !strings.Contains(r.Message, tc.msg) {
				t.Errorf("message %q lacks %q", r.Message, tc.msg)
			}
		})
	}
}

func TestRound(t *testing.T) {
	pass := MetricResult{Name: "a", Verdict: Pass}
	fail1 := MetricResult{Name: "b", Verdict: Fail, Message: "b low"}
	fail2 := MetricResult{Name: "c", Verdict: Fail, Message: "c high"}
	wait1 := MetricResult{Name: "d", Verdict: Wait, Message: "d no data"}
	wait2 := MetricResult{Name: "e", Verdict: Wait, Message: "e no data"}

	cases := []struct {
		name    string
		in      []MetricResult
		verdict Verdict
		msg     string
	}{
		{"no checks pass", nil, Pass, ""},
		{"all pass", []MetricResult{pass, pass}, Pass, ""},
		{"one fail fails", []MetricResult{pass, fail1}, Fail, "b low"},
		{"fail beats wait, all failures named", []MetricResult{wait1, fail1, pass, fail2}, Fail, "b low; c high"},
		{"wait beats pass", []MetricResult{pass, wait1, wait2}, Wait, "d no data; e no data"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := Round(tc.in)
			if r.Verdict != tc.verdict || r.Message != tc.msg || len(r.Results) != len(tc.in) {
				t.Fatalf("got %+v, want verdict %s message %q and %d results", r, tc.verdict, tc.msg, len(tc.in))
			}
		})
	}
}

// recordingProvider answers from a table keyed by query and records what it was asked.
type recordingProvider struct {
	answers   map[string]answer
	queries   []string
	deadlines []time.Duration
}

type answer struct {
	value float64
	ok    bool
	err   error
}

func (p *recordingProvider) Query(ctx context.Context, q string) (float64, bool, error) {
	p.queries = append(p.queries, q)
	if d, ok := ctx.Deadline(); ok {
		p.deadlines = append(p.deadlines, time.Until(d))
	}
	a, found := p.answers[q]
	if !found {
		return 0, false, nil
	}
	return a.value, a.ok, a.err
}

func TestRunMetrics(t *testing.T) {
	vars := Vars{Namespace: "ns", Name: "app", Target: "app-canary", Service: "app"}
	rate, err := RenderQuery(v1alpha1.CanaryMetric{Name: v1alpha1.MetricRequestSuccessRate}, vars)
	if err != nil {
		t.Fatal(err)
	}
	p := &recordingProvider{answers: map[string]answer{
		rate:                             {value: 99.9, ok: true},
		`errors{ns="ns",interval="30s"}`: {value: 7, ok: true},
	}}
	metrics := []v1alpha1.CanaryMetric{
		metric(v1alpha1.MetricRequestSuccessRate, ptr(99), nil),
		{Name: "errors", Query: `errors{ns="{{ namespace }}",interval="{{ interval }}"}`, Interval: "30s",
			ThresholdRange: &v1alpha1.CanaryThresholdRange{Max: ptr(5)}},
		{Name: "absent", Query: `absent_metric`},
		{Name: "broken", Query: `{{ nope }}`},
	}

	r := RunMetrics(context.Background(), p, metrics, vars, v1alpha1.NoDataWait)

	if r.Verdict != Fail {
		t.Fatalf("verdict %s, want Fail: %+v", r.Verdict, r)
	}
	want := []Verdict{Pass, Fail, Wait, Fail}
	for i, res := range r.Results {
		if res.Verdict != want[i] {
			t.Errorf("result %d (%s): %s, want %s: %s", i, res.Name, res.Verdict, want[i], res.Message)
		}
	}
	for _, s := range []string{"metric errors: 7 is above the maximum 5", `metric broken: query template:`, `function "nope" not defined`} {
		if !strings.Contains(r.Message, s) {
			t.Errorf("round message %q lacks %q", r.Message, s)
		}
	}
	// The broken template never reaches the provider; the others are queried once, in order.
	if len(p.queries) != 3 || p.queries[0] != rate || p.queries[2] != "absent_metric" {
		t.Errorf("queries %q", p.queries)
	}
	for _, d := range p.deadlines {
		if d <= 0 || d > QueryTimeout {
			t.Errorf("query deadline %v, want within (0, %v]", d, QueryTimeout)
		}
	}
	if len(p.deadlines) != len(p.queries) {
		t.Errorf("%d of %d queries had a deadline", len(p.deadlines), len(p.queries))
	}
}
