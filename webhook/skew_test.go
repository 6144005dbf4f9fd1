package webhook

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	appsv1 "k8s.io/api/apps/v1"

	"canarygate.io/canarygate/api/v1alpha1"
)

// withFutureField returns d as JSON with a pod-spec field that canarygate's Kubernetes library
// does not know, as an API server newer than the library would send it.
func withFutureField(t *testing.T, d *appsv1.Deployment, value any) []byte {
	t.Helper()
	var obj map[string]any
	if err := json.Unmarshal(encode(t, d), &obj); err != nil {
		t.Fatal(err)
	}
	podSpec := obj["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)
	podSpec["futurePodField"] = value
	return encode(t, obj)
}

// reordered re-encodes a JSON object with its keys in another order: the same template, other
// bytes.
func reordered(t *testing.T, raw []byte) []byte {
	t.Helper()
	var obj map[string]any
	if err := json.Unmarshal(raw, &obj); err != nil {
		t.Fatal(err)
	}
	tmpl := obj["spec"].(map[string]any)["template"].(map[string]any)
	out, err := json.Marshal(map[string]any{"metadata": obj["metadata"], "apiVersion": obj["apiVersion"], "kind": obj["kind"],
		"spec": map[string]any{"template": map[string]any{"spec": tmpl["spec"], "metadata": tmpl["metadata"]},
			"replicas": obj["spec"].(map[string]any)["replicas"], "selector": obj["spec"].(map[string]any)["selector"]}})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// A change in a pod-template field canarygate's library does not know can be neither held (the
// recorded template would lose it) nor told apart from no change: both webhooks refuse it instead
// of letting it roll out unmeasured, and break-glass still lets an admin through.
func TestTemplateFieldsUnknownToCanarygate(t *testing.T) {
	stable := fleetDeployment(t)
	gitV2 := withImage(stable, newImage)
	h := newTestHandlers(newFakeLookup(adminPolicy))
	const field = "spec.template.spec.futurePodField"

	cases := []struct {
		name     string
		req      request
		allowed  bool
		validate bool // the validator allows it too
	}{
		{
			name: "an unknown field added, nothing else changed",
			req:  request{op: admissionv1.Update, fieldManager: fleetManager, old: stable, obj: withFutureField(t, stable, "on")},
		},
		{
			name: "an unknown field's value changed",
			req: request{op: admissionv1.Update, fieldManager: fleetManager,
				old: withFutureField(t, stable, "on"), obj: withFutureField(t, stable, "off")},
		},
		{
			name: "an unknown field removed",
			req:  request{op: admissionv1.Update, fieldManager: fleetManager, old: withFutureField(t, stable, "on"), obj: stable},
		},
		{
			name: "a new image next to an unchanged unknown field",
			req: request{op: admissionv1.Update, fieldManager: fleetManager,
				old: withFutureField(t, stable, "on"), obj: withFutureField(t, gitV2, "on")},
		},
		{
			name: "the same template with an unknown field, in other bytes, is no change",
			req: request{op: admissionv1.Update, fieldManager: fleetManager,
				old: withFutureField(t, stable, "on"), obj: reordered(t, withFutureField(t, withReplicas(stable, 3), "on"))},
			allowed: true, validate: true,
		},
		{
			name: "break-glass by an admin lets it through",
			req: request{op: admissionv1.Update, user: "ops", groups: []string{adminGroup}, old: stable,
				obj: withFutureField(t, withAnnotations(gitV2, v1alpha1.BreakGlassAnnotation, "INC-7"), "on")},
			allowed: true, validate: true,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			body := tc.req.review(t)
			for _, hc := range []struct {
				name    string
				handler func(t testing.TB, body []byte) admissionv1.AdmissionResponse
				allowed bool
			}{
				{"mutate", func(t testing.TB, b []byte) admissionv1.AdmissionResponse { return serve(t, h.mutateDeployment, b) }, tc.allowed},
				{"validate", func(t testing.TB, b []byte) admissionv1.AdmissionResponse { return serve(t, h.validateDeployment, b) }, tc.validate},
			} {
				resp := hc.handler(t, body)
				if resp.Allowed != hc.allowed {
					t.Fatalf("%s: allowed %v, want %v: %+v", hc.name, resp.Allowed, hc.allowed, resp.Result)
				}
				if len(resp.Patch) > 0 {
					t.Errorf("%s: patched: %s", hc.name, resp.Patch)
				}
				if !hc.allowed && (resp.Result.Code != http.StatusForbidden || !strings.Contains(resp.Result.Message, field) ||
					!strings.Contains(resp.Result.Message, "does not know")) {
					t.Errorf("%s: refusal %d %q should name the field and why", hc.name, resp.Result.Code, resp.Result.Message)
				}
			}
		})
	}
}
