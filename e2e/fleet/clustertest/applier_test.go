// Package clustertest runs the Fleet-style applier against a real kube-apiserver (the test bed);
// the pure parts are unit-tested in package fleet, which needs no control plane.
package clustertest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"

	"canarygate.io/canarygate/e2e/fleet"
	"canarygate.io/canarygate/e2e/testbed"
)

func TestMain(m *testing.M) { os.Exit(testbed.Run(m, testbed.Options{NoPrometheus: true})) }

type harness struct {
	applier *fleet.Applier
	kube    kubernetes.Interface
	dyn     dynamic.Interface
}

func setup(t *testing.T) (context.Context, harness) {
	t.Helper()
	env := testbed.Shared()
	a, err := fleet.NewApplier(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := env.Clientset()
	if err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx, harness{applier: a, kube: cs, dyn: dyn}
}

// appBundle loads appDir's bundle.
func appBundle(t *testing.T, name, ns string) *fleet.Bundle {
	t.Helper()
	b, err := fleet.LoadDir(appDir(t, ns), name, ns)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// appDir writes a small app (ConfigMap, Deployment, Service, Canary) with a fleet.yaml for
// namespace ns; objects carry no namespace, so the default namespace places them, as in Fleet.
func appDir(t *testing.T, ns string) string {
	t.Helper()
	dir := t.TempDir()
	manifests := map[string]string{
		"app.yaml": `apiVersion: v1
kind: ConfigMap
metadata:
  name: web-settings
data:
  greeting: hello
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: ghcr.io/stefanprodan/podinfo:6.0.0
        ports: [{name: http, containerPort: 8080}]
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports: [{name: http, port: 8080, targetPort: 8080}]
`,
		"canary.yaml": `apiVersion: canarygate.io/v1alpha1
kind: Canary
metadata:
  name: web
spec:
  targetRef: {name: web}
  service: {port: 8080}
  analysis: {interval: 10s, threshold: 10, maxWeight: 50, stepWeight: 10}
`,
		"fleet.yaml": "defaultNamespace: " + ns + "\n",
	}
	for f, s := range manifests {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

var canaryGVR = schemaGVR("canarygate.io", "v1alpha1", "canaries")

func (h harness) deployment(ctx context.Context, t *testing.T, ns, name string) *appsv1.Deployment {
	t.Helper()
	d, err := h.kube.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// settled waits until the Deployment's rollout is complete, so that the deployment controller no
// longer writes its status and the resourceVersion only moves when someone changes the object.
func (h harness) settled(ctx context.Context, t *testing.T, ns, name string) *appsv1.Deployment {
	t.Helper()
	var d *appsv1.Deployment
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		var err error
		d, err = h.kube.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		s := d.Status
		return s.ObservedGeneration == d.Generation && s.Replicas == *d.Spec.Replicas &&
			s.UpdatedReplicas == s.Replicas && s.AvailableReplicas == s.Replicas, nil
	})
	if err != nil {
		t.Fatalf("deployment %s/%s did not finish rolling out: %v (status %+v)", ns, name, err, d.Status)
	}
	return d
}

// managers returns "manager/operation" for every managedFields entry.
func managers(m metav1.Object) []string {
	var out []string
	for _, f := range m.GetManagedFields() {
		out = append(out, f.Manager+"/"+string(f.Operation))
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func TestApplyDemoAppWithFleetMetadata(t *testing.T) {
	ctx, h := setup(t)
	b, err := fleet.LoadDir("../../testdata/demo-app", "canary-demo-app", "canary-demo")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.applier.Apply(ctx, b); err != nil {
		t.Fatal(err)
	}

	objects := map[string]metav1.Object{}
	ns, err := h.kube.CoreV1().Namespaces().Get(ctx, "canary-demo", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	objects["Namespace"] = ns
	objects["Deployment"] = h.settled(ctx, t, "canary-demo", "fleet-simple-app")
	svc, err := h.kube.CoreV1().Services("canary-demo").Get(ctx, "fleet-simple-app", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	objects["Service"] = svc
	canary, err := h.dyn.Resource(canaryGVR).Namespace("canary-demo").Get(ctx, "fleet-simple-app", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	objects["Canary"] = canary

	versions := map[string]string{}
	for kind, o := range objects {
		want := map[string]string{fleet.LabelHash: b.Hash(), fleet.LabelManagedBy: "Helm"}
		for k, v := range want {
			if o.GetLabels()[k] != v {
				t.Errorf("%s label %s = %q, want %q", kind, k, o.GetLabels()[k], v)
			}
		}
		wantAnn := map[string]string{
			fleet.AnnotationID: "default-canary-demo-app", fleet.AnnotationReleaseName: "canary-demo-app",
			fleet.AnnotationReleaseNamespace: "canary-demo",
		}
		for k, v := range wantAnn {
			if o.GetAnnotations()[k] != v {
				t.Errorf("%s annotation %s = %q, want %q", kind, k, o.GetAnnotations()[k], v)
			}
		}
		if m := managers(o); !contains(m, "fleet/Apply") {
			t.Errorf("%s managed by %v, want fleet/Apply", kind, m)
		}
		versions[kind] = o.GetResourceVersion()
	}
	if ns.Annotations["canarygate.io/canary"] != "enabled" {
		t.Errorf("namespace opt-in annotation = %q", ns.Annotations["canarygate.io/canary"])
	}

	// Fleet re-deploys the same commit on every resync: nothing may change.
	for i := 0; i < 3; i++ {
		if err := h.applier.Apply(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	if rv := h.deployment(ctx, t, "canary-demo", "fleet-simple-app").ResourceVersion; rv != versions["Deployment"] {
		t.Errorf("re-apply changed the Deployment: resourceVersion %s → %s", versions["Deployment"], rv)
	}
	canary, err = h.dyn.Resource(canaryGVR).Namespace("canary-demo").Get(ctx, "fleet-simple-app", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if canary.GetResourceVersion() != versions["Canary"] {
		t.Errorf("re-apply changed the Canary: resourceVersion %s → %s", versions["Canary"], canary.GetResourceVersion())
	}

	r, err := h.applier.Check(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	if !r.Clean() {
		t.Errorf("check after a clean apply:\n%s", r)
	}
}

func TestApplyCreatesUndeclaredNamespace(t *testing.T) {
	ctx, h := setup(t)
	b := appBundle(t, "fresh", "fleet-fresh")
	if err := h.applier.Apply(ctx, b); err != nil {
		t.Fatal(err)
	}
	if _, err := h.kube.CoreV1().Namespaces().Get(ctx, "fleet-fresh", metav1.GetOptions{}); err != nil {
		t.Fatalf("namespace: %v", err)
	}
	if _, err := h.kube.CoreV1().ConfigMaps("fleet-fresh").Get(ctx, "web-settings", metav1.GetOptions{}); err != nil {
		t.Fatalf("configmap in the default namespace: %v", err)
	}
}

// handEdit changes the Deployment the way `kubectl edit` does: an Update by another manager,
// retried when the deployment controller's status writes get in between.
func (h harness) handEdit(ctx context.Context, t *testing.T, ns string, change func(*appsv1.Deployment)) {
	t.Helper()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		d, err := h.kube.AppsV1().Deployments(ns).Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			return err
		}
		change(d)
		_, err = h.kube.AppsV1().Deployments(ns).Update(ctx, d, metav1.UpdateOptions{FieldManager: "kubectl-edit"})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestCorrectDriftRestoresHandEdits(t *testing.T) {
	ctx, h := setup(t)
	const ns = "fleet-drift"
	b := appBundle(t, "drift", ns)
	if err := h.applier.Apply(ctx, b); err != nil {
		t.Fatal(err)
	}
	h.handEdit(ctx, t, ns, func(d *appsv1.Deployment) {
		d.Spec.Template.Spec.Containers[0].Image = "ghcr.io/stefanprodan/podinfo:hacked"
		d.Spec.Replicas = ptr(int32(3))
		d.Labels["hand"] = "edited" // not declared: Fleet neither reports nor removes it
	})
	if err := h.kube.CoreV1().ConfigMaps(ns).Delete(ctx, "web-settings", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	patch := []byte(`{"spec":{"analysis":{"threshold":2}}}`)
	if _, err := h.dyn.Resource(canaryGVR).Namespace(ns).Patch(ctx, "web", types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}

	r, err := h.applier.Check(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf(`missing  ConfigMap %[1]s/web-settings
modified Canary %[1]s/web
         spec.analysis.threshold: 2 → 10
modified Deployment %[1]s/web
         spec.replicas: 3 → 1
         spec.template.spec.containers[name=web].image: "ghcr.io/stefanprodan/podinfo:hacked" → "ghcr.io/stefanprodan/podinfo:6.0.0"`, ns)
	if r.String() != want {
		t.Fatalf("check after hand edits:\n%s\nwant:\n%s", r, want)
	}

	if err := h.applier.CorrectDrift(ctx, b); err != nil {
		t.Fatal(err)
	}
	d := h.deployment(ctx, t, ns, "web")
	if img := d.Spec.Template.Spec.Containers[0].Image; img != "ghcr.io/stefanprodan/podinfo:6.0.0" {
		t.Errorf("image after drift correction = %s", img)
	}
	if *d.Spec.Replicas != 1 {
		t.Errorf("replicas after drift correction = %d", *d.Spec.Replicas)
	}
	if d.Labels["hand"] != "edited" {
		t.Errorf("drift correction removed an undeclared label: %v", d.Labels)
	}
	if m := managers(d); !contains(m, "fleet/Update") {
		t.Errorf("deployment managed by %v, want a fleet/Update entry from the rollback", m)
	}
	cm, err := h.kube.CoreV1().ConfigMaps(ns).Get(ctx, "web-settings", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("drift correction did not recreate the ConfigMap: %v", err)
	}
	if cm.Labels[fleet.LabelHash] != b.Hash() || !contains(managers(cm), "fleet/Update") {
		t.Errorf("recreated ConfigMap: labels %v, managers %v", cm.Labels, managers(cm))
	}

	// Helm's rollback leaves custom resources alone, so the Canary's drift is still reported.
	r, err = h.applier.Check(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("modified Canary %s/web\n         spec.analysis.threshold: 2 → 10", ns); r.String() != want {
		t.Fatalf("check after drift correction:\n%s\nwant:\n%s", r, want)
	}

	// A drift correction with nothing to correct writes nothing. The Deployment controller may
	// still update the status while the last rollout settles, so only the writes of others than
	// the status subresource count.
	before := h.settled(ctx, t, ns, "web")
	for i := 0; i < 3; i++ {
		if err := h.applier.CorrectDrift(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	if after := h.deployment(ctx, t, ns, "web"); after.ResourceVersion != before.ResourceVersion && !onlyStatusChanged(before, after) {
		t.Errorf("idle drift correction changed the Deployment: resourceVersion %s → %s, managers %v → %v",
			before.ResourceVersion, after.ResourceVersion, managers(before), managers(after))
	}
}

// onlyStatusChanged reports whether b differs from a in status only: same generation, metadata and
// spec, and the same managedFields apart from the status subresource's.
func onlyStatusChanged(a, b *appsv1.Deployment) bool {
	mainFields := func(d *appsv1.Deployment) []metav1.ManagedFieldsEntry {
		var out []metav1.ManagedFieldsEntry
		for _, f := range d.ManagedFields {
			if f.Subresource != "status" {
				out = append(out, f)
			}
		}
		return out
	}
	return a.Generation == b.Generation && equality.Semantic.DeepEqual(a.Labels, b.Labels) &&
		equality.Semantic.DeepEqual(a.Annotations, b.Annotations) && equality.Semantic.DeepEqual(a.Spec, b.Spec) &&
		equality.Semantic.DeepEqual(mainFields(a), mainFields(b))
}

func TestApplyDoesNotForceConflictsLikeHelm(t *testing.T) {
	ctx, h := setup(t)
	const ns = "fleet-conflict"
	b := appBundle(t, "conflict", ns)
	if err := h.applier.Apply(ctx, b); err != nil {
		t.Fatal(err)
	}
	h.handEdit(ctx, t, ns, func(d *appsv1.Deployment) { d.Spec.Template.Spec.Containers[0].Image = "other:1" })

	next, err := b.WithImage("web", "web", "ghcr.io/stefanprodan/podinfo:6.0.1")
	if err != nil {
		t.Fatal(err)
	}
	err = h.applier.Apply(ctx, next)
	if !apierrors.IsConflict(err) || !strings.Contains(err.Error(), "kubectl-edit") {
		t.Fatalf("apply over a field another manager set: err = %v, want a conflict naming kubectl-edit", err)
	}

	forcing := *h.applier
	forcing.ForceConflicts = true
	if err := forcing.Apply(ctx, next); err != nil {
		t.Fatal(err)
	}
	if img := h.deployment(ctx, t, ns, "web").Spec.Template.Spec.Containers[0].Image; img != "ghcr.io/stefanprodan/podinfo:6.0.1" {
		t.Fatalf("image after a forced apply = %s", img)
	}
}

func TestCheckReportsExtraObjectsCarryingTheHash(t *testing.T) {
	ctx, h := setup(t)
	const ns = "fleet-extra"
	b := appBundle(t, "extra", ns)
	if err := h.applier.Apply(ctx, b); err != nil {
		t.Fatal(err)
	}
	// What Flagger does: a copy of the Deployment with all its labels and annotations.
	d := h.deployment(ctx, t, ns, "web")
	primary := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web-primary", Namespace: ns, Labels: d.Labels, Annotations: d.Annotations},
		Spec:       *d.Spec.DeepCopy(),
	}
	if _, err := h.kube.AppsV1().Deployments(ns).Create(ctx, primary, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// A VirtualService carrying the label, one object Fleet is told to keep, and one without the label.
	vs := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
		"metadata": map[string]any{"name": "web", "namespace": ns, "labels": map[string]any{fleet.LabelHash: b.Hash()}},
		"spec":     map[string]any{"hosts": []any{"web"}},
	}}
	if _, err := h.dyn.Resource(schemaGVR("networking.istio.io", "v1", "virtualservices")).Namespace(ns).Create(ctx, vs, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for name, labels := range map[string]map[string]string{
		"kept":      {fleet.LabelHash: b.Hash(), fleet.LabelPrune: "false"},
		"unrelated": {"app": "web"},
	} {
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels}}
		if _, err := h.kube.CoreV1().ConfigMaps(ns).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// canarygate's annotations on the Git-owned Deployment are not drift for Fleet.
	ann := []byte(`{"metadata":{"annotations":{"canarygate.io/desired-revision":"abc","canarygate.io/desired-template":"{}","canarygate.io/promoted-revision":"def"}}}`)
	if _, err := h.kube.AppsV1().Deployments(ns).Patch(ctx, "web", types.MergePatchType, ann, metav1.PatchOptions{FieldManager: "canarygate"}); err != nil {
		t.Fatal(err)
	}

	r, err := h.applier.Check(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("extra    Deployment %[1]s/web-primary\nextra    VirtualService %[1]s/web", ns)
	if r.String() != want {
		t.Fatalf("check:\n%s\nwant:\n%s", r, want)
	}
}

func ptr[T any](v T) *T { return &v }

func schemaGVR(group, version, resource string) schema.GroupVersionResource {
	return schema.GroupVersionResource{Group: group, Version: version, Resource: resource}
}

func TestForcedDriftCorrectionReplacesObjects(t *testing.T) {
	ctx, h := setup(t)
	const ns = "fleet-replace"
	b := appBundle(t, "replace", ns)
	if err := h.applier.Apply(ctx, b); err != nil {
		t.Fatal(err)
	}
	h.handEdit(ctx, t, ns, func(d *appsv1.Deployment) {
		d.Spec.Template.Spec.Containers[0].Image = "hacked:1"
		d.Labels["hand"] = "edited"
	})
	ann := []byte(`{"metadata":{"annotations":{"canarygate.io/desired-revision":"abc"}}}`)
	if _, err := h.kube.AppsV1().Deployments(ns).Patch(ctx, "web", types.MergePatchType, ann, metav1.PatchOptions{FieldManager: "canarygate"}); err != nil {
		t.Fatal(err)
	}
	patch := []byte(`{"spec":{"analysis":{"threshold":2}}}`)
	if _, err := h.dyn.Resource(canaryGVR).Namespace(ns).Patch(ctx, "web", types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}

	forcing := *h.applier
	forcing.ForceDriftCorrection = true
	if err := forcing.CorrectDrift(ctx, b); err != nil {
		t.Fatal(err)
	}
	d := h.deployment(ctx, t, ns, "web")
	if img := d.Spec.Template.Spec.Containers[0].Image; img != "ghcr.io/stefanprodan/podinfo:6.0.0" {
		t.Errorf("image after a replace = %s", img)
	}
	if _, ok := d.Labels["hand"]; ok {
		t.Errorf("a replace kept an undeclared label: %v", d.Labels)
	}
	if _, ok := d.Annotations["canarygate.io/desired-revision"]; ok {
		t.Errorf("a replace kept another controller's annotation: %v", d.Annotations)
	}
	if d.Labels[fleet.LabelHash] != b.Hash() || !contains(managers(d), "fleet/Update") {
		t.Errorf("replaced Deployment: labels %v, managers %v", d.Labels, managers(d))
	}
	r, err := h.applier.Check(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	if !r.Clean() {
		t.Errorf("check after a replace (the Canary included):\n%s", r)
	}

	// The next commit deploys without conflicting with the drift correction's writes.
	next, err := b.WithImage("web", "web", "ghcr.io/stefanprodan/podinfo:6.0.1")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.applier.Apply(ctx, next); err != nil {
		t.Fatalf("deploy after a drift correction: %v", err)
	}
	d = h.deployment(ctx, t, ns, "web")
	if img := d.Spec.Template.Spec.Containers[0].Image; img != "ghcr.io/stefanprodan/podinfo:6.0.1" {
		t.Errorf("image after the next deploy = %s", img)
	}
	if m := managers(d); contains(m, "fleet/Update") {
		t.Errorf("fleet's Update ownership was not handed to its Apply: %v", m)
	}
}
