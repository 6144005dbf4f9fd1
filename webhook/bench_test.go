package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
)

// Benchmarks of the handlers on the realistic Fleet-applied Deployment of testdata (about 5 KB):
// the handler alone (the request already decoded by controller-runtime), and through ServeHTTP.

func benchRequest(b *testing.B, r request) admission.Request {
	b.Helper()
	var ar admissionv1.AdmissionReview
	if err := json.Unmarshal(r.review(b), &ar); err != nil {
		b.Fatal(err)
	}
	return admission.Request{AdmissionRequest: *ar.Request}
}

func benchHandler(b *testing.B, handler admission.HandlerFunc, req admission.Request, wantPatch bool) {
	b.Helper()
	ctx := context.Background()
	if resp := handler(ctx, req); !resp.Allowed || (len(resp.Patches) > 0) != wantPatch {
		b.Fatalf("unexpected answer: allowed %v, %d patches, %+v", resp.Allowed, len(resp.Patches), resp.Result)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(req.Object.Raw)))
	b.ResetTimer()
	for b.Loop() {
		handler(ctx, req)
	}
}

// A new Git revision arrives, seen for the first time (the memo emptied every round): both
// templates decoded and hashed, the template patched back, the pending revision recorded.
func BenchmarkMutateDivertCold(b *testing.B) {
	stable := fleetDeployment(b)
	h := newTestHandlers(newFakeLookup())
	req := benchRequest(b, request{op: admissionv1.Update, fieldManager: fleetManager, old: stable, obj: withImage(stable, newImage)})
	ctx := context.Background()
	b.ReportAllocs()
	b.SetBytes(int64(len(req.Object.Raw)))
	for b.Loop() {
		h.memo = newMemo()
		if resp := h.mutateDeployment(ctx, req); len(resp.Patches) == 0 {
			b.Fatal("not diverted")
		}
	}
}

// A new Git revision arrives while the stable template's revision is memoised, as it usually is:
// the webhook computed it when it admitted that template's promotion. Only the new template is
// decoded and hashed, and the template patch computed.
func BenchmarkMutateDivertColdNew(b *testing.B) {
	stable := fleetDeployment(b)
	h := newTestHandlers(newFakeLookup())
	req := benchRequest(b, request{op: admissionv1.Update, fieldManager: fleetManager, old: stable, obj: withImage(stable, newImage)})
	old, err := decodeView(req.OldObject.Raw, "old object")
	if err != nil {
		b.Fatal(err)
	}
	stableRev, err := revisionOf(old.Spec.Template, "old object")
	if err != nil {
		b.Fatal(err)
	}
	stableKey := string(old.Spec.Template)
	ctx := context.Background()
	b.ReportAllocs()
	b.SetBytes(int64(len(req.Object.Raw)))
	for b.Loop() {
		h.memo = newMemo()
		h.memo.revisions.Add(stableKey, stableRev)
		if resp := h.mutateDeployment(ctx, req); len(resp.Patches) == 0 {
			b.Fatal("not diverted")
		}
	}
}

// The same request again (the API server retrying, a reinvocation): the revisions and the template
// patch come from the memo.
func BenchmarkMutateDivert(b *testing.B) {
	stable := fleetDeployment(b)
	h := newTestHandlers(newFakeLookup())
	req := benchRequest(b, request{op: admissionv1.Update, fieldManager: fleetManager, old: stable, obj: withImage(stable, newImage)})
	benchHandler(b, h.mutateDeployment, req, true)
}

// The GitOps agent re-applies the same Git state while it is pending (drift correction).
func BenchmarkMutateReapply(b *testing.B) {
	stable := fleetDeployment(b)
	stored := pending(b, stable, withImage(stable, newImage))
	h := newTestHandlers(newFakeLookup())
	req := benchRequest(b, request{op: admissionv1.Update, fieldManager: fleetManager, old: stored, obj: withImage(stored, newImage)})
	benchHandler(b, h.mutateDeployment, req, true)
}

// An update that leaves the template alone (a label edit): the common case.
func BenchmarkMutateUnrelated(b *testing.B) {
	stable := fleetDeployment(b)
	h := newTestHandlers(newFakeLookup())
	req := benchRequest(b, request{op: admissionv1.Update, fieldManager: labelManager, old: stable, obj: withAnnotations(stable, "team", "shop")})
	benchHandler(b, h.mutateDeployment, req, false)
}

// The validator sees the diverted object: the new pending revision is verified (cold).
func BenchmarkValidateDivertedCold(b *testing.B) {
	stable := fleetDeployment(b)
	stored := pending(b, stable, withImage(stable, newImage))
	h := newTestHandlers(newFakeLookup())
	req := benchRequest(b, request{op: admissionv1.Update, fieldManager: fleetManager, old: stable, obj: stored})
	ctx := context.Background()
	b.ReportAllocs()
	b.SetBytes(int64(len(req.Object.Raw)))
	for b.Loop() {
		h.memo = newMemo()
		if resp := h.validateDeployment(ctx, req); !resp.Allowed {
			b.Fatal("refused")
		}
	}
}

// The validator sees the diverted object right after the mutator: its revision is in the memo.
func BenchmarkValidateDiverted(b *testing.B) {
	stable := fleetDeployment(b)
	stored := pending(b, stable, withImage(stable, newImage))
	h := newTestHandlers(newFakeLookup())
	req := benchRequest(b, request{op: admissionv1.Update, fieldManager: fleetManager, old: stable, obj: stored})
	benchHandler(b, h.validateDeployment, req, false)
}

// The validator sees a re-applied state: nothing changed.
func BenchmarkValidateUnchanged(b *testing.B) {
	stable := fleetDeployment(b)
	stored := pending(b, stable, withImage(stable, newImage))
	h := newTestHandlers(newFakeLookup())
	req := benchRequest(b, request{op: admissionv1.Update, fieldManager: fleetManager, old: stored, obj: stored})
	benchHandler(b, h.validateDeployment, req, false)
}

// The whole HTTP round: AdmissionReview decoding, the handler, the response with its patch.
func BenchmarkMutateDivertServeHTTP(b *testing.B) {
	stable := fleetDeployment(b)
	h := newTestHandlers(newFakeLookup())
	body := request{op: admissionv1.Update, fieldManager: fleetManager, old: stable, obj: withImage(stable, newImage)}.review(b)
	wh := &admission.Webhook{Handler: admission.HandlerFunc(h.mutateDeployment)}
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodPost, "/mutate-deployments", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		wh.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatal(rec.Code)
		}
	}
}
