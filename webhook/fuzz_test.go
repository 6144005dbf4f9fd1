package webhook

import (
	"net/http"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"canarygate.io/canarygate/api/v1alpha1"
)

// Seeds live in testdata/fuzz/<FuzzName>/ (realistic Fleet-applied Deployments, Services,
// Canaries and broken variants); every crash ever found is added there as a regression case.

func FuzzMutate(f *testing.F) {
	stable := fleetDeployment(f)
	f.Add("UPDATE", fleetUsername, fleetManager, encode(f, stable), encode(f, withImage(stable, newImage)))
	h := newTestHandlers(newFakeLookup(adminPolicy))
	f.Fuzz(func(t *testing.T, op, user, manager string, old, obj []byte) {
		req := request{op: admissionv1.Operation(op), user: user, fieldManager: manager, old: old, obj: obj}
		resp := serve(t, h.mutateDeployment, req.review(t))
		if resp.Result == nil {
			t.Fatal("response without result")
		}
		if !resp.Allowed {
			if resp.Result.Code < 400 || resp.Result.Message == "" {
				t.Fatalf("refusal without a 4xx/5xx code and a message: %+v", resp.Result)
			}
			return
		}
		result := obj
		if len(resp.Patch) > 0 {
			result = patchRaw(t, obj, resp)
		}
		if op != string(admissionv1.Update) {
			return
		}
		// Never a silent allow of something that should be held: what would be stored has the old
		// template's revision, unless an exception applies.
		stored, err := decodeView(result, "object")
		if err != nil {
			t.Fatalf("allowed an object that does not decode: %v", err)
		}
		if stored.generatedFor() || user == testSA || hasKey(stored.Metadata.Annotations, v1alpha1.BreakGlassAnnotation) ||
			stored.Metadata.Annotations[v1alpha1.OptInKey] == v1alpha1.OptOutDisabled {
			return
		}
		oldView, err := decodeView(old, "old object")
		if err != nil {
			t.Fatalf("allowed an UPDATE whose old object does not decode: %v", err)
		}
		same, _, err := h.memo.sameTemplate(oldView.Spec.Template, stored.Spec.Template)
		if err != nil || !same {
			t.Fatalf("allowed a template change to be stored (err %v)", err)
		}
		if len(resp.Patch) == 0 || h.gitOps[manager] {
			return
		}
		// The mutation is a fixed point: admitting its own result changes nothing more.
		again := serve(t, h.mutateDeployment, request{op: admissionv1.Update, user: user, fieldManager: manager, old: old, obj: result}.review(t))
		if !again.Allowed || len(again.Patch) > 0 {
			t.Fatalf("second pass: allowed %v, patch %s", again.Allowed, again.Patch)
		}
	})
}

func FuzzValidate(f *testing.F) {
	stable := fleetDeployment(f)
	f.Add("deployments", "apps/v1/Deployment", "UPDATE", "dev", encode(f, stable), encode(f, withImage(stable, newImage)))
	h := newTestHandlers(newFakeLookup(adminPolicy))
	f.Fuzz(func(t *testing.T, path, gvk, op, user string, old, obj []byte) {
		handler := h.validateDeployment
		switch path {
		case "generated":
			handler = h.validateGenerated
		case "canarygate":
			handler = h.validateCanarygate
		}
		var kind metav1.GroupVersionKind
		if parts := strings.Split(gvk, "/"); len(parts) == 3 {
			kind = metav1.GroupVersionKind{Group: parts[0], Version: parts[1], Kind: parts[2]}
		}
		req := request{op: admissionv1.Operation(op), kind: kind, user: user, groups: []string{user}, old: old, obj: obj}
		resp := serve(t, handler, req.review(t))
		if resp.Result == nil {
			t.Fatal("response without result")
		}
		if len(resp.Patch) > 0 {
			t.Fatalf("a validator patched: %s", resp.Patch)
		}
		if !resp.Allowed && (resp.Result.Code < http.StatusBadRequest || resp.Result.Message == "") {
			t.Fatalf("refusal without a 4xx/5xx code and a message: %+v", resp.Result)
		}
	})
}
