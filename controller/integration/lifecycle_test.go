package integration

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	networking "istio.io/api/networking/v1alpha3"
	istionetworkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"canarygate.io/canarygate/api/v1alpha1"
	canarymachine "canarygate.io/canarygate/controller/canary"
	canarytraffic "canarygate.io/canarygate/controller/traffic"
)

// setAction writes the canarygate.io/action annotation on the Canary.
func (f *fixture) setAction(action string) {
	f.t.Helper()
	cg, err := f.canary()
	if err != nil {
		f.t.Fatal(err)
	}
	patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, v1alpha1.ActionAnnotation, action)
	if err := f.c.Patch(context.Background(), cg, client.RawPatch(types.MergePatchType, []byte(patch))); err != nil {
		f.t.Fatal(err)
	}
}

// events lists the Events with a reason about an object of a kind, by name.
func (f *fixture) events(reason, kind, name string) []eventsv1.Event {
	f.t.Helper()
	var list eventsv1.EventList
	if err := f.c.List(context.Background(), &list, client.InNamespace(f.ns)); err != nil {
		f.t.Fatal(err)
	}
	var out []eventsv1.Event
	for _, e := range list.Items {
		if e.Reason == reason && e.Regarding.Kind == kind && e.Regarding.Name == name {
			out = append(out, e)
		}
	}
	return out
}

// TestStalledPromotion: a promoted revision whose pods no node accepts never rolls out. Past the
// Canary's progress deadline the Canary says so once (Promoted=False, PromotionStalled, naming what
// is not available, and a Warning Event on it and on the Deployment) and keeps waiting, without
// rolling the Deployment back; the abort action then routes all traffic to the Deployment, which
// keeps Git's template.
func TestStalledPromotion(t *testing.T) {
	t.Parallel()
	sharedManager(t)
	spec := userAnalysis(nil)
	spec.ProgressDeadlineSeconds = ptr.To[int32](15)
	f := newFixture(t, spec)
	rev, desired := f.proposeTemplate(func(t *corev1.PodTemplateSpec) {
		t.Spec.NodeSelector = map[string]string{"canarygate.io/test": "no-such-node"}
		t.Spec.Containers[0].Image = "example.com/web:v2"
	})
	f.waitPhase(v1alpha1.PhaseProgressing)
	// The canary pods cannot be scheduled either: the operator promotes without analysis, before
	// the canary's own deadline rolls it back.
	f.setAction(v1alpha1.ActionPromote)
	f.waitPhase(v1alpha1.PhasePromoting)

	var stalled *metav1.Condition
	f.eventually("the stall is reported", func() (bool, string) {
		st := f.status()
		stalled = findCondition(st, v1alpha1.ConditionPromoted)
		return stalled != nil && stalled.Reason == canarymachine.ReasonPromotionStalled, fmt.Sprintf("%+v", st)
	})
	// The Deployment's Progressing message names its new ReplicaSet ("Created new replica set
	// \"web-…\"" or "ReplicaSet \"web-…\" is progressing.", depending on timing).
	if stalled.Status != metav1.ConditionFalse || !strings.Contains(stalled.Message, "of 2 replicas updated") || !strings.Contains(stalled.Message, `Progressing: `) || !strings.Contains(stalled.Message, `"web-`) {
		t.Errorf("Promoted condition does not say what is not available: %+v", stalled)
	}

	time.Sleep(12 * time.Second) // more than two intervals: no repeated Event, no rollback
	st := f.status()
	if st.Phase != v1alpha1.PhasePromoting || st.CanaryRevision != rev {
		t.Errorf("a stalled promotion must keep waiting: %+v", st)
	}
	if !equality.Semantic.DeepEqual(f.deployment().Spec.Template, *desired) {
		t.Error("the Deployment's template is no longer Git's")
	}
	for _, kind := range []string{"Canary", "Deployment"} {
		evs := f.events(canarymachine.ReasonPromotionStalled, kind, app)
		if len(evs) != 1 || evs[0].Type != corev1.EventTypeWarning || evs[0].Series != nil {
			t.Errorf("want one Warning %s Event on the %s, emitted once; got %+v", canarymachine.ReasonPromotionStalled, kind, evs)
		}
	}

	f.setAction(v1alpha1.ActionAbort)
	st = f.waitPhase(v1alpha1.PhaseFailed)
	if !strings.Contains(st.Message, "all traffic goes to the Deployment") || !strings.Contains(st.Message, "keeps the template of revision "+rev) {
		t.Errorf("message after the abort: %q", st.Message)
	}
	if st.FailedRevision == rev {
		t.Errorf("the revision the Deployment runs must not be held as failed: %+v", st)
	}
	if evs := f.events("PromotionAborted", "Deployment", app); len(evs) != 1 || !strings.Contains(evs[0].Note, "Git") {
		t.Errorf("PromotionAborted Event on the Deployment: %+v", evs)
	}
	if !equality.Semantic.DeepEqual(f.deployment().Spec.Template, *desired) {
		t.Error("the abort changed the Deployment's template")
	}
	f.assertCleanedUp()
}

// TestUnmanagedDeploymentLosesItsCanary: the idle Canary canarygate created for a Deployment is
// deleted when the Deployment opts out or its namespace stops being managed, and created again
// when it opts back in; a Canary a user created is kept.
func TestUnmanagedDeploymentLosesItsCanary(t *testing.T) {
	t.Parallel()
	sharedManager(t)
	f := newFixture(t, nil)
	ctx := context.Background()
	const userApp = "api"
	f.create(&v1alpha1.Canary{
		ObjectMeta: metav1.ObjectMeta{Name: userApp, Namespace: f.ns},
		Spec:       v1alpha1.CanarySpec{TargetRef: v1alpha1.TargetRef{Name: userApp}, Service: v1alpha1.CanaryService{Name: userApp, Port: 80}},
	})
	f.create(&appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: userApp, Namespace: f.ns},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": userApp}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": userApp}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: userApp, Image: "example.com/api:v1"}}},
			},
		},
	})
	auto, err := f.canary()
	if err != nil {
		t.Fatal(err)
	}

	annotate := func(o client.Object, key string, value *string) {
		t.Helper()
		v := "null"
		if value != nil {
			v = fmt.Sprintf("%q", *value)
		}
		patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:%s}}}`, key, v)
		if err := f.c.Patch(ctx, o, client.RawPatch(types.MergePatchType, []byte(patch))); err != nil {
			t.Fatal(err)
		}
	}
	gone := func(name string) func() (bool, string) {
		return func() (bool, string) {
			var c v1alpha1.Canary
			err := f.c.Get(ctx, f.key(name), &c)
			return apierrors.IsNotFound(err), fmt.Sprintf("%v %+v", err, c.Status)
		}
	}
	userKept := func() {
		t.Helper()
		time.Sleep(2 * time.Second)
		var c v1alpha1.Canary
		if err := f.c.Get(ctx, f.key(userApp), &c); err != nil {
			t.Errorf("the user's Canary was deleted: %v", err)
		}
	}
	deploy := func(name string) *appsv1.Deployment {
		return &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: f.ns}}
	}

	// The user's Deployment opts out first: its reconcile comes before the auto Canary's.
	annotate(deploy(userApp), v1alpha1.OptInKey, ptr.To(v1alpha1.OptOutDisabled))
	annotate(deploy(app), v1alpha1.OptInKey, ptr.To(v1alpha1.OptOutDisabled))
	f.eventually("the opted-out Deployment's Canary is deleted", gone(app))
	userKept()

	annotate(deploy(app), v1alpha1.OptInKey, nil)
	f.eventually("opting back in creates a Canary again", func() (bool, string) {
		c, err := f.canary()
		return err == nil && c.UID != auto.UID && c.Labels[v1alpha1.CreatedByLabel] == v1alpha1.CreatedByController, fmt.Sprint(err)
	})

	annotate(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: f.ns}}, v1alpha1.OptInKey, nil)
	f.eventually("an unmanaged namespace's Canary is deleted", gone(app))
	userKept()
}

// TestCanaryDeletedMidFlight: a Canary deleted while its canary takes traffic leaves no trace.
// With a user VirtualService it holds a finalizer until the routes are restored exactly; with a
// generated one it holds none (no extra write per release), and the garbage collector removes the
// generated route with the canary Deployment and Service, which the Canary owns.
func TestCanaryDeletedMidFlight(t *testing.T) {
	t.Parallel()
	sharedManager(t)
	for _, user := range []bool{true, false} {
		t.Run(fmt.Sprintf("user route %v", user), func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, userAnalysis(func(a *v1alpha1.CanaryAnalysis) { a.StepWeight, a.MaxWeight = 10, 50 }))
			ctx := context.Background()
			var original []*networking.HTTPRoute
			if user {
				original = []*networking.HTTPRoute{{Route: []*networking.HTTPRouteDestination{{Destination: &networking.Destination{Host: app, Port: &networking.PortSelector{Number: 80}}}}}}
				vs := &istionetworkingv1.VirtualService{ObjectMeta: metav1.ObjectMeta{Name: app, Namespace: f.ns}}
				vs.Spec.Hosts = []string{app}
				vs.Spec.Http = original
				f.create(vs)
			}
			f.propose("example.com/web:v2")
			f.waitWeight(10)

			cg, err := f.canary()
			if err != nil {
				t.Fatal(err)
			}
			if has := slices.Contains(cg.Finalizers, "canarygate.io/routes"); has != user {
				t.Errorf("finalizers %v mid-flight; want the routes finalizer only with a user route", cg.Finalizers)
			}
			generated := map[string]client.Object{
				"Deployment": &appsv1.Deployment{}, "Service": &corev1.Service{}, "VirtualService": &istionetworkingv1.VirtualService{},
			}
			if user {
				delete(generated, "VirtualService")
			}
			uids := map[string]types.UID{}
			for kind, o := range generated {
				if err := f.c.Get(ctx, f.key(canary), o); err != nil {
					t.Fatalf("generated %s mid-flight: %v", kind, err)
				}
				uids[kind] = o.GetUID()
			}

			if err := f.c.Delete(ctx, cg); err != nil {
				t.Fatal(err)
			}
			// The Deployment stays managed, so a new Canary of the same name may follow at once.
			f.eventually("the Canary is gone", func() (bool, string) {
				now, err := f.canary()
				return apierrors.IsNotFound(err) || (err == nil && now.UID != cg.UID), fmt.Sprint(err)
			})
			if user {
				// The finalizer held the Canary until the routes were back: they are, now.
				var vs istionetworkingv1.VirtualService
				if err := f.c.Get(ctx, f.key(app), &vs); err != nil {
					t.Fatal(err)
				}
				if len(vs.Spec.Http) != 1 || !proto.Equal(vs.Spec.Http[0], original[0]) || vs.Annotations[canarytraffic.OriginalHTTPAnnotation] != "" {
					t.Errorf("user VirtualService after the Canary's deletion: %v %v", vs.Spec.Http, vs.Annotations)
				}
			}
			// A new Canary may be created for the Deployment meanwhile and generate its own objects:
			// the ones of the deleted Canary are told apart by UID.
			f.eventually("the deleted Canary's generated objects are gone", func() (bool, string) {
				var left []string
				for kind, o := range generated {
					err := f.c.Get(ctx, f.key(canary), o)
					if err == nil && o.GetUID() == uids[kind] {
						left = append(left, kind)
					}
				}
				return len(left) == 0, strings.Join(left, ", ")
			})
		})
	}
}
