package analysis

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"text/template"

	"canarygate.io/canarygate/api/v1alpha1"
)

// DefaultMetricInterval is the query range of a metric that sets no interval, as in Flagger.
const DefaultMetricInterval = "1m"

// builtinQueries are Flagger's Istio queries (pkg/metrics/observers/istio.go), verbatim, so that
// a request-success-rate or request-duration check means exactly what it means under Flagger.
var builtinQueries = map[string]string{
	v1alpha1.MetricRequestSuccessRate: `
	sum(
		rate(
			istio_requests_total{
				reporter="destination",
				destination_workload_namespace="{{ namespace }}",
				destination_workload=~"{{ target }}",
				response_code!~"5.*"
			}[{{ interval }}]
		)
	)
	/
	sum(
		rate(
			istio_requests_total{
				reporter="destination",
				destination_workload_namespace="{{ namespace }}",
				destination_workload=~"{{ target }}"
			}[{{ interval }}]
		)
	)
	* 100`,
	v1alpha1.MetricRequestDuration: `
	histogram_quantile(
		0.99,
		sum(
			rate(
				istio_request_duration_milliseconds_bucket{
					reporter="destination",
					destination_workload_namespace="{{ namespace }}",
					destination_workload=~"{{ target }}"
				}[{{ interval }}]
			)
		) by (le)
	)`,
}

var whitespace = regexp.MustCompile(`\s+`)

// RenderQuery returns the PromQL for a metric: its own query when it has one, else the built-in of
// its name. Templates use Flagger's syntax, {{ namespace }}, {{ name }}, {{ target }},
// {{ service }} and {{ interval }}; {{ .Namespace }} and the other Vars fields work too. The
// interval is the metric's, else vars.Interval, else DefaultMetricInterval. Runs of white space
// collapse to one space, as Flagger sends queries, so multi-line templates read well in messages.
func RenderQuery(m v1alpha1.CanaryMetric, vars Vars) (string, error) {
	text := m.Query
	if strings.TrimSpace(text) == "" {
		builtin, ok := builtinQueries[m.Name]
		if !ok {
			return "", fmt.Errorf("no query, and %q is not a built-in metric (%s, %s)",
				m.Name, v1alpha1.MetricRequestSuccessRate, v1alpha1.MetricRequestDuration)
		}
		text = builtin
	}
	switch {
	case m.Interval != "":
		vars.Interval = m.Interval
	case vars.Interval == "":
		vars.Interval = DefaultMetricInterval
	}

	tmpl, err := template.New(m.Name).Option("missingkey=error").Funcs(template.FuncMap{
		"namespace": func() string { return vars.Namespace },
		"name":      func() string { return vars.Name },
		"target":    func() string { return vars.Target },
		"service":   func() string { return vars.Service },
		"interval":  func() string { return vars.Interval },
	}).Parse(text)
	if err != nil {
		return "", fmt.Errorf("query template: %w", err)
	}
	var b strings.Builder
	if err := tmpl.Execute(&b, vars); err != nil {
		return "", fmt.Errorf("query template: %w", err)
	}
	query := strings.TrimSpace(whitespace.ReplaceAllString(b.String(), " "))
	if query == "" {
		return "", errors.New("query template renders to an empty query")
	}
	return query, nil
}
