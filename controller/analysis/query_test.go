package analysis

import (
	"strings"
	"testing"

	"canarygate.io/canarygate/api/v1alpha1"
)

func TestRenderQuery(t *testing.T) {
	vars := Vars{Namespace: "default", Name: "podinfo", Target: "podinfo-canary", Service: "podinfo"}

	cases := []struct {
		name string
		m    v1alpha1.CanaryMetric
		vars Vars
		want string
		err  string
	}{{
		// Flagger's query as its Prometheus provider sends it (white space collapsed), with the
		// canary workload as target.
		name: "built-in success rate, default interval",
		m:    v1alpha1.CanaryMetric{Name: "request-success-rate"},
		vars: vars,
		want: `sum( rate( istio_requests_total{ reporter="destination", destination_workload_namespace="default", destination_workload=~"podinfo-canary", response_code!~"5.*" }[1m] ) ) / sum( rate( istio_requests_total{ reporter="destination", destination_workload_namespace="default", destination_workload=~"podinfo-canary" }[1m] ) ) * 100`,
	}, {
		name: "built-in duration, metric interval",
		m:    v1alpha1.CanaryMetric{Name: "request-duration", Interval: "30s"},
		vars: vars,
		want: `histogram_quantile( 0.99, sum( rate( istio_request_duration_milliseconds_bucket{ reporter="destination", destination_workload_namespace="default", destination_workload=~"podinfo-canary" }[30s] ) ) by (le) )`,
	}, {
		name: "interval falls back to vars",
		m:    v1alpha1.CanaryMetric{Name: "x", Query: `rate(x[{{ interval }}])`},
		vars: Vars{Interval: "2m"},
		want: `rate(x[2m])`,
	}, {
		name: "metric interval beats vars",
		m:    v1alpha1.CanaryMetric{Name: "x", Query: `rate(x[{{ interval }}])`, Interval: "15s"},
		vars: Vars{Interval: "2m"},
		want: `rate(x[15s])`,
	}, {
		name: "all of Flagger's variables",
		m: v1alpha1.CanaryMetric{Name: "custom", Query: `
			sum(rate(http_errors{namespace="{{ namespace }}", app="{{ name }}",
			    pod=~"{{ target }}-[0-9a-z]+", svc="{{service}}"}[{{ interval }}]))`},
		vars: vars,
		want: `sum(rate(http_errors{namespace="default", app="podinfo", pod=~"podinfo-canary-[0-9a-z]+", svc="podinfo"}[1m]))`,
	}, {
		name: "field syntax works too",
		m:    v1alpha1.CanaryMetric{Name: "custom", Query: `up{namespace="{{ .Namespace }}",job="{{ .Target }}"}`},
		vars: vars,
		want: `up{namespace="default",job="podinfo-canary"}`,
	}, {
		name: "own query beats the built-in of the same name",
		m:    v1alpha1.CanaryMetric{Name: "request-success-rate", Query: `vector(100)`},
		vars: vars,
		want: `vector(100)`,
	}, {
		name: "unknown name without query",
		m:    v1alpha1.CanaryMetric{Name: "latency"},
		err:  `no query, and "latency" is not a built-in metric`,
	}, {
		name: "unknown function",
		m:    v1alpha1.CanaryMetric{Name: "x", Query: `up{ns="{{ namspace }}"}`},
		err:  `query template: template: x:1: function "namspace" not defined`,
	}, {
		name: "unknown field",
		m:    v1alpha1.CanaryMetric{Name: "x", Query: `up{ns="{{ .Nope }}"}`},
		err:  `can't evaluate field Nope`,
	}, {
		name: "unclosed action",
		m:    v1alpha1.CanaryMetric{Name: "x", Query: `up{ns="{{ namespace "}`},
		err:  `query template:`,
	}, {
		name: "renders to nothing",
		m:    v1alpha1.CanaryMetric{Name: "x", Query: `{{ if false }}up{{ end }}`},
		err:  `renders to an empty query`,
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := RenderQuery(tc.m, tc.vars)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one containing %q (query %q)", err, tc.err, got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("query\n got %s\nwant %s", got, tc.want)
			}
		})
	}
}
