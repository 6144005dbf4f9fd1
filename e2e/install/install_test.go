// Package install_test applies canarygate's install manifests to a real API server and checks what a
// cluster admin relies on: a clean server-side apply, and what happens to Deployment writes while
// canarygate is not serving its webhooks (nothing runs canarygate here: kwok only fakes its pods).
package install_test

import (
	"context"
	"errors"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"canarygate.io/canarygate/api/v1alpha1"
	"canarygate.io/canarygate/e2e/testbed"
	"canarygate.io/canarygate/manifests"
)

func TestMain(m *testing.M) {
	os.Exit(testbed.Run(m, testbed.Options{NoPrometheus: true}))
}

const fieldOwner = "canarygate-install"

// apply server-side applies objs in order, without forcing: a conflict with another field manager
// is an error, as it is for `kubectl apply --server-side`.
func apply(ctx context.Context, c client.Client, objs []*unstructured.Unstructured) error {
	for _, o := range objs {
		if err := c.Apply(ctx, client.ApplyConfigurationFromUnstructured(o.DeepCopy()), client.FieldOwner(fieldOwner)); err != nil {
			return errors.Join(errors.New(o.GetKind()+" "+o.GetNamespace()+"/"+o.GetName()), err)
		}
	}
	return nil
}

// ordered puts Namespaces and CRDs first, as kubectl's apply does not but a fresh cluster needs.
func ordered(objs []*unstructured.Unstructured) []*unstructured.Unstructured {
	rank := func(o *unstructured.Unstructured) int {
		switch o.GetKind() {
		case "Namespace":
			return 0
		case "CustomResourceDefinition":
			return 1
		}
		return 2
	}
	out := slices.Clone(objs)
	slices.SortStableFunc(out, func(a, b *unstructured.Unstructured) int { return rank(a) - rank(b) })
	return out
}

var installed bool

// install applies manifests/default once per test binary.
func install(t *testing.T, c client.Client) []*unstructured.Unstructured {
	t.Helper()
	_, objs, err := manifests.Build("../../manifests/default")
	if err != nil {
		t.Fatal(err)
	}
	objs = ordered(objs)
	if !installed {
		if err := apply(t.Context(), c, objs); err != nil {
			t.Fatalf("server-side apply of manifests/default: %v", err)
		}
		installed = true
	}
	return objs
}

func env(t *testing.T) client.Client {
	t.Helper()
	c, err := testbed.Shared().Client()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestServerSideApply: the default install applies cleanly (the API server validates every field,
// the matchConditions' CEL included), and applying it again changes nothing.
func TestServerSideApply(t *testing.T) {
	c := env(t)
	objs := install(t, c)
	ctx := t.Context()

	// What the apply stored; Deployments and PDBs get status writes, so only their generation counts.
	version := func(o *unstructured.Unstructured) string {
		live := &unstructured.Unstructured{}
		live.SetGroupVersionKind(o.GroupVersionKind())
		if err := c.Get(ctx, client.ObjectKeyFromObject(o), live); err != nil {
			t.Fatalf("%s %s: %v", o.GetKind(), o.GetName(), err)
		}
		switch o.GetKind() {
		case "Deployment", "PodDisruptionBudget":
			return "generation " + strconv.FormatInt(live.GetGeneration(), 10)
		}
		return live.GetResourceVersion()
	}
	before := map[string]string{}
	for _, o := range objs {
		before[o.GetKind()+"/"+o.GetNamespace()+"/"+o.GetName()] = version(o)
	}
	if err := apply(ctx, c, objs); err != nil {
		t.Fatalf("second server-side apply: %v", err)
	}
	for _, o := range objs {
		key := o.GetKind() + "/" + o.GetNamespace() + "/" + o.GetName()
		if after := version(o); after != before[key] {
			t.Errorf("%s changed on a repeated apply: %s → %s", key, before[key], after)
		}
	}
}

func deployment(ns, name string) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](1),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "example.com/app:1"}}},
			},
		},
	}
}

func createNamespace(t *testing.T, c client.Client, name string) *corev1.Namespace {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := c.Create(t.Context(), ns); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	return ns
}

// managedWith creates namespace ns with objs in it while canarygate does not see it yet, then opts
// it in: the objects exist before the webhooks are called for them.
func managedWith(t *testing.T, c client.Client, ns string, objs ...client.Object) {
	t.Helper()
	createNamespace(t, c, ns)
	for _, o := range objs {
		if err := c.Create(t.Context(), o); err != nil {
			t.Fatalf("creating %T %s before opting in: %v", o, o.GetName(), err)
		}
	}
	optIn(t, c, ns)
}

// optIn puts the label that canarygate's controller mirrors from the opt-in annotation (the
// controller does not run here).
func optIn(t *testing.T, c client.Client, name string) {
	t.Helper()
	ns := &corev1.Namespace{}
	if err := c.Get(t.Context(), client.ObjectKey{Name: name}, ns); err != nil {
		t.Fatal(err)
	}
	if ns.Labels == nil {
		ns.Labels = map[string]string{}
	}
	ns.Labels[v1alpha1.OptInKey] = v1alpha1.OptInEnabled
	if err := c.Update(t.Context(), ns); err != nil {
		t.Fatal(err)
	}
}

// setImage updates the Deployment's image, retrying when the Deployment controller wrote in between.
func setImage(ctx context.Context, c client.Client, d *appsv1.Deployment, image string) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if err := c.Get(ctx, client.ObjectKeyFromObject(d), d); err != nil {
			return err
		}
		d.Spec.Template.Spec.Containers[0].Image = image
		return c.Update(ctx, d)
	})
}

func canary(ns, name string) *v1alpha1.Canary {
	return &v1alpha1.Canary{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       v1alpha1.CanarySpec{TargetRef: v1alpha1.TargetRef{Name: "app"}},
	}
}

// webhookDown asserts the error the API server gives while canarygate's webhook cannot be called.
func webhookDown(t *testing.T, err error, webhook string) {
	t.Helper()
	if err == nil {
		t.Fatalf("the write went through although %s cannot be called", webhook)
	}
	if !apierrors.IsInternalError(err) || !strings.Contains(err.Error(), `failed calling webhook "`+webhook+`"`) {
		t.Fatalf("want an internal error from %s, got %T: %v", webhook, err, err)
	}
	t.Logf("user-visible error: %v", err)
}

// TestCanarygateDown: with the webhook configurations installed and canarygate not answering,
// namespaces that did not opt in (and the always-excluded ones, even if labeled) are untouched;
// in a managed namespace Deployment and Canary writes fail closed, while scaling, deleting and
// finishing a deletion still work; CanaryPolicy writes fail closed everywhere.
func TestCanarygateDown(t *testing.T) {
	c := env(t)
	install(t, c)
	ctx := t.Context()

	t.Run("namespace that did not opt in", func(t *testing.T) {
		createNamespace(t, c, "plain")
		d := deployment("plain", "app")
		if err := c.Create(ctx, d); err != nil {
			t.Fatalf("create: %v", err)
		}
		if err := setImage(ctx, c, d, "example.com/app:2"); err != nil {
			t.Fatalf("update: %v", err)
		}
	})

	t.Run("always-excluded namespace, even labeled", func(t *testing.T) {
		optIn(t, c, "kube-public")
		d := deployment("kube-public", "app")
		if err := c.Create(ctx, d); err != nil {
			t.Fatalf("create: %v", err)
		}
		if err := setImage(ctx, c, d, "example.com/app:2"); err != nil {
			t.Fatalf("update: %v", err)
		}
	})

	t.Run("managed namespace", func(t *testing.T) {
		d := deployment("managed", "app")
		managedWith(t, c, "managed", d)

		webhookDown(t, setImage(ctx, c, d, "example.com/app:2"), "mdeployments.canarygate.io")
		live := &appsv1.Deployment{}
		if err := c.Get(ctx, client.ObjectKeyFromObject(d), live); err != nil {
			t.Fatal(err)
		}
		if img := live.Spec.Template.Spec.Containers[0].Image; img != "example.com/app:1" {
			t.Errorf("image is %s after a rejected update", img)
		}
		// Not only template changes: the webhooks cannot tell without canarygate.
		live.Spec.Replicas = ptr.To[int32](2)
		webhookDown(t, c.Update(ctx, live), "mdeployments.canarygate.io")
		webhookDown(t, c.Create(ctx, deployment("managed", "new")), "mdeployments.canarygate.io")

		// The scale subresource is not intercepted: an HPA or `kubectl scale` keeps working.
		scale := &autoscalingv1.Scale{Spec: autoscalingv1.ScaleSpec{Replicas: 3}}
		if err := c.SubResource("scale").Update(ctx, live, client.WithSubResourceBody(scale)); err != nil {
			t.Errorf("scaling through the scale subresource: %v", err)
		}
		// Deleting is not intercepted either.
		if err := c.Delete(ctx, live); err != nil {
			t.Errorf("delete: %v", err)
		}
	})

	t.Run("managed namespace with generated objects can be deleted", func(t *testing.T) {
		svc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: "managed-gone", Name: "app-canary", Labels: map[string]string{v1alpha1.GeneratedForLabel: "app"}},
			Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 8080}}, Selector: map[string]string{"app": "app-canary"}},
		}
		managedWith(t, c, "managed-gone", svc)
		// Only canarygate may touch generated objects; without it, nobody but Kubernetes can.
		webhookDown(t, c.Delete(ctx, svc.DeepCopy()), "vgenerated.canarygate.io")

		// The namespace controller is skipped by the matchConditions, so the namespace goes away.
		if err := c.Delete(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "managed-gone"}}); err != nil {
			t.Fatal(err)
		}
		err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
			err := c.Get(ctx, client.ObjectKey{Name: "managed-gone"}, &corev1.Namespace{})
			return apierrors.IsNotFound(err), client.IgnoreNotFound(err)
		})
		if err != nil {
			ns := &corev1.Namespace{}
			_ = c.Get(ctx, client.ObjectKey{Name: "managed-gone"}, ns)
			t.Fatalf("the managed namespace was not deleted: %v; conditions %+v", err, ns.Status.Conditions)
		}
	})

	t.Run("Canary create in a managed namespace", func(t *testing.T) {
		managedWith(t, c, "managed-canary-new")
		webhookDown(t, c.Create(ctx, canary("managed-canary-new", "app")), "vcanarygate.canarygate.io")
	})

	t.Run("Canary update in a managed namespace", func(t *testing.T) {
		cg := canary("managed-canary-old", "app")
		managedWith(t, c, "managed-canary-old", cg)
		cg.Spec.Suspend = true
		webhookDown(t, c.Update(ctx, cg), "vcanarygate.canarygate.io")
	})

	// The label keeper on Namespaces fails open: the README's emergency switch, removing the opt-in
	// label, works while canarygate is down, and the namespace's Deployments then roll out natively.
	t.Run("removing the opt-in label from a managed namespace", func(t *testing.T) {
		d := deployment("managed-switch", "app")
		managedWith(t, c, "managed-switch", d)
		webhookDown(t, setImage(ctx, c, d, "example.com/app:2"), "mdeployments.canarygate.io")
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			ns := &corev1.Namespace{}
			if err := c.Get(ctx, client.ObjectKey{Name: "managed-switch"}, ns); err != nil {
				return err
			}
			delete(ns.Labels, v1alpha1.OptInKey)
			return c.Update(ctx, ns)
		})
		if err != nil {
			t.Fatalf("removing the label: %v", err)
		}
		if err := setImage(ctx, c, d, "example.com/app:2"); err != nil {
			t.Fatalf("update after the switch: %v", err)
		}
	})

	// CanaryPolicy is cluster-scoped: no namespace selector keeps it from canarygate's validator.
	t.Run("CanaryPolicy create", func(t *testing.T) {
		p := &v1alpha1.CanaryPolicy{ObjectMeta: metav1.ObjectMeta{Name: "while-down"}}
		webhookDown(t, c.Create(ctx, p), "vcanarygate.canarygate.io")
	})

	// The webhooks' matchConditions skip a Deployment with a deletionTimestamp, so whoever holds a
	// finalizer on it can let it go while canarygate is down.
	t.Run("finalizer removal from a Deployment being deleted in a managed namespace", func(t *testing.T) {
		d := deployment("managed-deleting", "app")
		d.Finalizers = []string{"example.com/hold"}
		managedWith(t, c, "managed-deleting", d)
		if err := c.Delete(ctx, d); err != nil {
			t.Fatalf("delete: %v", err)
		}
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			if err := c.Get(ctx, client.ObjectKeyFromObject(d), d); err != nil {
				return err
			}
			if d.DeletionTimestamp == nil {
				return errors.New("the Deployment is not being deleted: its finalizer did not hold it")
			}
			d.Finalizers = nil
			return c.Update(ctx, d)
		})
		if err != nil {
			t.Fatalf("removing the finalizer of a Deployment being deleted: %v", err)
		}
	})
}
