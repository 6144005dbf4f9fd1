package harness

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	istionetworkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"canarygate.io/canarygate/api/v1alpha1"
	"canarygate.io/canarygate/e2e/fleet"
	"canarygate.io/canarygate/e2e/testbed"
)

// The seed's demo app (e2e/testdata/demo-app): names a user meets in the blog post.
const (
	DemoApp       = "fleet-simple-app" // Deployment, Service, Canary and container name
	DemoNamespace = "canary-demo"
	DemoImage     = "ghcr.io/stefanprodan/podinfo:6.0.0"
	// DemoRPS is the request rate the simulator sends to each app's Service.
	DemoRPS = 20
)

// App is a Fleet bundle deployed with the Fleet-style applier; Bundle is what Git holds now.
type App struct {
	h         *Harness
	Applier   *fleet.Applier
	Bundle    *fleet.Bundle
	Namespace string
}

// LoadDemoBundle reads the seed's demo app as bundle name, moved to namespace ns: the Namespace
// object it declares is renamed, everything else lands there as Fleet's defaultNamespace does.
func LoadDemoBundle(name, ns string) (*fleet.Bundle, error) {
	repo, err := testbed.RepoRoot()
	if err != nil {
		return nil, err
	}
	b, err := fleet.LoadDir(filepath.Join(repo, "e2e", "testdata", "demo-app"), name, ns)
	if err != nil {
		return nil, err
	}
	for _, o := range b.Objects {
		if o.GetKind() == "Namespace" {
			o.SetName(ns)
		}
	}
	return b, nil
}

// Object returns the bundle's object of that kind and name, nil if it declares none.
func Object(b *fleet.Bundle, kind, name string) *unstructured.Unstructured {
	for _, o := range b.Objects {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	return nil
}

// NewApp prepares b for deployment; nothing is written until Deploy.
func (h *Harness) NewApp(b *fleet.Bundle) (*App, error) {
	a, err := fleet.NewApplier(h.Env.Config)
	if err != nil {
		return nil, err
	}
	return &App{h: h, Applier: a, Bundle: b, Namespace: b.Namespace}, nil
}

// Deploy applies the bundle as a Fleet deploy, sends DemoRPS to every Service it declares, and
// waits until its Deployments are rolled out and, in a managed namespace, their Canaries are
// Initialized.
func (a *App) Deploy(ctx context.Context) error {
	if err := a.Applier.Apply(ctx, a.Bundle); err != nil {
		return err
	}
	for _, o := range a.Bundle.Objects {
		if o.GetKind() == "Service" {
			if err := a.h.Sim.SetServiceRate(a.Namespace, o.GetName(), DemoRPS); err != nil {
				return err
			}
		}
	}
	for _, o := range a.Bundle.Objects {
		if o.GetKind() != "Deployment" {
			continue
		}
		if err := a.h.WaitRolledOut(ctx, a.Namespace, o.GetName(), time.Minute); err != nil {
			return err
		}
	}
	return nil
}

// WaitInitialized waits until the Canary of each named Deployment is Initialized.
func (a *App) WaitInitialized(ctx context.Context, names ...string) error {
	for _, n := range names {
		if _, err := a.h.WaitPhase(ctx, a.Namespace, n, v1alpha1.PhaseInitialized, time.Minute); err != nil {
			return err
		}
	}
	return nil
}

// PushImage is a Git commit that bumps the image of a Deployment's container of the same name,
// deployed as Fleet does.
func (a *App) PushImage(ctx context.Context, deployment, image string) error {
	b, err := a.Bundle.WithImage(deployment, deployment, image)
	if err != nil {
		return err
	}
	a.Bundle = b
	return a.Applier.Apply(ctx, b)
}

// Check is what Fleet would report about the bundle now.
func (a *App) Check(ctx context.Context) (fleet.Report, error) { return a.Applier.Check(ctx, a.Bundle) }

// Deployment reads a Deployment of the app's namespace.
func (a *App) Deployment(ctx context.Context, name string) (*appsv1.Deployment, error) {
	var d appsv1.Deployment
	err := a.h.Client.Get(ctx, client.ObjectKey{Namespace: a.Namespace, Name: name}, &d)
	return &d, err
}

// Generated lists the objects canarygate generated in the app's namespace, as "Kind name".
func (a *App) Generated(ctx context.Context) ([]string, error) {
	sel := client.HasLabels{v1alpha1.GeneratedForLabel}
	var out []string
	var deps appsv1.DeploymentList
	var svcs corev1.ServiceList
	var vss istionetworkingv1.VirtualServiceList
	for _, l := range []struct {
		kind string
		list client.ObjectList
	}{{"Deployment", &deps}, {"Service", &svcs}, {"VirtualService", &vss}} {
		if err := a.h.Client.List(ctx, l.list, client.InNamespace(a.Namespace), sel); err != nil {
			return nil, err
		}
	}
	for _, d := range deps.Items {
		out = append(out, "Deployment "+d.Name)
	}
	for _, s := range svcs.Items {
		out = append(out, "Service "+s.Name)
	}
	for _, v := range vss.Items {
		out = append(out, "VirtualService "+v.Name)
	}
	return out, nil
}

// Image is the image of a Deployment's container of the same name in its pod template.
func Image(d *appsv1.Deployment) string {
	for _, c := range d.Spec.Template.Spec.Containers {
		if c.Name == d.Name {
			return c.Image
		}
	}
	return ""
}

// WaitRolledOut waits until the Deployment's current generation is fully rolled out and available.
func (h *Harness) WaitRolledOut(ctx context.Context, namespace, name string, timeout time.Duration) error {
	return WaitFor(ctx, timeout, fmt.Sprintf("Deployment %s/%s rolled out", namespace, name), func(ctx context.Context) (bool, string, error) {
		var d appsv1.Deployment
		if err := h.Client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, &d); err != nil {
			return false, err.Error(), nil
		}
		want := int32(1)
		if d.Spec.Replicas != nil {
			want = *d.Spec.Replicas
		}
		s := d.Status
		done := s.ObservedGeneration >= d.Generation && s.UpdatedReplicas == want && s.AvailableReplicas == want && s.Replicas == want
		return done, fmt.Sprintf("generation %d observed %d, updated %d available %d of %d", d.Generation, s.ObservedGeneration, s.UpdatedReplicas, s.AvailableReplicas, want), nil
	})
}
