package traffic

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	networking "istio.io/api/networking/v1alpha3"
	istionetworkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"canarygate.io/canarygate/api/v1alpha1"
	"canarygate.io/canarygate/controller/expectations"
	"canarygate.io/canarygate/e2e/testbed"
)

func TestMain(m *testing.M) { os.Exit(testbed.Run(m, testbed.Options{NoPrometheus: true})) }

// newRouter returns a router reading through its own informer cache, as in the manager, and a
// direct client for the test's own reads and writes.
func newRouter(t *testing.T) (Router, client.Client) {
	t.Helper()
	env := testbed.Shared()
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	if err := AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	c, err := cache.New(env.Config, cache.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = c.Start(ctx) }()
	if !c.WaitForCacheSync(ctx) {
		t.Fatal("cache did not start")
	}
	cached, err := client.New(env.Config, client.Options{Scheme: scheme, Cache: &client.CacheOptions{Reader: c}})
	if err != nil {
		t.Fatal(err)
	}
	direct, err := env.Client()
	if err != nil {
		t.Fatal(err)
	}
	return settled{NewIstio(cached)}, direct
}

// settled retries every call that finds the cache behind the router's own last write, as the
// reconciler does by requeueing.
type settled struct{ Router }

func untilSettled(ctx context.Context, call func() error) error {
	for {
		err := call()
		if !errors.Is(err, expectations.ErrBehind) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func (s settled) SetWeight(ctx context.Context, t Target, w int) error {
	return untilSettled(ctx, func() error { return s.Router.SetWeight(ctx, t, w) })
}

func (s settled) Finalize(ctx context.Context, t Target) error {
	return untilSettled(ctx, func() error { return s.Router.Finalize(ctx, t) })
}

func (s settled) Weight(ctx context.Context, t Target) (w int, err error) {
	err = untilSettled(ctx, func() error { w, err = s.Router.Weight(ctx, t); return err })
	return w, err
}

func (s settled) UserRouted(ctx context.Context, t Target) (user bool, err error) {
	err = untilSettled(ctx, func() error { user, err = s.Router.UserRouted(ctx, t); return err })
	return user, err
}

var nsCounter atomic.Int32

func namespace(t *testing.T, c client.Client) string {
	t.Helper()
	name := fmt.Sprintf("traffic-%d-%d", time.Now().Unix()%100000, nsCounter.Add(1))
	if err := c.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil {
		t.Fatal(err)
	}
	return name
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func getVS(t *testing.T, c client.Client, ns, name string) *istionetworkingv1.VirtualService {
	t.Helper()
	var vs istionetworkingv1.VirtualService
	if err := c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, &vs); err != nil {
		t.Fatalf("get VirtualService %s/%s: %v", ns, name, err)
	}
	return &vs
}

func mustWeight(t *testing.T, r Router, tg Target, want int) {
	t.Helper()
	got, err := r.Weight(ctxT(t), tg)
	if err != nil {
		t.Fatalf("Weight: %v", err)
	}
	if got != want {
		t.Fatalf("Weight = %d, want %d", got, want)
	}
}

func TestIstioGeneratedVirtualService(t *testing.T) {
	router, c := newRouter(t)
	ctx := ctxT(t)
	owner := metav1.OwnerReference{APIVersion: "canarygate.io/v1alpha1", Kind: "Canary", Name: "web", UID: "canary-uid", Controller: ptr.To(true)}
	tg := Target{Namespace: namespace(t, c), Owner: "web", StableService: "web", CanaryService: "web-canary", Port: 8080, OwnerRef: &owner}
	name := v1alpha1.GeneratedName(tg.Owner)

	if err := router.SetWeight(ctx, tg, 0); err != nil {
		t.Fatal(err)
	}
	var list istionetworkingv1.VirtualServiceList
	if err := c.List(ctx, &list, client.InNamespace(tg.Namespace)); err != nil || len(list.Items) != 0 {
		t.Fatalf("weight 0 without any route created %d VirtualServices (err %v)", len(list.Items), err)
	}
	mustWeight(t, router, tg, 0)

	if err := router.SetWeight(ctx, tg, 20); err != nil {
		t.Fatal(err)
	}
	vs := getVS(t, c, tg.Namespace, name)
	if vs.Labels[v1alpha1.GeneratedForLabel] != "web" || strings.Join(vs.Spec.Hosts, ",") != "web" {
		t.Errorf("generated VirtualService labels %v hosts %v", vs.Labels, vs.Spec.Hosts)
	}
	if len(vs.OwnerReferences) != 1 || vs.OwnerReferences[0].UID != owner.UID {
		t.Errorf("generated VirtualService owners %v, want the target's owner", vs.OwnerReferences)
	}
	if user, err := router.UserRouted(ctx, tg); err != nil || user {
		t.Errorf("UserRouted with only the generated route = %v, %v; want false", user, err)
	}
	if got := fmt.Sprint(show(vs.Spec.Http)); got != "[web:8080=80 web-canary:8080=20]" {
		t.Errorf("generated routes %s", got)
	}
	mustWeight(t, router, tg, 20)

	// The right weight already in place: no write at all.
	if err := router.SetWeight(ctx, tg, 20); err != nil {
		t.Fatal(err)
	}
	if again := getVS(t, c, tg.Namespace, name); again.ResourceVersion != vs.ResourceVersion {
		t.Errorf("SetWeight with the weight in place wrote: resourceVersion %s → %s", vs.ResourceVersion, again.ResourceVersion)
	}

	if err := router.SetWeight(ctx, tg, 100); err != nil {
		t.Fatal(err)
	}
	mustWeight(t, router, tg, 100)

	// Someone else's object under the generated name is never taken over.
	other := tg
	other.Owner = "api"
	foreign := &istionetworkingv1.VirtualService{ObjectMeta: metav1.ObjectMeta{Namespace: tg.Namespace, Name: "api-canary"}}
	foreign.Spec.Hosts = []string{"elsewhere"}
	if err := c.Create(ctx, foreign); err != nil {
		t.Fatal(err)
	}
	other.StableService, other.CanaryService = "api", "api-canary"
	if err := router.SetWeight(ctx, other, 10); err == nil || !strings.Contains(err.Error(), "not generated by canarygate") {
		t.Errorf("SetWeight over a foreign VirtualService: err %v", err)
	}

	for range 2 { // idempotent
		if err := router.Finalize(ctx, tg); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Get(ctx, client.ObjectKey{Namespace: tg.Namespace, Name: name}, &istionetworkingv1.VirtualService{}); !apierrors.IsNotFound(err) {
		t.Errorf("generated VirtualService after Finalize: %v", err)
	}
	mustWeight(t, router, tg, 0)
}

// userVS is what a user keeps in Git: a header route to a subset, and a default route with
// retries and a timeout, addressed by FQDN.
func userVS(ns string) *istionetworkingv1.VirtualService {
	fqdn := "web." + ns + ".svc.cluster.local"
	vs := &istionetworkingv1.VirtualService{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web", Labels: map[string]string{"team": "shop"}}}
	vs.Spec.Hosts = []string{fqdn}
	vs.Spec.Http = []*networking.HTTPRoute{
		{
			Name:  "beta",
			Match: []*networking.HTTPMatchRequest{{Headers: map[string]*networking.StringMatch{"x-beta": {MatchType: &networking.StringMatch_Exact{Exact: "1"}}}}},
			Route: []*networking.HTTPRouteDestination{{Destination: &networking.Destination{Host: "beta", Port: &networking.PortSelector{Number: 80}}}},
		},
		{
			Name:    "default",
			Timeout: durationpb.New(3 * time.Second),
			Retries: &networking.HTTPRetry{Attempts: 2, PerTryTimeout: durationpb.New(time.Second)},
			Route:   []*networking.HTTPRouteDestination{{Destination: &networking.Destination{Host: fqdn, Port: &networking.PortSelector{Number: 80}}}},
		},
	}
	return vs
}

func TestIstioUserVirtualService(t *testing.T) {
	router, c := newRouter(t)
	ctx := ctxT(t)
	ns := namespace(t, c)
	tg := Target{Namespace: ns, Owner: "web", StableService: "web", CanaryService: "web-canary", Port: 80}
	if err := c.Create(ctx, userVS(ns)); err != nil {
		t.Fatal(err)
	}
	original := getVS(t, c, ns, "web")

	if err := router.SetWeight(ctx, tg, 0); err != nil {
		t.Fatal(err)
	}
	if vs := getVS(t, c, ns, "web"); vs.ResourceVersion != original.ResourceVersion {
		t.Error("weight 0 changed an untouched user VirtualService")
	}

	for _, w := range []int{10, 30} {
		if err := router.SetWeight(ctx, tg, w); err != nil {
			t.Fatal(err)
		}
	}
	if user, err := router.UserRouted(ctx, tg); err != nil || !user {
		t.Errorf("UserRouted with the user's route carrying the canary = %v, %v; want true", user, err)
	}
	vs := getVS(t, c, ns, "web")
	fqdn := "." + ns + ".svc.cluster.local"
	if got := show(vs.Spec.Http); got[1] != "web"+fqdn+":80=70 web-canary"+fqdn+":80=30" || got[0] != "beta:80=0" {
		t.Errorf("routes after SetWeight(30): %q", got)
	}
	if vs.Spec.Http[1].GetRetries().GetAttempts() != 2 || vs.Spec.Http[1].GetTimeout().AsDuration() != 3*time.Second {
		t.Errorf("route settings lost: %v", vs.Spec.Http[1])
	}
	var saved []*networking.HTTPRoute
	if err := json.Unmarshal([]byte(vs.Annotations[OriginalHTTPAnnotation]), &saved); err != nil || !sameRoutes(saved, original.Spec.Http) {
		t.Errorf("saved routes %q (err %v), want the original", vs.Annotations[OriginalHTTPAnnotation], err)
	}
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "web-canary"}, &istionetworkingv1.VirtualService{}); !apierrors.IsNotFound(err) {
		t.Errorf("a VirtualService was generated although a user route exists: %v", err)
	}

	// A restarted controller, with a fresh cache, reads the weight back and restores exactly.
	restarted, _ := newRouter(t)
	mustWeight(t, restarted, tg, 30)
	for range 2 {
		if err := restarted.Finalize(ctx, tg); err != nil {
			t.Fatal(err)
		}
	}
	vs = getVS(t, c, ns, "web")
	if !sameRoutes(vs.Spec.Http, original.Spec.Http) {
		t.Errorf("restored routes %q, want %q", show(vs.Spec.Http), show(original.Spec.Http))
	}
	if _, ok := vs.Annotations[OriginalHTTPAnnotation]; ok || vs.Labels["team"] != "shop" {
		t.Errorf("after Finalize: annotations %v labels %v", vs.Annotations, vs.Labels)
	}
}

func TestIstioUserRouteAppearsMidFlight(t *testing.T) {
	router, c := newRouter(t)
	ctx := ctxT(t)
	ns := namespace(t, c)
	tg := Target{Namespace: ns, Owner: "web", StableService: "web", CanaryService: "web-canary"}
	if err := router.SetWeight(ctx, tg, 20); err != nil {
		t.Fatal(err)
	}
	getVS(t, c, ns, "web-canary")
	if err := c.Create(ctx, userVS(ns)); err != nil {
		t.Fatal(err)
	}
	// The cache may not have the new object yet; the state machine reconciles again later.
	deadline := time.Now().Add(30 * time.Second)
	for {
		if err := router.SetWeight(ctx, tg, 20); err != nil {
			t.Fatal(err)
		}
		err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "web-canary"}, &istionetworkingv1.VirtualService{})
		if apierrors.IsNotFound(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("generated VirtualService still there once a user route exists: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !hasCanary(getVS(t, c, ns, "web").Spec.Http, tg, ns) {
		t.Error("user route did not get the canary")
	}
	mustWeight(t, router, tg, 20)
}

func TestIstioSharedVirtualServiceAndConcurrentEdits(t *testing.T) {
	router, c := newRouter(t)
	ctx := ctxT(t)
	ns := namespace(t, c)
	web := Target{Namespace: ns, Owner: "web", StableService: "web", CanaryService: "web-canary"}
	api := Target{Namespace: ns, Owner: "api", StableService: "api", CanaryService: "api-canary"}
	vs := &istionetworkingv1.VirtualService{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "shop"}}
	vs.Spec.Hosts = []string{"shop.example.com"}
	vs.Spec.Gateways = []string{"public"}
	vs.Spec.Http = []*networking.HTTPRoute{r("api=60", "legacy=40"), r("web")}
	vs.Spec.Http[0].Match = []*networking.HTTPMatchRequest{{Uri: &networking.StringMatch{MatchType: &networking.StringMatch_Prefix{Prefix: "/api"}}}}
	if err := c.Create(ctx, vs); err != nil {
		t.Fatal(err)
	}
	original := getVS(t, c, ns, "shop")

	if err := router.SetWeight(ctx, web, 20); err != nil {
		t.Fatal(err)
	}
	// Another writer edits the routes; the router's next write, computed from a cache that may not
	// have seen the edit yet, must not undo it.
	edited := getVS(t, c, ns, "shop")
	edited.Spec.Http[0].Route[1].Destination.Host = "legacy-v2"
	if err := c.Update(ctx, edited); err != nil {
		t.Fatal(err)
	}
	if err := router.SetWeight(ctx, api, 50); err != nil {
		t.Fatal(err)
	}
	got := getVS(t, c, ns, "shop")
	if s := fmt.Sprint(show(got.Spec.Http)); s != "[api=30 api-canary=30 legacy-v2=40 web=80 web-canary=20]" {
		t.Errorf("shared routes %s", s)
	}
	mustWeight(t, router, web, 20)
	mustWeight(t, router, api, 50)

	if err := router.Finalize(ctx, web); err != nil {
		t.Fatal(err)
	}
	got = getVS(t, c, ns, "shop")
	if s := fmt.Sprint(show(got.Spec.Http)); s != "[api=30 api-canary=30 legacy-v2=40 web=100]" {
		t.Errorf("after finalizing web: %s", s)
	}
	if _, ok := got.Annotations[OriginalHTTPAnnotation]; !ok {
		t.Error("saved routes dropped while another canary is in flight")
	}
	if err := router.Finalize(ctx, api); err != nil {
		t.Fatal(err)
	}
	// The routes changed beyond weights while the canaries ran: the edit is kept, the canaries go.
	got = getVS(t, c, ns, "shop")
	if s := fmt.Sprint(show(got.Spec.Http)); s != "[api=60 legacy-v2=40 web=100]" {
		t.Errorf("after finalizing both: %s", s)
	}
	if got.Spec.Http[0].GetMatch()[0].GetUri().GetPrefix() != "/api" || !sameRoutesIgnoringWeights(got.Spec.Http[1:], original.Spec.Http[1:]) {
		t.Errorf("routes damaged: %v", got.Spec.Http)
	}
	if _, ok := got.Annotations[OriginalHTTPAnnotation]; ok {
		t.Error("annotation left behind")
	}
}
