package webhook

import (
	"bytes"
	"encoding/json"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"canarygate.io/canarygate/api/v1alpha1"
	"canarygate.io/canarygate/revision"
)

const (
	stableImage = "registry.example.com/shop/frontend:2.14.0"
	newImage    = "registry.example.com/shop/frontend:2.15.0"
	newerImage  = "registry.example.com/shop/frontend:2.16.0"
)

func hashOf(t testing.TB, d *appsv1.Deployment) string {
	t.Helper()
	h, err := revision.Hash(&d.Spec.Template)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// recordedOf is the desired-template the mutator records for d's template: its typed JSON.
func recordedOf(t testing.TB, d *appsv1.Deployment) string {
	t.Helper()
	raw, err := json.Marshal(&d.Spec.Template)
	if err != nil {
		t.Fatal(err)
	}
	return string(raw)
}

// pending is what the API server stores after the mutator diverted gitState over stable: the
// stable template with gitState's recorded as the pending revision.
func pending(t testing.TB, stable, gitState *appsv1.Deployment) *appsv1.Deployment {
	t.Helper()
	d := gitState.DeepCopy()
	d.Spec.Template = *stable.Spec.Template.DeepCopy()
	return withAnnotations(d,
		v1alpha1.DesiredRevisionAnnotation, hashOf(t, gitState),
		v1alpha1.DesiredTemplateAnnotation, recordedOf(t, gitState))
}

func sameJSON(t testing.TB, got, want *appsv1.Deployment) {
	t.Helper()
	g, w := encode(t, got), encode(t, want)
	if !bytes.Equal(g, w) {
		t.Errorf("stored object differs:\n got %s\nwant %s", g, w)
	}
}

func TestMutateDeployment(t *testing.T) {
	stable := fleetDeployment(t)
	gitV2 := withImage(stable, newImage)
	stored := pending(t, stable, gitV2)
	garbage := withAnnotations(stable, v1alpha1.DesiredRevisionAnnotation, "0123456789abcdef",
		v1alpha1.DesiredTemplateAnnotation, `{"spec":{"containers":"no"}}`)
	generated := withAnnotations(withImage(stable, newImage), "objectset.rio.cattle.io/applied", "H4sI…")
	generated.Name = "frontend-canary"
	generated.Labels[v1alpha1.GeneratedForLabel] = "frontend"
	generated.Spec.Template.Labels["objectset.rio.cattle.io/hash"] = "4b6a1f9e"
	generated.Spec.Template.Annotations["meta.helm.sh/release-name"] = "shop-frontend"
	noOptOut := v1alpha1.CanaryPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "strict"},
		Spec: v1alpha1.CanaryPolicySpec{
			NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "payments"}},
			Bounds:            v1alpha1.PolicyBounds{AllowOptOut: ptr.To(false)},
		},
	}

	type want struct {
		allowed bool
		code    int32
		patched bool
		// check inspects the object the API server would store.
		check func(t *testing.T, got *appsv1.Deployment)
	}
	divertedTo := func(gitState *appsv1.Deployment) func(*testing.T, *appsv1.Deployment) {
		return func(t *testing.T, got *appsv1.Deployment) {
			if !equality.Semantic.DeepEqual(got.Spec.Template, stable.Spec.Template) {
				t.Errorf("running template changed: image %s", got.Spec.Template.Spec.Containers[0].Image)
			}
			if got.Annotations[v1alpha1.DesiredRevisionAnnotation] != hashOf(t, gitState) {
				t.Errorf("desired-revision %q, want %q", got.Annotations[v1alpha1.DesiredRevisionAnnotation], hashOf(t, gitState))
			}
			tmpl, err := revision.Decode(got.Annotations[v1alpha1.DesiredTemplateAnnotation])
			if err != nil {
				t.Fatal(err)
			}
			// Recorded losslessly: empty volume sources (emptyDir: {}) included.
			if !reflect.DeepEqual(*tmpl, gitState.Spec.Template) {
				t.Errorf("desired-template is not the Git template: %s", got.Annotations[v1alpha1.DesiredTemplateAnnotation])
			}
		}
	}
	storedExactly := func(want *appsv1.Deployment) func(*testing.T, *appsv1.Deployment) {
		return func(t *testing.T, got *appsv1.Deployment) { sameJSON(t, got, want) }
	}

	cases := []struct {
		name   string
		req    request
		lookup *fakeLookup
		want   want
	}{
		{
			name: "image update by server-side apply is diverted",
			req:  request{op: admissionv1.Update, fieldManager: fleetManager, old: stable, obj: gitV2},
			want: want{allowed: true, patched: true, check: divertedTo(gitV2)},
		},
		{
			name: "every other change of the update is kept",
			req: request{op: admissionv1.Update, fieldManager: fleetManager, old: stable, obj: func() *appsv1.Deployment {
				d := withAnnotations(withImage(stable, newImage), "team", "shop")
				d.Spec.Replicas = ptr.To[int32](5)
				d.Labels["app.kubernetes.io/version"] = "2.15.0"
				return d
			}()},
			want: want{allowed: true, patched: true, check: func(t *testing.T, got *appsv1.Deployment) {
				if *got.Spec.Replicas != 5 || got.Labels["app.kubernetes.io/version"] != "2.15.0" || got.Annotations["team"] != "shop" {
					t.Errorf("non-template changes lost: replicas %d labels %v", *got.Spec.Replicas, got.Labels)
				}
				if got.Spec.Template.Spec.Containers[0].Image != stableImage {
					t.Errorf("template not restored")
				}
			}},
		},
		{
			name: "re-applying the same Git state by server-side apply stores nothing new",
			req:  request{op: admissionv1.Update, fieldManager: fleetManager, old: stored, obj: withImage(stored, newImage)},
			want: want{allowed: true, patched: true, check: storedExactly(stored)},
		},
		{
			name: "a Helm-rollback-style PUT of the Git manifest stores nothing new",
			req: request{op: admissionv1.Update, fieldManager: "helm", old: stored, obj: withAnnotations(gitV2,
				v1alpha1.DesiredRevisionAnnotation, "-", v1alpha1.DesiredTemplateAnnotation, "-")},
			want: want{allowed: true, patched: true, check: storedExactly(stored)},
		},
		{
			// The API server has already recorded the PUT's manager in managedFields when the
			// mutator sees it; nothing else changes once diverted, so the stored managedFields are
			// put back and the API server has nothing to write.
			name: "a plain-update drift correction recorded in managedFields stores nothing new",
			req: request{op: admissionv1.Update, fieldManager: fleetManager, old: stored,
				obj: withManager(withAnnotations(gitV2, v1alpha1.DesiredRevisionAnnotation, "-", v1alpha1.DesiredTemplateAnnotation, "-"), fleetManager)},
			want: want{allowed: true, patched: true, check: storedExactly(stored)},
		},
		{
			// A real change besides the template keeps the new managedFields: the API server
			// must record who made it.
			name: "a plain update that also changes replicas keeps its managedFields entry",
			req: request{op: admissionv1.Update, fieldManager: fleetManager, old: stored,
				obj: withManager(withReplicas(gitV2, 5), fleetManager)},
			want: want{allowed: true, patched: true, check: func(t *testing.T, got *appsv1.Deployment) {
				if len(got.ManagedFields) != len(stored.ManagedFields)+1 || *got.Spec.Replicas != 5 {
					t.Errorf("managedFields %d entries (stored %d), replicas %d", len(got.ManagedFields), len(stored.ManagedFields), *got.Spec.Replicas)
				}
			}},
		},
		{
			name: "a newer Git revision replaces the pending one",
			req:  request{op: admissionv1.Update, fieldManager: fleetManager, old: stored, obj: withImage(stored, newerImage)},
			want: want{allowed: true, patched: true, check: divertedTo(withImage(stored, newerImage))},
		},
		{
			name: "a Git revert by the GitOps agent clears the pending revision",
			req:  request{op: admissionv1.Update, fieldManager: fleetManager, old: stored, obj: stored},
			want: want{allowed: true, patched: true, check: func(t *testing.T, got *appsv1.Deployment) {
				if hasKey(got.Annotations, v1alpha1.DesiredRevisionAnnotation) || hasKey(got.Annotations, v1alpha1.DesiredTemplateAnnotation) {
					t.Errorf("pending revision not cleared: %v", got.Annotations)
				}
				sameJSON(t, got, withAnnotations(stored, v1alpha1.DesiredRevisionAnnotation, "-", v1alpha1.DesiredTemplateAnnotation, "-"))
			}},
		},
		{
			name: "an unrelated update keeps the pending revision",
			req: request{op: admissionv1.Update, fieldManager: labelManager, user: "alice", old: stored, obj: func() *appsv1.Deployment {
				d := stored.DeepCopy()
				d.Labels["tier"] = "web"
				return d
			}()},
			want: want{allowed: true},
		},
		{
			name: "an update that changes nothing passes",
			req:  request{op: admissionv1.Update, fieldManager: fleetManager, old: stable, obj: stable},
			want: want{allowed: true},
		},
		{
			name: "canarygate's promotion passes unchanged",
			req: request{op: admissionv1.Update, user: testSA, old: stored, obj: withAnnotations(gitV2,
				v1alpha1.PromotedRevisionAnnotation, hashOf(t, gitV2),
				v1alpha1.DesiredRevisionAnnotation, "-", v1alpha1.DesiredTemplateAnnotation, "-")},
			want: want{allowed: true},
		},
		{
			name: "a promotion annotation from anyone else is diverted",
			req:  request{op: admissionv1.Update, user: "mallory", old: stable, obj: withAnnotations(gitV2, v1alpha1.PromotedRevisionAnnotation, hashOf(t, gitV2))},
			want: want{allowed: true, patched: true, check: divertedTo(gitV2)},
		},
		{
			name: "canarygate's update with a stale promoted revision is diverted",
			req:  request{op: admissionv1.Update, user: testSA, old: stable, obj: withAnnotations(gitV2, v1alpha1.PromotedRevisionAnnotation, "0000000000000000")},
			want: want{allowed: true, patched: true, check: divertedTo(gitV2)},
		},
		{
			name: "break-glass passes unchanged",
			req:  request{op: admissionv1.Update, old: stable, obj: withAnnotations(gitV2, v1alpha1.BreakGlassAnnotation, "INC-1234")},
			want: want{allowed: true},
		},
		{
			name: "an opted-out Deployment passes unchanged",
			req:  request{op: admissionv1.Update, old: stable, obj: withAnnotations(gitV2, v1alpha1.OptInKey, v1alpha1.OptOutDisabled)},
			want: want{allowed: true},
		},
		{
			name:   "the opt-out is ignored where the policy forbids it",
			lookup: newFakeLookup(noOptOut),
			req: request{op: admissionv1.Update, namespace: selectedNS, old: inNamespace(stable, selectedNS),
				obj: withAnnotations(inNamespace(gitV2, selectedNS), v1alpha1.OptInKey, v1alpha1.OptOutDisabled)},
			want: want{allowed: true, patched: true},
		},
		{
			name:   "a namespace selected by a policy is managed",
			lookup: newFakeLookup(noOptOut),
			req:    request{op: admissionv1.Update, namespace: selectedNS, old: inNamespace(stable, selectedNS), obj: inNamespace(gitV2, selectedNS)},
			want:   want{allowed: true, patched: true},
		},
		{
			name: "a namespace that did not opt in passes",
			req:  request{op: admissionv1.Update, namespace: unmanagedNS, old: inNamespace(stable, unmanagedNS), obj: inNamespace(gitV2, unmanagedNS)},
			want: want{allowed: true},
		},
		{
			name: "canarygate's own namespace is never managed",
			req:  request{op: admissionv1.Update, namespace: testOwnNS, old: inNamespace(stable, testOwnNS), obj: inNamespace(gitV2, testOwnNS)},
			want: want{allowed: true},
		},
		{
			name: "a namespace missing from the cache is not allowed by default",
			req:  request{op: admissionv1.Update, namespace: "fresh", old: inNamespace(stable, "fresh"), obj: inNamespace(gitV2, "fresh")},
			want: want{code: http.StatusServiceUnavailable},
		},
		{
			name: "CREATE passes: the first version is the stable one",
			req:  request{op: admissionv1.Create, obj: gitV2},
			want: want{allowed: true},
		},
		{
			name: "DELETE passes",
			req:  request{op: admissionv1.Delete, old: stable},
			want: want{allowed: true},
		},
		{
			name: "the scale subresource passes untouched",
			req:  request{op: admissionv1.Update, subResource: "scale", obj: []byte(`{"kind":"Scale","apiVersion":"autoscaling/v1","spec":{"replicas":9}}`), old: []byte(`{"kind":"Scale"}`)},
			want: want{allowed: true},
		},
		{
			name: "desired-* annotations set to garbage by the request are refused",
			req:  request{op: admissionv1.Update, user: "alice", old: stable, obj: garbage},
			want: want{code: http.StatusBadRequest},
		},
		{
			name: "a desired-revision without its template is refused",
			req:  request{op: admissionv1.Update, user: "alice", old: stable, obj: withAnnotations(stable, v1alpha1.DesiredRevisionAnnotation, hashOf(t, gitV2))},
			want: want{code: http.StatusBadRequest},
		},
		{
			name: "garbage desired-* annotations are rewritten when the template changes too",
			req:  request{op: admissionv1.Update, old: stable, obj: withImage(garbage, newImage)},
			want: want{allowed: true, patched: true, check: divertedTo(gitV2)},
		},
		{
			name: "ownership metadata is stripped from a generated Deployment",
			req:  request{op: admissionv1.Create, user: testSA, name: generated.Name, obj: generated},
			want: want{allowed: true, patched: true, check: func(t *testing.T, got *appsv1.Deployment) {
				for _, m := range []map[string]string{got.Labels, got.Annotations, got.Spec.Template.Labels, got.Spec.Template.Annotations} {
					if keys := revision.OwnershipKeysIn(revision.DefaultOwnershipKeys, m); len(keys) > 0 {
						t.Errorf("ownership keys left: %v", keys)
					}
				}
				if got.Labels[v1alpha1.GeneratedForLabel] != "frontend" || got.Labels["app.kubernetes.io/name"] != "frontend" ||
					got.Spec.Template.Annotations["prometheus.io/scrape"] != "true" {
					t.Errorf("other metadata lost: %v %v", got.Labels, got.Spec.Template.Annotations)
				}
				if got.Spec.Template.Spec.Containers[0].Image != newImage {
					t.Errorf("a generated Deployment's template must not be diverted")
				}
			}},
		},
		{
			name: "a generated Deployment's update is stripped, not diverted",
			req:  request{op: admissionv1.Update, user: testSA, name: generated.Name, old: withImage(generated, stableImage), obj: generated},
			want: want{allowed: true, patched: true, check: func(t *testing.T, got *appsv1.Deployment) {
				if got.Spec.Template.Spec.Containers[0].Image != newImage || got.Labels["objectset.rio.cattle.io/hash"] != "" {
					t.Errorf("generated update mishandled")
				}
			}},
		},
		{
			name: "a wrong kind is a bad request",
			req:  request{op: admissionv1.Update, kind: serviceKind, old: stable, obj: gitV2},
			want: want{code: http.StatusBadRequest},
		},
		{
			name: "UPDATE without the old object is a bad request",
			req:  request{op: admissionv1.Update, obj: gitV2},
			want: want{code: http.StatusBadRequest},
		},
		{
			name: "an undecodable object is a bad request",
			req:  request{op: admissionv1.Update, old: stable, obj: []byte(`{"metadata":{"annotations":{"a":1}}}`)},
			want: want{code: http.StatusBadRequest},
		},
		{
			name: "an undecodable template is a bad request, not an allow",
			req:  request{op: admissionv1.Update, old: stable, obj: []byte(`{"metadata":{"name":"frontend"},"spec":{"template":{"spec":{"containers":{}}}}}`)},
			want: want{code: http.StatusBadRequest},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			l := tc.lookup
			if l == nil {
				l = newFakeLookup()
			}
			h := newTestHandlers(l)
			resp := serve(t, h.mutateDeployment, tc.req.review(t))
			checkResponse(t, resp, tc.want.allowed, tc.want.code, tc.want.patched)
			if tc.want.check != nil && resp.Allowed {
				tc.want.check(t, applyPatch(t, encode(t, tc.req.obj), resp))
			}
			// Dry-run gets exactly the same answer.
			dry := tc.req
			dry.dryRun = true
			dryResp := serve(t, h.mutateDeployment, dry.review(t))
			if resp.Allowed != dryResp.Allowed || !bytes.Equal(applyPatchRaw(t, tc.req.obj, resp), applyPatchRaw(t, tc.req.obj, dryResp)) {
				t.Errorf("dry-run answered differently")
			}
		})
	}
}

func hasKey(m map[string]string, k string) bool { _, ok := m[k]; return ok }

func checkResponse(t *testing.T, resp admissionv1.AdmissionResponse, allowed bool, code int32, patched bool) {
	t.Helper()
	if resp.Allowed != allowed {
		t.Fatalf("allowed = %v, want %v (%+v)", resp.Allowed, allowed, resp.Result)
	}
	if code != 0 && (resp.Result == nil || resp.Result.Code != code) {
		t.Fatalf("result %+v, want code %d", resp.Result, code)
	}
	if !allowed && (resp.Result == nil || resp.Result.Message == "") {
		t.Fatalf("a refusal without a message")
	}
	if got := len(resp.Patch) > 0; got != patched {
		t.Fatalf("patched = %v, want %v: %s", got, patched, resp.Patch)
	}
}

// applyPatchRaw is applyPatch's result as bytes, or nil for a refusal.
func applyPatchRaw(t *testing.T, obj any, resp admissionv1.AdmissionResponse) []byte {
	t.Helper()
	if !resp.Allowed || obj == nil {
		return nil
	}
	raw := encode(t, obj)
	if len(resp.Patch) == 0 {
		return raw
	}
	return encode(t, applyPatch(t, raw, resp))
}

// The mutated object is a deterministic function of the request: the pending template is the
// typed template's JSON, whatever order the request's template used.
func TestDivertIsDeterministic(t *testing.T) {
	stable := fleetDeployment(t)
	gitV2 := withImage(stable, newImage)
	h := newTestHandlers(newFakeLookup())
	req := request{op: admissionv1.Update, fieldManager: fleetManager, old: stable, obj: gitV2}
	want := applyPatchRaw(t, gitV2, serve(t, h.mutateDeployment, req.review(t)))

	// The same object with its template's keys in reverse order and extra whitespace.
	var generic map[string]any
	if err := json.Unmarshal(encode(t, gitV2), &generic); err != nil {
		t.Fatal(err)
	}
	shuffled, err := json.MarshalIndent(generic, "", "   ")
	if err != nil {
		t.Fatal(err)
	}
	req.obj = shuffled
	for range 5 {
		if got := applyPatchRaw(t, shuffled, serve(t, h.mutateDeployment, req.review(t))); !bytes.Equal(got, want) {
			t.Fatalf("mutated object depends on the request's encoding:\n got %s\nwant %s", got, want)
		}
	}
}

// The patch touches the template's changed fields and the two annotations only.
func TestDivertPatchIsMinimal(t *testing.T) {
	stable := fleetDeployment(t)
	h := newTestHandlers(newFakeLookup())
	resp := serve(t, h.mutateDeployment, request{op: admissionv1.Update, old: stable, obj: withImage(stable, newImage)}.review(t))
	var ops []struct{ Op, Path string }
	if err := json.Unmarshal(resp.Patch, &ops); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"/spec/template/spec/containers/0/image":                "replace",
		"/metadata/annotations/canarygate.io~1desired-revision": "add",
		"/metadata/annotations/canarygate.io~1desired-template": "add",
	}
	if len(ops) != len(want) {
		t.Fatalf("patch %s, want %v", resp.Patch, want)
	}
	for _, op := range ops {
		if want[op.Path] != op.Op {
			t.Errorf("unexpected operation %s %s", op.Op, op.Path)
		}
	}
	if len(resp.Warnings) != 1 || !strings.Contains(resp.Warnings[0], hashOf(t, withImage(stable, newImage))) {
		t.Errorf("warnings %v should name the held revision", resp.Warnings)
	}
}

// A Deployment without any annotation gets the whole annotations map in one operation.
func TestDivertWithoutAnnotations(t *testing.T) {
	stable := fleetDeployment(t)
	stable.Annotations = nil
	h := newTestHandlers(newFakeLookup())
	req := request{op: admissionv1.Update, old: stable, obj: withImage(stable, newImage)}
	resp := serve(t, h.mutateDeployment, req.review(t))
	got := applyPatch(t, encode(t, req.obj), resp)
	if got.Annotations[v1alpha1.DesiredRevisionAnnotation] != hashOf(t, withImage(stable, newImage)) {
		t.Fatalf("annotations %v", got.Annotations)
	}
}

// Bodies that are not AdmissionReviews never reach the handler and get a 400 answer.
func TestMalformedReview(t *testing.T) {
	h := newTestHandlers(newFakeLookup())
	for _, body := range []string{`{`, `[]`, `{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{"object":5}}`} {
		resp := serve(t, h.mutateDeployment, []byte(body))
		if resp.Allowed || resp.Result == nil || resp.Result.Code != http.StatusBadRequest {
			t.Errorf("%s: %+v", body, resp)
		}
	}
}

// withManager is d as the API server hands it to admission after recording a plain update by
// manager: one more managedFields entry.
func withManager(d *appsv1.Deployment, manager string) *appsv1.Deployment {
	d = d.DeepCopy()
	now := metav1.NewTime(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	d.ManagedFields = append(d.ManagedFields, metav1.ManagedFieldsEntry{
		Manager: manager, Operation: metav1.ManagedFieldsOperationUpdate, APIVersion: "apps/v1", Time: &now,
		FieldsType: "FieldsV1", FieldsV1: metav1.NewFieldsV1(`{"f:spec":{"f:template":{"f:spec":{"f:containers":{}}}}}`),
	})
	return d
}

func withReplicas(d *appsv1.Deployment, n int32) *appsv1.Deployment {
	d = d.DeepCopy()
	d.Spec.Replicas = &n
	return d
}
