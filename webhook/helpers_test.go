package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"github.com/go-logr/logr"
	admissionv1 "k8s.io/api/admission/v1"
	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"canarygate.io/canarygate/api/v1alpha1"
)

const (
	testSA        = "system:serviceaccount:canarygate-system:canarygate"
	testOwnNS     = "canarygate-system"
	managedNS     = "shop"
	unmanagedNS   = "legacy"
	selectedNS    = "payments" // managed through a CanaryPolicy's namespaceSelector only
	adminGroup    = "platform-admins"
	fleetManager  = "fleet"
	labelManager  = "kubectl-label"
	fleetUsername = "system:serviceaccount:cattle-fleet-system:fleet-agent"
)

func TestMain(m *testing.M) {
	// controller-runtime complains, with a stack trace, about log lines sent before a logger is set.
	logf.SetLogger(logr.Discard())
	os.Exit(m.Run())
}

// fakeLookup is the in-memory Lookup of the unit tests.
type fakeLookup struct {
	namespaces map[string]*corev1.Namespace
	policies   []v1alpha1.CanaryPolicy
	canaries   map[string][]string // namespace/target -> Canary names
}

func (f *fakeLookup) Namespace(_ context.Context, name string) (*corev1.Namespace, error) {
	ns, ok := f.namespaces[name]
	if !ok {
		return nil, fmt.Errorf("%w: %s", errNamespaceUnknown, name)
	}
	return ns, nil
}

func (f *fakeLookup) Policies(context.Context) ([]v1alpha1.CanaryPolicy, error) {
	return f.policies, nil
}

func (f *fakeLookup) CanariesTargeting(_ context.Context, namespace, target string) ([]string, error) {
	return f.canaries[namespace+"/"+target], nil
}

func namespace(name string, labels, annotations map[string]string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels, Annotations: annotations}}
}

// newFakeLookup is a cluster with an opted-in namespace, one that did not opt in, one selected by a
// policy, and canarygate's own namespace (opted in, and still never managed).
func newFakeLookup(policies ...v1alpha1.CanaryPolicy) *fakeLookup {
	optIn := map[string]string{v1alpha1.OptInKey: v1alpha1.OptInEnabled}
	return &fakeLookup{
		namespaces: map[string]*corev1.Namespace{
			managedNS:   namespace(managedNS, optIn, optIn),
			unmanagedNS: namespace(unmanagedNS, nil, nil),
			selectedNS:  namespace(selectedNS, map[string]string{"team": "payments"}, nil),
			testOwnNS:   namespace(testOwnNS, optIn, optIn),
		},
		policies: policies,
		canaries: map[string][]string{},
	}
}

func newTestHandlers(l Lookup) *handlers {
	return newHandlers(l, Options{OwnNamespace: testOwnNS, ServiceAccount: testSA})
}

// fleetDeployment is the realistic Deployment of testdata: applied by Fleet through Helm, with
// managedFields and status, about 5 KB of JSON.
func fleetDeployment(t testing.TB) *appsv1.Deployment {
	t.Helper()
	raw, err := os.ReadFile("testdata/fleet-deployment.json")
	if err != nil {
		t.Fatal(err)
	}
	var d appsv1.Deployment
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatal(err)
	}
	return &d
}

func inNamespace(d *appsv1.Deployment, ns string) *appsv1.Deployment {
	d = d.DeepCopy()
	d.Namespace = ns
	return d
}

func withImage(d *appsv1.Deployment, image string) *appsv1.Deployment {
	d = d.DeepCopy()
	d.Spec.Template.Spec.Containers[0].Image = image
	return d
}

func withAnnotations(d *appsv1.Deployment, kv ...string) *appsv1.Deployment {
	d = d.DeepCopy()
	if d.Annotations == nil {
		d.Annotations = map[string]string{}
	}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == "-" {
			delete(d.Annotations, kv[i])
			continue
		}
		d.Annotations[kv[i]] = kv[i+1]
	}
	return d
}

// encode renders an object the way the API server does for admission: its typed JSON.
func encode(t testing.TB, obj any) []byte {
	t.Helper()
	if obj == nil {
		return nil
	}
	if raw, ok := obj.([]byte); ok {
		return raw
	}
	raw, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// request describes an AdmissionRequest compactly.
type request struct {
	op           admissionv1.Operation
	kind         metav1.GroupVersionKind
	resource     string
	subResource  string
	namespace    string
	name         string
	user         string
	groups       []string
	fieldManager string
	dryRun       bool
	obj, old     any // typed objects, or raw []byte
}

var (
	deploymentKind     = metav1.GroupVersionKind{Group: "apps", Version: "v1", Kind: "Deployment"}
	serviceKind        = metav1.GroupVersionKind{Version: "v1", Kind: "Service"}
	virtualServiceKind = metav1.GroupVersionKind{Group: "networking.istio.io", Version: "v1", Kind: "VirtualService"}
	canaryKind         = metav1.GroupVersionKind{Group: "canarygate.io", Version: "v1alpha1", Kind: "Canary"}
	policyKind         = metav1.GroupVersionKind{Group: "canarygate.io", Version: "v1alpha1", Kind: "CanaryPolicy"}
)

// review renders the request as the AdmissionReview JSON the API server posts.
func (r request) review(t testing.TB) []byte {
	t.Helper()
	kind := r.kind
	if kind.Kind == "" {
		kind = deploymentKind
	}
	user := r.user
	if user == "" {
		user = fleetUsername
	}
	ns := r.namespace
	if ns == "" {
		ns = managedNS
	}
	name := r.name
	if name == "" {
		name = "frontend"
	}
	optsKind := "UpdateOptions"
	switch r.op {
	case admissionv1.Create:
		optsKind = "CreateOptions"
	case admissionv1.Delete:
		optsKind = "DeleteOptions"
	}
	opts := encode(t, struct {
		Kind         string `json:"kind"`
		APIVersion   string `json:"apiVersion"`
		FieldManager string `json:"fieldManager,omitempty"`
	}{optsKind, "meta.k8s.io/v1", r.fieldManager})
	dryRun := r.dryRun
	ar := admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID:         "705ab4f5-6393-11e8-b7cc-42010a800002",
			Kind:        kind,
			Resource:    metav1.GroupVersionResource{Group: kind.Group, Version: kind.Version, Resource: r.resource},
			SubResource: r.subResource,
			Name:        name,
			Namespace:   ns,
			Operation:   r.op,
			UserInfo:    authenticationv1.UserInfo{Username: user, Groups: append([]string{"system:authenticated"}, r.groups...)},
			Object:      placeholder(encode(t, r.obj), objPlaceholder),
			OldObject:   placeholder(encode(t, r.old), oldPlaceholder),
			DryRun:      &dryRun,
			Options:     runtime.RawExtension{Raw: opts},
		},
	}
	// The objects are spliced in verbatim, so that fuzzed bytes reach the webhook as they are,
	// even when they make the review malformed.
	body := encode(t, ar)
	body = bytes.Replace(body, []byte(objPlaceholder), encode(t, r.obj), 1)
	return bytes.Replace(body, []byte(oldPlaceholder), encode(t, r.old), 1)
}

const (
	objPlaceholder = `"\u0000object"`
	oldPlaceholder = `"\u0000oldObject"`
)

func placeholder(raw []byte, p string) runtime.RawExtension {
	if len(raw) == 0 {
		return runtime.RawExtension{}
	}
	return runtime.RawExtension{Raw: []byte(p)}
}

// serve posts an AdmissionReview body through controller-runtime's webhook, as the API server does.
func serve(t testing.TB, h admission.HandlerFunc, body []byte) admissionv1.AdmissionResponse {
	t.Helper()
	// Panics must fail the test, not become 500 answers.
	wh := (&admission.Webhook{Handler: h}).WithRecoverPanic(false)
	rec := httptest.NewRecorder()
	httpReq := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
	httpReq.Header.Set("Content-Type", "application/json")
	wh.ServeHTTP(rec, httpReq)
	if rec.Code != http.StatusOK {
		t.Fatalf("HTTP %d: %s", rec.Code, rec.Body.String())
	}
	var out admissionv1.AdmissionReview
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
		t.Fatalf("decoding the AdmissionReview response: %v\n%s", err, rec.Body.String())
	}
	if out.Response == nil {
		t.Fatalf("AdmissionReview without response: %s", rec.Body.String())
	}
	return *out.Response
}

// patchRaw applies a response's patch to the admitted object's JSON as the API server does,
// failing the test on a patch that does not apply.
func patchRaw(t testing.TB, obj []byte, resp admissionv1.AdmissionResponse) []byte {
	t.Helper()
	if len(resp.Patch) == 0 {
		return obj
	}
	if resp.PatchType == nil || *resp.PatchType != admissionv1.PatchTypeJSONPatch {
		t.Fatalf("patch without JSONPatch type")
	}
	p, err := jsonpatch.DecodePatch(resp.Patch)
	if err != nil {
		t.Fatalf("invalid patch %s: %v", resp.Patch, err)
	}
	out, err := p.Apply(obj)
	if err != nil {
		t.Fatalf("applying patch %s: %v", resp.Patch, err)
	}
	return out
}

// applyPatch is patchRaw decoded into the Deployment the API server would store.
func applyPatch(t testing.TB, obj []byte, resp admissionv1.AdmissionResponse) *appsv1.Deployment {
	t.Helper()
	var d appsv1.Deployment
	if err := json.Unmarshal(patchRaw(t, obj, resp), &d); err != nil {
		t.Fatalf("patched object does not decode: %v", err)
	}
	return &d
}
