package v1alpha1_test

import (
	"context"
	"os"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"canarygate.io/canarygate/api/v1alpha1"
	"canarygate.io/canarygate/e2e/testbed"
)

// The schema is checked by a real kube-apiserver with the generated CRDs installed: what matters is
// what the API server accepts and the message a person gets back, not what the Go types allow.
func TestMain(m *testing.M) {
	os.Exit(testbed.Run(m, testbed.Options{NoPrometheus: true}))
}

func apiClient(t *testing.T) client.Client {
	t.Helper()
	c, err := testbed.Shared().Client()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func ensureNamespace(t *testing.T, c client.Client, name string) {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := c.Create(context.Background(), ns); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}

func TestSeedCanaryAcceptedAsIs(t *testing.T) {
	c := apiClient(t)
	raw, err := os.ReadFile("testdata/seed-canary.yaml")
	if err != nil {
		t.Fatal(err)
	}
	obj := &unstructured.Unstructured{}
	if err := yaml.Unmarshal(raw, &obj.Object); err != nil {
		t.Fatal(err)
	}
	ensureNamespace(t, c, obj.GetNamespace())
	if err := c.Create(context.Background(), obj); err != nil {
		t.Fatalf("the seed's Canary was rejected: %v", err)
	}
	var got v1alpha1.Canary
	if err := c.Get(context.Background(), client.ObjectKeyFromObject(obj), &got); err != nil {
		t.Fatal(err)
	}
	a := got.Spec.Analysis
	if a == nil || a.Interval != "1m" || a.Threshold != 10 || a.MaxWeight != 50 || a.StepWeight != 10 {
		t.Fatalf("analysis not stored as written: %+v", a)
	}
	if len(a.Metrics) != 2 || *a.Metrics[0].ThresholdRange.Min != 99 || *a.Metrics[1].ThresholdRange.Max != 500 {
		t.Fatalf("metrics not stored as written: %+v", a.Metrics)
	}
	hook := a.Webhooks[0]
	if hook.Type != "" || hook.Metadata["type"] != "cmd" || !strings.HasPrefix(hook.Metadata["cmd"], "hey -z 1m") {
		t.Fatalf("webhook not stored as written: %+v", hook)
	}
	if got.Spec.Provider != "istio" || got.Spec.TargetRef.Kind != "Deployment" {
		t.Fatalf("defaults not applied: provider %q kind %q", got.Spec.Provider, got.Spec.TargetRef.Kind)
	}
}

// badAnalyses are analyses the schema rejects, with the message a person gets back. They hold for a
// Canary's spec.analysis and a CanaryPolicy's spec.defaults alike: both are a CanaryAnalysis.
var badAnalyses = []struct {
	name     string
	analysis string
	want     string
}{
	{"weight above 100", `{interval: 1m, maxWeight: 101}`, "should be less than or equal to 100"},
	{"negative step", `{interval: 1m, stepWeight: -5}`, "should be greater than or equal to 0"},
	{"step above max", `{interval: 1m, maxWeight: 20, stepWeight: 30}`, "stepWeight must not exceed maxWeight"},
	{"stepWeights descending", `{interval: 1m, stepWeights: [10, 30, 20]}`, "stepWeights must be strictly ascending"},
	{"stepWeights repeated", `{interval: 1m, stepWeights: [10, 10]}`, "stepWeights must be strictly ascending"},
	{"stepWeights above max", `{interval: 1m, maxWeight: 30, stepWeights: [10, 40]}`, "stepWeights must not exceed maxWeight"},
	{"threshold zero", `{interval: 1m, threshold: 0}`, "should be greater than or equal to 1"},
	{"interval too short", `{interval: 3s}`, "interval must be at least 5s"},
	{"interval not a duration", `{interval: soon}`, "should match"},
	{"range inverted", `{interval: 1m, metrics: [{name: request-success-rate, thresholdRange: {min: 99, max: 90}}]}`, "thresholdRange.min must not exceed thresholdRange.max"},
	{"unknown metric without query", `{interval: 1m, metrics: [{name: error-budget}]}`, "a metric must name a built-in"},
	{"unknown webhook type", `{interval: 1m, webhooks: [{name: w, type: pre-flight, url: "http://x/"}]}`, "Unsupported value"},
	{"webhook url not http", `{interval: 1m, webhooks: [{name: w, url: "ftp://x/"}]}`, "should match"},
}

// validAnalyses are analyses the schema accepts, edge values included.
var validAnalyses = []string{
	`{interval: 5s, stepWeights: [1, 5, 25, 50], maxWeight: 50}`,
	`{interval: 1m30s, threshold: 1, maxWeight: 100, stepWeight: 100}`,
	`{interval: 1m, metrics: [{name: p95, query: "histogram_quantile(0.95, x)", thresholdRange: {max: 2}}]}`,
	`{interval: 1m, noData: Wait, webhooks: [{name: gate, type: confirm-promotion, url: "https://x/"}]}`,
}

func TestSchemaRejectsNonsense(t *testing.T) {
	c := apiClient(t)
	ensureNamespace(t, c, "schema")
	for _, tc := range badAnalyses {
		t.Run(tc.name, func(t *testing.T) {
			err := c.Create(context.Background(), canaryWith(t, "bad", "schema", tc.analysis))
			if err == nil {
				t.Fatalf("accepted analysis %s", tc.analysis)
			}
			if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want an Invalid error containing %q, got: %v", tc.want, err)
			}
		})
	}
}

func TestSchemaAcceptsValidVariants(t *testing.T) {
	c := apiClient(t)
	ensureNamespace(t, c, "schema-ok")
	for i, analysis := range validAnalyses {
		if err := c.Create(context.Background(), canaryWith(t, "ok-"+string(rune('a'+i)), "schema-ok", analysis)); err != nil {
			t.Errorf("rejected valid analysis %s: %v", analysis, err)
		}
	}
}

// TestPolicyDefaultsSchemaRejectsNonsense: a CanaryPolicy's defaults meet the rules of a Canary's
// analysis, so a policy cannot hand every Canary without one an analysis no Canary could ask for.
func TestPolicyDefaultsSchemaRejectsNonsense(t *testing.T) {
	c := apiClient(t)
	for _, tc := range badAnalyses {
		t.Run(tc.name, func(t *testing.T) {
			err := c.Create(context.Background(), policyWith(t, "bad", tc.analysis))
			if err == nil {
				t.Fatalf("accepted defaults %s", tc.analysis)
			}
			// The field path tells the admin it is the defaults that are wrong.
			if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "spec.defaults") {
				t.Fatalf("want an Invalid error about spec.defaults containing %q, got: %v", tc.want, err)
			}
		})
	}
}

func TestPolicyDefaultsSchemaAcceptsValidVariants(t *testing.T) {
	c := apiClient(t)
	for i, analysis := range validAnalyses {
		if err := c.Create(context.Background(), policyWith(t, "defaults-ok-"+string(rune('a'+i)), analysis)); err != nil {
			t.Errorf("rejected valid defaults %s: %v", analysis, err)
		}
	}
}

// policyWith is a CanaryPolicy with the given defaults (YAML) and bounds they stay within.
func policyWith(t *testing.T, name, defaults string) *unstructured.Unstructured {
	t.Helper()
	var d map[string]any
	if err := yaml.Unmarshal([]byte(defaults), &d); err != nil {
		t.Fatal(err)
	}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": v1alpha1.GroupVersion.String(),
		"kind":       "CanaryPolicy",
		"metadata":   map[string]any{"name": name},
		"spec": map[string]any{
			"namespaceSelector": map[string]any{"matchLabels": map[string]any{"team": "web"}},
			"defaults":          d,
			"bounds":            map[string]any{"maxWeight": int64(100), "minInterval": "5s"},
		},
	}}
}

func canaryWith(t *testing.T, name, namespace, analysis string) *unstructured.Unstructured {
	t.Helper()
	var a map[string]any
	if err := yaml.Unmarshal([]byte(analysis), &a); err != nil {
		t.Fatal(err)
	}
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": v1alpha1.GroupVersion.String(),
		"kind":       "Canary",
		"metadata":   map[string]any{"name": name, "namespace": namespace},
		"spec": map[string]any{
			"targetRef": map[string]any{"name": "app"},
			"analysis":  a,
		},
	}}
	return obj
}
