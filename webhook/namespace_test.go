package webhook

import (
	"encoding/json"
	"net/http"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"canarygate.io/canarygate/api/v1alpha1"
)

var namespaceKind = metav1.GroupVersionKind{Version: "v1", Kind: "Namespace"}

// A Namespace replaced with a manifest that lacks the opt-in label keeps it while the namespace
// stays managed, so that no Deployment write slips past the other webhooks' namespaceSelector.
func TestMutateNamespace(t *testing.T) {
	optInLabel := map[string]string{v1alpha1.OptInKey: v1alpha1.OptInEnabled}
	optInAnnotation := map[string]string{v1alpha1.OptInKey: v1alpha1.OptInEnabled}
	payments := v1alpha1.CanaryPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "payments"},
		Spec: v1alpha1.CanaryPolicySpec{
			NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "payments"}},
			BreakGlassGroups:  []string{adminGroup},
		},
	}
	labeled := func(name string, labels map[string]string) map[string]string {
		out := map[string]string{"kubernetes.io/metadata.name": name}
		for k, v := range labels {
			out[k] = v
		}
		return out
	}
	cases := []struct {
		name      string
		op        admissionv1.Operation
		kind      metav1.GroupVersionKind
		old, obj  any
		wantLabel bool // the stored Namespace carries the opt-in label
		patched   bool
		code      int32 // a refusal's code; 0 when allowed
	}{
		{
			name:      "a replace from Git that drops the label keeps it while the annotation opts in",
			op:        admissionv1.Update,
			old:       namespace("shop", labeled("shop", optInLabel), optInAnnotation),
			obj:       namespace("shop", map[string]string{"istio-injection": "enabled"}, optInAnnotation),
			wantLabel: true, patched: true,
		},
		{
			name:      "a replace without any labels keeps it",
			op:        admissionv1.Update,
			old:       namespace("shop", labeled("shop", optInLabel), optInAnnotation),
			obj:       namespace("shop", nil, optInAnnotation),
			wantLabel: true, patched: true,
		},
		{
			name:      "a namespace a policy selects keeps it",
			op:        admissionv1.Update,
			old:       namespace("pay", labeled("pay", map[string]string{"team": "payments", v1alpha1.OptInKey: v1alpha1.OptInEnabled}), nil),
			obj:       namespace("pay", map[string]string{"team": "payments"}, nil),
			wantLabel: true, patched: true,
		},
		{
			name: "opting out (annotation gone, no policy) lets the label go",
			op:   admissionv1.Update,
			old:  namespace("shop", labeled("shop", optInLabel), optInAnnotation),
			obj:  namespace("shop", nil, nil),
		},
		{
			name: "an excluded namespace is never kept managed",
			op:   admissionv1.Update,
			old:  namespace("kube-system", labeled("kube-system", optInLabel), optInAnnotation),
			obj:  namespace("kube-system", nil, optInAnnotation),
		},
		{
			name:      "an update that keeps the label passes untouched",
			op:        admissionv1.Update,
			old:       namespace("shop", labeled("shop", optInLabel), optInAnnotation),
			obj:       namespace("shop", labeled("shop", optInLabel), map[string]string{v1alpha1.OptInKey: v1alpha1.OptInEnabled, "owner": "team-shop"}),
			wantLabel: true,
		},
		{
			name: "a namespace without metadata labels or annotations stays unmanaged",
			op:   admissionv1.Update,
			old:  []byte(`{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"shop","labels":{"canarygate.io/canary":"enabled"}}}`),
			obj:  []byte(`{"apiVersion":"v1","kind":"Namespace"}`),
		},
		{
			name: "a Deployment is the wrong kind",
			op:   admissionv1.Update,
			kind: deploymentKind,
			old:  namespace("shop", nil, optInAnnotation),
			obj:  namespace("shop", nil, optInAnnotation),
			code: http.StatusBadRequest,
		},
		{
			name: "an object that is not JSON is refused",
			op:   admissionv1.Update,
			old:  namespace("shop", nil, optInAnnotation),
			obj:  []byte(`not json`),
			code: http.StatusBadRequest,
		},
	}
	h := newTestHandlers(newFakeLookup(payments))
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			kind := tc.kind
			if kind.Kind == "" {
				kind = namespaceKind
			}
			req := request{op: tc.op, kind: kind, resource: "namespaces", name: "shop", old: tc.old, obj: tc.obj}
			resp := serve(t, h.mutateNamespace, req.review(t))
			if tc.code != 0 {
				if resp.Allowed || resp.Result == nil || resp.Result.Code != tc.code {
					t.Fatalf("want a refusal with code %d, got %+v", tc.code, resp)
				}
				return
			}
			if !resp.Allowed {
				t.Fatalf("refused: %+v", resp.Result)
			}
			if got := len(resp.Patch) > 0; got != tc.patched {
				t.Fatalf("patched = %v, want %v (%s)", got, tc.patched, resp.Patch)
			}
			var stored corev1.Namespace
			if err := json.Unmarshal(patchRaw(t, encode(t, tc.obj), resp), &stored); err != nil {
				t.Fatal(err)
			}
			if got := stored.Labels[v1alpha1.OptInKey] == v1alpha1.OptInEnabled; got != tc.wantLabel {
				t.Errorf("opt-in label kept = %v, want %v; labels %v", got, tc.wantLabel, stored.Labels)
			}
		})
	}
}
