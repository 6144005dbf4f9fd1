package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	networking "istio.io/api/networking/v1alpha3"
	istionetworkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"canarygate.io/canarygate/api/v1alpha1"
	"canarygate.io/canarygate/controller"
	"canarygate.io/canarygate/e2e/testbed"
	"canarygate.io/canarygate/e2e/trafficsim"
	"canarygate.io/canarygate/revision"
)

func TestMain(m *testing.M) {
	log.SetLogger(zap.New(zap.WriteTo(os.Stderr)))
	os.Exit(testbed.Run(m, testbed.Options{}))
}

const (
	app      = "web"
	canary   = "web-canary"
	rps      = 50
	waitLong = 3 * time.Minute
)

// analysisSpec is a fast Flagger-style analysis: 5s rounds, steps of 20 up to 60, two failed
// checks roll back, success rate ≥ 99% and p99 ≤ 500ms over 10s.
func analysisSpec() v1alpha1.CanaryAnalysis {
	minRate, maxDuration := 99.0, 500.0
	return v1alpha1.CanaryAnalysis{
		Interval: "5s", Threshold: 2, MaxWeight: 60, StepWeight: 20,
		Metrics: []v1alpha1.CanaryMetric{
			{Name: v1alpha1.MetricRequestSuccessRate, Interval: "10s", ThresholdRange: &v1alpha1.CanaryThresholdRange{Min: &minRate}},
			{Name: v1alpha1.MetricRequestDuration, Interval: "10s", ThresholdRange: &v1alpha1.CanaryThresholdRange{Max: &maxDuration}},
		},
	}
}

func options() controller.Options {
	return controller.Options{
		OwnNamespace:            "canarygate-system",
		MetricsServer:           testbed.Shared().PrometheusURL,
		DefaultAnalysis:         analysisSpec(),
		DefaultProgressDeadline: 2 * time.Minute,
	}
}

// startManager runs the controllers in a manager of their own until the returned stop is called.
func startManager(t *testing.T) (stop func()) {
	t.Helper()
	cfg := rest.CopyConfig(testbed.Shared().Config)
	cfg.WrapTransport = countWrites
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 testbed.Scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		// Several managers run one after the other in this process.
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := controller.Setup(mgr, options()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	return func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("manager: %v", err)
		}
	}
}

// writes records the controllers' mutating API requests per namespace ("METHOD resource").
var (
	writesMu sync.Mutex
	writes   = map[string][]string{}
)

type countingTransport struct{ next http.RoundTripper }

func (c countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method != http.MethodGet {
		if _, rest, ok := strings.Cut(req.URL.Path, "/namespaces/"); ok {
			ns, resource, _ := strings.Cut(rest, "/")
			writesMu.Lock()
			writes[ns] = append(writes[ns], req.Method+" "+resource)
			writesMu.Unlock()
		}
	}
	return c.next.RoundTrip(req)
}

func countWrites(rt http.RoundTripper) http.RoundTripper { return countingTransport{rt} }

func writesIn(ns string) []string {
	writesMu.Lock()
	defer writesMu.Unlock()
	return slices.Clone(writes[ns])
}

var (
	sharedOnce sync.Once
	simOnce    sync.Once
	sim        *trafficsim.Sim
	simErr     error
)

// sharedManager starts the manager that the parallel tests share (after the sequential ones ran).
func sharedManager(t *testing.T) {
	sharedOnce.Do(func() { startManager(t) })
}

// traffic starts the simulator once and has Prometheus scrape it.
func traffic(t *testing.T) *trafficsim.Sim {
	t.Helper()
	simOnce.Do(func() {
		env := testbed.Shared()
		sim, simErr = trafficsim.New(env.Config, trafficsim.Options{})
		if simErr != nil {
			return
		}
		if simErr = sim.Start(context.Background()); simErr != nil {
			return
		}
		var l net.Listener
		l, simErr = net.Listen("tcp", "127.0.0.1:0")
		if simErr != nil {
			return
		}
		go func() { _ = http.Serve(l, sim.Handler()) }()
		simErr = env.AddScrapeTarget("trafficsim", l.Addr().String())
	})
	if simErr != nil {
		t.Fatal(simErr)
	}
	return sim
}

var nsCounter atomic.Int32

// fixture is one app in its own opted-in namespace: Deployment and Service "web" (with Fleet and
// Helm ownership metadata, as Fleet deploys them), the simulator sending it traffic.
type fixture struct {
	t   *testing.T
	c   client.Client
	ns  string
	sim *trafficsim.Sim
}

func newFixture(t *testing.T, spec *v1alpha1.CanarySpec) *fixture {
	t.Helper()
	c, err := testbed.Shared().Client()
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, c: c, ns: fmt.Sprintf("ctl-%d-%d", time.Now().Unix()%100000, nsCounter.Add(1)), sim: traffic(t)}
	ctx := context.Background()
	f.create(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: f.ns, Annotations: map[string]string{v1alpha1.OptInKey: v1alpha1.OptInEnabled}}})
	if spec != nil {
		f.create(&v1alpha1.Canary{ObjectMeta: metav1.ObjectMeta{Name: app, Namespace: f.ns}, Spec: *spec})
	}
	f.create(&corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: app, Namespace: f.ns},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": app},
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}},
	})
	owner := map[string]string{"app": app, "objectset.rio.cattle.io/hash": "0123abcd", "app.kubernetes.io/managed-by": "Helm"}
	f.create(&appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: app, Namespace: f.ns, Labels: owner,
			Annotations: map[string]string{"meta.helm.sh/release-name": app, "objectset.rio.cattle.io/id": "default-web"}},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](2),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": app}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": app, "objectset.rio.cattle.io/hash": "0123abcd"}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: app, Image: "example.com/web:v1"}}},
			},
		},
	})
	f.eventually("the Deployment is available", func() (bool, string) {
		d := f.deployment()
		return d.Status.AvailableReplicas == 2 && d.Status.ObservedGeneration == d.Generation, fmt.Sprintf("%+v", d.Status)
	})
	if err := f.sim.SetServiceRate(f.ns, app, rps); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = f.sim.SetServiceRate(f.ns, app, 0)
		if !t.Failed() {
			_ = c.Delete(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: f.ns}})
		}
	})
	f.eventually("the Canary is initialized", func() (bool, string) {
		cg, err := f.canary()
		return err == nil && cg.Status.Phase == v1alpha1.PhaseInitialized, fmt.Sprintf("%v %+v", err, cg.Status)
	})
	return f
}

func (f *fixture) create(o client.Object) {
	f.t.Helper()
	if err := f.c.Create(context.Background(), o); err != nil {
		f.t.Fatalf("creating %T %s: %v", o, o.GetName(), err)
	}
}

func (f *fixture) key(name string) types.NamespacedName {
	return types.NamespacedName{Namespace: f.ns, Name: name}
}

func (f *fixture) deployment() *appsv1.Deployment {
	f.t.Helper()
	var d appsv1.Deployment
	if err := f.c.Get(context.Background(), f.key(app), &d); err != nil {
		f.t.Fatal(err)
	}
	return &d
}

func (f *fixture) canary() (*v1alpha1.Canary, error) {
	var c v1alpha1.Canary
	err := f.c.Get(context.Background(), f.key(app), &c)
	return &c, err
}

func (f *fixture) status() v1alpha1.CanaryStatus {
	f.t.Helper()
	c, err := f.canary()
	if err != nil {
		f.t.Fatal(err)
	}
	return c.Status
}

// eventually polls cond until it holds; on timeout it fails with cond's last description.
func (f *fixture) eventually(what string, cond func() (bool, string)) {
	f.t.Helper()
	deadline := time.Now().Add(waitLong)
	var last string
	for time.Now().Before(deadline) {
		var ok bool
		if ok, last = cond(); ok {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	f.t.Fatalf("timed out waiting until %s; last: %s", what, last)
}

func (f *fixture) waitPhase(p v1alpha1.CanaryPhase) v1alpha1.CanaryStatus {
	f.t.Helper()
	var st v1alpha1.CanaryStatus
	f.eventually("phase "+string(p), func() (bool, string) {
		st = f.status()
		return st.Phase == p, fmt.Sprintf("%s weight %d: %s", st.Phase, st.CanaryWeight, st.Message)
	})
	return st
}

func (f *fixture) waitWeight(min int) {
	f.t.Helper()
	f.eventually(fmt.Sprintf("weight ≥ %d", min), func() (bool, string) {
		st := f.status()
		return st.CanaryWeight >= min, fmt.Sprintf("%s weight %d: %s", st.Phase, st.CanaryWeight, st.Message)
	})
}

// propose does what the mutating webhook does with a Git change of the pod template: the stored
// template stays, the API server's defaulted form of the new one goes into the desired-* annotations.
// It returns the new revision and its template.
func (f *fixture) propose(image string) (string, *corev1.PodTemplateSpec) {
	f.t.Helper()
	return f.proposeTemplate(func(t *corev1.PodTemplateSpec) { t.Spec.Containers[0].Image = image })
}

// proposeTemplate is propose with any change of the template.
func (f *fixture) proposeTemplate(change func(*corev1.PodTemplateSpec)) (string, *corev1.PodTemplateSpec) {
	f.t.Helper()
	ctx := context.Background()
	var rev string
	var tmpl *corev1.PodTemplateSpec
	err := retryConflict(func() error {
		d := f.deployment()
		dry := d.DeepCopy()
		change(&dry.Spec.Template)
		if err := f.c.Update(ctx, dry, client.DryRunAll); err != nil {
			return err
		}
		canon, err := revision.Canonical(&dry.Spec.Template)
		if err != nil {
			return err
		}
		rev, tmpl = revision.HashCanonical(canon), dry.Spec.Template.DeepCopy()
		d.Annotations[v1alpha1.DesiredRevisionAnnotation] = rev
		d.Annotations[v1alpha1.DesiredTemplateAnnotation] = string(canon)
		return f.c.Update(ctx, d)
	})
	if err != nil {
		f.t.Fatal(err)
	}
	return rev, tmpl
}

// revert is the webhook's answer to Git going back to the stable template: no pending revision.
func (f *fixture) revert() {
	f.t.Helper()
	err := retryConflict(func() error {
		d := f.deployment()
		delete(d.Annotations, v1alpha1.DesiredRevisionAnnotation)
		delete(d.Annotations, v1alpha1.DesiredTemplateAnnotation)
		return f.c.Update(context.Background(), d)
	})
	if err != nil {
		f.t.Fatal(err)
	}
}

func retryConflict(fn func() error) error {
	for range 10 {
		err := fn()
		if !apierrors.IsConflict(err) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
	return errors.New("conflicts did not stop")
}

func (f *fixture) stableRevision() string {
	f.t.Helper()
	h, err := revision.Hash(&f.deployment().Spec.Template)
	if err != nil {
		f.t.Fatal(err)
	}
	return h
}

// assertCleanedUp checks that no generated object is left.
func (f *fixture) assertCleanedUp() {
	f.t.Helper()
	f.eventually("generated objects are deleted", func() (bool, string) {
		var left []string
		for _, o := range []client.Object{&appsv1.Deployment{}, &corev1.Service{}, &istionetworkingv1.VirtualService{}} {
			if err := f.c.Get(context.Background(), f.key(canary), o); err == nil {
				left = append(left, fmt.Sprintf("%T", o))
			}
		}
		return len(left) == 0, strings.Join(left, ", ")
	})
}

// vsCanaryWeight reads the canary's weight from a VirtualService; found is false when it is gone.
func (f *fixture) vsCanaryWeight(name string) (weight int, found bool) {
	var vs istionetworkingv1.VirtualService
	if err := f.c.Get(context.Background(), f.key(name), &vs); err != nil {
		return 0, false
	}
	for _, r := range vs.Spec.GetHttp() {
		for _, d := range r.GetRoute() {
			if strings.HasPrefix(d.GetDestination().GetHost(), canary) {
				weight += int(d.GetWeight())
			}
		}
	}
	return weight, true
}

func userAnalysis(mod func(*v1alpha1.CanaryAnalysis)) *v1alpha1.CanarySpec {
	a := analysisSpec()
	if mod != nil {
		mod(&a)
	}
	return &v1alpha1.CanarySpec{TargetRef: v1alpha1.TargetRef{Name: app}, Service: v1alpha1.CanaryService{Name: app, Port: 80}, Analysis: &a}
}

// TestRestartResumesAtItsWeight stops the manager mid-flight and starts a new one: the release
// resumes at the recorded weight, the VirtualService's canary weight never drops before the end, and
// the revision is promoted. It runs before the parallel tests, with managers of its own.
func TestRestartResumesAtItsWeight(t *testing.T) {
	stop := startManager(t)
	f := newFixture(t, userAnalysis(func(a *v1alpha1.CanaryAnalysis) { a.StepWeight, a.MaxWeight = 10, 50 }))
	rev, _ := f.propose("example.com/web:v2")
	f.waitWeight(20)

	var (
		mu      sync.Mutex
		weights []int
	)
	watchCtx, stopWatch := context.WithCancel(context.Background())
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for watchCtx.Err() == nil {
			if w, ok := f.vsCanaryWeight(canary); ok {
				mu.Lock()
				weights = append(weights, w)
				mu.Unlock()
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()

	stop()
	before := f.status()
	time.Sleep(6 * time.Second) // longer than an interval: the new manager finds a round overdue
	stop = startManager(t)
	defer stop()
	f.eventually("the release goes on after the restart", func() (bool, string) {
		st := f.status()
		return st.CanaryWeight > before.CanaryWeight || st.Phase != v1alpha1.PhaseProgressing, fmt.Sprintf("%+v", st)
	})
	st := f.waitPhase(v1alpha1.PhaseSucceeded)
	stopWatch()
	<-watched

	if st.StableRevision != rev || f.stableRevision() != rev {
		t.Errorf("stable revision %s (Deployment %s), want %s", st.StableRevision, f.stableRevision(), rev)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(weights) == 0 {
		t.Fatal("never saw the generated VirtualService")
	}
	for i := 1; i < len(weights); i++ {
		if weights[i] < weights[i-1] {
			t.Fatalf("the canary weight dropped from %d to %d across the restart: %v", weights[i-1], weights[i], weights)
		}
	}
	if weights[len(weights)-1] != 50 {
		t.Errorf("last weight %d before finalizing, want 50 (%v)", weights[len(weights)-1], weights)
	}
	f.assertCleanedUp()
}

// TestHappyPath: an auto-created Canary, a user VirtualService kept in Git; the weights walk to
// maxWeight, the revision is promoted, the Deployment's template is the desired one exactly, and
// the VirtualService is restored exactly.
func TestHappyPath(t *testing.T) {
	t.Parallel()
	sharedManager(t)
	f := newFixture(t, nil)
	ctx := context.Background()

	var ns corev1.Namespace
	if err := f.c.Get(ctx, types.NamespacedName{Name: f.ns}, &ns); err != nil || ns.Labels[v1alpha1.OptInKey] != v1alpha1.OptInEnabled {
		t.Errorf("namespace opt-in label not mirrored: %v %v", err, ns.Labels)
	}
	cg, err := f.canary()
	if err != nil {
		t.Fatal(err)
	}
	if cg.Labels[v1alpha1.CreatedByLabel] != v1alpha1.CreatedByController || cg.Spec.Service.Name != app || cg.Spec.Service.Port != 80 || cg.Spec.Analysis != nil {
		t.Errorf("auto-created Canary: labels %v spec %+v", cg.Labels, cg.Spec)
	}

	userRoutes := []*networking.HTTPRoute{{Route: []*networking.HTTPRouteDestination{{Destination: &networking.Destination{Host: app, Port: &networking.PortSelector{Number: 80}}}}}}
	vs := &istionetworkingv1.VirtualService{ObjectMeta: metav1.ObjectMeta{Name: app, Namespace: f.ns}}
	vs.Spec.Hosts = []string{app}
	vs.Spec.Http = userRoutes
	f.create(vs)

	oldRev := f.stableRevision()
	rev, desired := f.propose("example.com/web:v2")
	f.waitPhase(v1alpha1.PhaseProgressing)

	var cd appsv1.Deployment
	f.eventually("the canary Deployment exists", func() (bool, string) {
		err := f.c.Get(ctx, f.key(canary), &cd)
		return err == nil, fmt.Sprint(err)
	})
	labels := cd.Spec.Template.Labels
	if labels["app"] != "web-canary" || labels[v1alpha1.GeneratedForLabel] != app || labels["objectset.rio.cattle.io/hash"] != "" {
		t.Errorf("canary pod labels %v", labels)
	}
	if cd.Labels["app.kubernetes.io/managed-by"] != "" || cd.Labels["objectset.rio.cattle.io/hash"] != "" || cd.Spec.Template.Spec.Containers[0].Image != "example.com/web:v2" {
		t.Errorf("canary Deployment labels %v image %s", cd.Labels, cd.Spec.Template.Spec.Containers[0].Image)
	}

	seen := map[int]bool{}
	var st v1alpha1.CanaryStatus
	f.eventually("Succeeded", func() (bool, string) {
		st = f.status()
		if st.Phase == v1alpha1.PhaseProgressing {
			seen[st.CanaryWeight] = true
			if w, ok := f.vsCanaryWeight(app); ok && w > 0 {
				seen[-w] = true // weights as the user VirtualService carried them
			}
		}
		return st.Phase == v1alpha1.PhaseSucceeded, fmt.Sprintf("%s weight %d: %s", st.Phase, st.CanaryWeight, st.Message)
	})
	for _, w := range []int{20, 40, 60} {
		if !seen[w] {
			t.Errorf("weight %d never seen in the status (%v)", w, seen)
		}
	}
	if !seen[-60] {
		t.Errorf("the user VirtualService never carried weight 60 (%v)", seen)
	}

	d := f.deployment()
	if st.StableRevision != rev || f.stableRevision() != rev || rev == oldRev {
		t.Errorf("stable revision %s (Deployment %s), want %s", st.StableRevision, f.stableRevision(), rev)
	}
	if !equality.Semantic.DeepEqual(d.Spec.Template, *desired) {
		t.Errorf("promoted template differs from the desired one:\n%+v\n%+v", d.Spec.Template, *desired)
	}
	if d.Annotations[v1alpha1.PromotedRevisionAnnotation] != rev || d.Annotations[v1alpha1.DesiredRevisionAnnotation] != "" || d.Annotations[v1alpha1.DesiredTemplateAnnotation] != "" {
		t.Errorf("Deployment annotations after promotion: %v", d.Annotations)
	}
	if err := f.c.Get(ctx, f.key(app), vs); err != nil {
		t.Fatal(err)
	}
	if len(vs.Spec.Http) != 1 || !proto.Equal(vs.Spec.Http[0], userRoutes[0]) {
		t.Errorf("user VirtualService not restored exactly: %v", vs.Spec.Http)
	}
	if c := findCondition(st, v1alpha1.ConditionPromoted); c == nil || c.Status != metav1.ConditionTrue {
		t.Errorf("Promoted condition %+v", c)
	}
	f.assertCleanedUp()
	// An Event at every phase transition: on the Canary each phase, on the Deployment the start,
	// the promotion and the outcome. Weight steps are in the status and the log, not Events.
	for _, want := range []struct {
		kind, reason string
		count        int
	}{
		{"Canary", "Started", 1}, {"Canary", "WeightAdvanced", 0}, {"Canary", "Promoting", 1},
		{"Canary", "Finalising", 1}, {"Canary", "Promoted", 1},
		{"Deployment", "Started", 1}, {"Deployment", "Promoting", 1}, {"Deployment", "Promoted", 1},
	} {
		f.eventually(fmt.Sprintf("%d %s Event(s) on the %s", want.count, want.reason, want.kind), func() (bool, string) {
			evs := f.events(want.reason, want.kind, app)
			return len(evs) == want.count, fmt.Sprintf("%d: %+v", len(evs), evs)
		})
	}
	// Every write the controllers made for this release, Events included (the test's own writes
	// use another client). Reads come from the watch caches.
	w := writesIn(f.ns)
	t.Logf("controller writes in the namespace for one release (3 steps): %d\n%s", len(w), strings.Join(w, "\n"))
}

func findCondition(st v1alpha1.CanaryStatus, typ string) *metav1.Condition {
	for i := range st.Conditions {
		if st.Conditions[i].Type == typ {
			return &st.Conditions[i]
		}
	}
	return nil
}

// testRollback proposes a revision whose canary answers badly and expects a rollback.
func testRollback(t *testing.T, bad trafficsim.Workload, wantMessage string) {
	sharedManager(t)
	f := newFixture(t, userAnalysis(nil))
	if err := f.sim.SetWorkload(f.ns, canary, bad); err != nil {
		t.Fatal(err)
	}
	oldRev := f.stableRevision()
	rev, _ := f.propose("example.com/web:v2-bad")
	st := f.waitPhase(v1alpha1.PhaseFailed)
	if st.FailedRevision != rev || st.FailedChecks < 2 || !strings.Contains(st.Message, wantMessage) {
		t.Errorf("status after rollback: %+v", st)
	}
	if f.stableRevision() != oldRev {
		t.Error("the Deployment's template changed although the canary failed")
	}
	if d := f.deployment(); d.Annotations[v1alpha1.DesiredRevisionAnnotation] != rev {
		t.Errorf("the pending revision must stay for the webhook to hold: %v", d.Annotations)
	}
	f.assertCleanedUp()
	// Held: nothing restarts for the failed revision.
	time.Sleep(6 * time.Second)
	if st := f.status(); st.Phase != v1alpha1.PhaseFailed {
		t.Errorf("a held revision restarted: %+v", st)
	}
}

func TestSuccessRateBelowMinimumRollsBack(t *testing.T) {
	t.Parallel()
	testRollback(t, trafficsim.Workload{ErrorRatio: 0.3, LatencyMs: 5}, "request-success-rate")
}

func TestLatencyAboveMaximumRollsBack(t *testing.T) {
	t.Parallel()
	testRollback(t, trafficsim.Workload{LatencyMs: 900}, "request-duration")
}

// TestNoDataNeverPromotes: without traffic the metrics have no data; under noData: Wait the
// release holds (no failed checks, no promotion) until an abort action rolls it back.
func TestNoDataNeverPromotes(t *testing.T) {
	t.Parallel()
	sharedManager(t)
	f := newFixture(t, userAnalysis(func(a *v1alpha1.CanaryAnalysis) { a.NoData = v1alpha1.NoDataWait }))
	if err := f.sim.SetServiceRate(f.ns, app, 0); err != nil {
		t.Fatal(err)
	}
	oldRev := f.stableRevision()
	f.propose("example.com/web:v2")
	f.waitWeight(20)
	f.eventually("a round without data", func() (bool, string) {
		st := f.status()
		return strings.Contains(st.Message, "no data"), st.Message
	})
	time.Sleep(15 * time.Second) // three more rounds
	st := f.status()
	if st.Phase != v1alpha1.PhaseProgressing || st.CanaryWeight != 20 || st.FailedChecks != 0 {
		t.Errorf("without data the release must hold: %+v", st)
	}
	if f.stableRevision() != oldRev {
		t.Error("promoted without data")
	}

	f.setAction(v1alpha1.ActionAbort)
	st = f.waitPhase(v1alpha1.PhaseFailed)
	if !strings.Contains(st.Message, "aborted") {
		t.Errorf("message %q", st.Message)
	}
	f.eventually("the action annotation is removed", func() (bool, string) {
		cg, err := f.canary()
		_, has := cg.Annotations[v1alpha1.ActionAnnotation]
		return err == nil && !has, fmt.Sprint(cg.Annotations)
	})
	f.assertCleanedUp()
}

// TestNewerRevisionMidFlight: a second Git change during the analysis restarts it on the newest
// revision, which is the one promoted.
func TestNewerRevisionMidFlight(t *testing.T) {
	t.Parallel()
	sharedManager(t)
	f := newFixture(t, userAnalysis(nil))
	first, _ := f.propose("example.com/web:v2")
	f.waitWeight(40)
	second, desired := f.propose("example.com/web:v3")
	f.eventually("the analysis restarts on the newer revision", func() (bool, string) {
		st := f.status()
		return st.CanaryRevision == second, fmt.Sprintf("%+v", st)
	})
	if st := f.status(); st.CanaryWeight > 20 || st.FailedChecks != 0 {
		t.Errorf("the newer revision must start again from weight 0: %+v", st)
	}
	var cd appsv1.Deployment
	f.eventually("the canary Deployment runs the newer revision", func() (bool, string) {
		err := f.c.Get(context.Background(), f.key(canary), &cd)
		return err == nil && cd.Annotations[v1alpha1.RevisionAnnotation] == second, fmt.Sprint(err, cd.Annotations)
	})
	st := f.waitPhase(v1alpha1.PhaseSucceeded)
	if st.StableRevision != second || first == second {
		t.Errorf("promoted %s, want %s", st.StableRevision, second)
	}
	if !equality.Semantic.DeepEqual(f.deployment().Spec.Template, *desired) {
		t.Error("the promoted template is not the newest desired one")
	}
	f.assertCleanedUp()
}

// TestGitRevertMidFlight: Git goes back to the stable template during the analysis; the release is
// withdrawn, traffic and objects go back to what they were.
func TestGitRevertMidFlight(t *testing.T) {
	t.Parallel()
	sharedManager(t)
	f := newFixture(t, userAnalysis(nil))
	oldRev := f.stableRevision()
	f.propose("example.com/web:v2")
	f.waitWeight(20)
	f.revert()
	st := f.waitPhase(v1alpha1.PhaseInitialized)
	if !strings.Contains(st.Message, "withdrawn") || st.CanaryWeight != 0 || st.CanaryRevision != "" {
		t.Errorf("status after revert: %+v", st)
	}
	if f.stableRevision() != oldRev {
		t.Error("the Deployment's template changed")
	}
	f.assertCleanedUp()
}

// TestOptInBookkeeping: the namespace label follows the annotation and the CanaryPolicies, never in
// an excluded namespace; opted-out Deployments get no Canary.
func TestOptInBookkeeping(t *testing.T) {
	t.Parallel()
	sharedManager(t)
	c, err := testbed.Shared().Client()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	f := &fixture{t: t, c: c}
	suffix := fmt.Sprintf("%d-%d", time.Now().Unix()%100000, nsCounter.Add(1))
	labeled := func(name string) func() (bool, string) {
		return func() (bool, string) {
			var ns corev1.Namespace
			err := c.Get(ctx, types.NamespacedName{Name: name}, &ns)
			return err == nil && ns.Labels[v1alpha1.OptInKey] == v1alpha1.OptInEnabled, fmt.Sprint(err, ns.Labels)
		}
	}
	unlabeled := func(name string) func() (bool, string) {
		return func() (bool, string) { ok, s := labeled(name)(); return !ok, s }
	}

	annotated := "optin-a-" + suffix
	f.create(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: annotated, Annotations: map[string]string{v1alpha1.OptInKey: v1alpha1.OptInEnabled}}})
	f.eventually("the opted-in namespace is labeled", labeled(annotated))

	f.ns = annotated
	f.create(&appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "optout", Namespace: annotated, Annotations: map[string]string{v1alpha1.OptInKey: v1alpha1.OptOutDisabled}},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "optout"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "optout"}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "example.com/x:1"}}},
			},
		},
	})

	err = retryConflict(func() error {
		var ns corev1.Namespace
		if err := c.Get(ctx, types.NamespacedName{Name: annotated}, &ns); err != nil {
			return err
		}
		delete(ns.Annotations, v1alpha1.OptInKey)
		return c.Update(ctx, &ns)
	})
	if err != nil {
		t.Fatal(err)
	}
	f.eventually("the label goes with the annotation", unlabeled(annotated))

	selected := "optin-p-" + suffix
	f.create(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: selected, Labels: map[string]string{"team": suffix}}})
	f.create(&v1alpha1.CanaryPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "team-" + suffix},
		Spec:       v1alpha1.CanaryPolicySpec{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": suffix}}},
	})
	f.eventually("a namespace selected by a CanaryPolicy is labeled", labeled(selected))
	if err := c.Delete(ctx, &v1alpha1.CanaryPolicy{ObjectMeta: metav1.ObjectMeta{Name: "team-" + suffix}}); err != nil {
		t.Fatal(err)
	}
	f.eventually("the label goes with the policy", unlabeled(selected))

	// canarygate's own namespace is never managed.
	own := options().OwnNamespace
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: own, Annotations: map[string]string{v1alpha1.OptInKey: v1alpha1.OptInEnabled}}}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	if ok, labels := labeled(own)(); ok {
		t.Errorf("excluded namespace %s was labeled: %s", own, labels)
	}
	var canaries v1alpha1.CanaryList
	if err := c.List(ctx, &canaries, client.InNamespace(annotated)); err != nil || len(canaries.Items) != 0 {
		t.Errorf("an opted-out Deployment got a Canary: %v %v", err, canaries.Items)
	}
	t.Cleanup(func() {
		for _, n := range []string{annotated, selected} {
			_ = c.Delete(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: n}})
		}
	})
}

// TestUnsafeLabelsStopTheCanary: a Service that selects on a label only the new template has would
// send its traffic to the canary pods whatever canarygate does to the stable keys; the canary is not
// started and the Ready condition names the Service.
func TestUnsafeLabelsStopTheCanary(t *testing.T) {
	t.Parallel()
	sharedManager(t)
	f := newFixture(t, userAnalysis(nil))
	f.create(&corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "new-track", Namespace: f.ns},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"track": "new"},
			Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}},
	})
	f.proposeTemplate(func(t *corev1.PodTemplateSpec) {
		t.Labels["track"] = "new"
		t.Spec.Containers[0].Image = "example.com/web:v2"
	})
	f.eventually("Ready=False names the Service", func() (bool, string) {
		st := f.status()
		c := findCondition(st, v1alpha1.ConditionReady)
		return c != nil && c.Status == metav1.ConditionFalse && strings.Contains(c.Message, "new-track"), fmt.Sprintf("%+v", st)
	})
	time.Sleep(6 * time.Second)
	if st := f.status(); st.Phase != v1alpha1.PhaseInitialized {
		t.Errorf("the canary started although it is unsafe: %+v", st)
	}
	var cd appsv1.Deployment
	if err := f.c.Get(context.Background(), f.key(canary), &cd); !apierrors.IsNotFound(err) {
		t.Errorf("canary Deployment exists: %v", err)
	}
}

// hookRecorder is a Flagger-style webhook receiver: it records the payloads per path and answers
// 200, except on /confirm-promotion until opened.
type hookRecorder struct {
	mu       sync.Mutex
	calls    map[string][]map[string]any
	promoted atomic.Bool
}

func (h *hookRecorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var body map[string]any
	_ = json.NewDecoder(r.Body).Decode(&body)
	h.mu.Lock()
	if h.calls == nil {
		h.calls = map[string][]map[string]any{}
	}
	h.calls[r.URL.Path] = append(h.calls[r.URL.Path], body)
	h.mu.Unlock()
	if r.URL.Path == "/confirm-promotion" && !h.promoted.Load() {
		http.Error(w, "not yet", http.StatusForbidden)
		return
	}
	w.WriteHeader(http.StatusOK)
}

func (h *hookRecorder) count(path string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.calls[path])
}

// TestWebhooks: pre-rollout, rollout, confirm-promotion (closed, then opened), post-rollout and
// event webhooks are called with Flagger's payload at their stage.
func TestWebhooks(t *testing.T) {
	t.Parallel()
	sharedManager(t)
	hooks := &hookRecorder{}
	srv := httptest.NewServer(hooks)
	t.Cleanup(srv.Close)
	f := newFixture(t, userAnalysis(func(a *v1alpha1.CanaryAnalysis) {
		for _, typ := range []v1alpha1.HookType{v1alpha1.HookPreRollout, v1alpha1.HookRollout, v1alpha1.HookConfirmPromotion, v1alpha1.HookPostRollout, v1alpha1.HookEvent} {
			a.Webhooks = append(a.Webhooks, v1alpha1.CanaryWebhook{Name: string(typ), Type: typ, URL: srv.URL + "/" + string(typ), Timeout: "5s",
				Metadata: map[string]string{"cmd": "hey"}})
		}
	}))
	rev, _ := f.propose("example.com/web:v2")
	f.waitWeight(60)
	f.eventually("the promotion waits for its gate", func() (bool, string) {
		st := f.status()
		return hooks.count("/confirm-promotion") >= 2 && st.Phase == v1alpha1.PhaseProgressing && strings.Contains(st.Message, "approval"), st.Message
	})
	if f.stableRevision() == rev {
		t.Fatal("promoted through a closed confirm-promotion gate")
	}
	hooks.promoted.Store(true)
	f.waitPhase(v1alpha1.PhaseSucceeded)
	f.eventually("post-rollout hook called", func() (bool, string) { return hooks.count("/post-rollout") == 1, "" })

	if n := hooks.count("/pre-rollout"); n != 1 {
		t.Errorf("pre-rollout called %d times, want once", n)
	}
	if n := hooks.count("/rollout"); n < 3 {
		t.Errorf("rollout called %d times, want every round after the first", n)
	}
	if hooks.count("/event") < 4 {
		t.Errorf("event hook called %d times, want one per transition", hooks.count("/event"))
	}
	hooks.mu.Lock()
	defer hooks.mu.Unlock()
	p := hooks.calls["/rollout"][0]
	md, _ := p["metadata"].(map[string]any)
	if p["name"] != app || p["namespace"] != f.ns || p["checksum"] != rev || p["phase"] != string(v1alpha1.PhaseProgressing) || md["cmd"] != "hey" {
		t.Errorf("rollout payload %v", p)
	}
}

// TestRoutesChangedMidFlightAreSetBack: a GitOps agent re-applies the user's VirtualService from
// Git mid-flight (a plain update, as a Helm rollback does), which takes the canary destination
// out. The controller notices the change and sets the routes back to the status' weight at once,
// with a Warning Event, and at the end restores Git's routes exactly.
func TestRoutesChangedMidFlightAreSetBack(t *testing.T) {
	t.Parallel()
	sharedManager(t)
	f := newFixture(t, userAnalysis(func(a *v1alpha1.CanaryAnalysis) { a.Interval = "15s" }))
	ctx := context.Background()
	gitRoutes := []*networking.HTTPRoute{{Route: []*networking.HTTPRouteDestination{{Destination: &networking.Destination{Host: app, Port: &networking.PortSelector{Number: 80}}}}}}
	gitVS := func() *istionetworkingv1.VirtualService {
		vs := &istionetworkingv1.VirtualService{ObjectMeta: metav1.ObjectMeta{Name: app, Namespace: f.ns}}
		vs.Spec.Hosts = []string{app}
		vs.Spec.Http = []*networking.HTTPRoute{proto.Clone(gitRoutes[0]).(*networking.HTTPRoute)}
		return vs
	}
	f.create(gitVS())

	f.propose("example.com/web:v2")
	f.eventually("the user VirtualService gives the canary weight", func() (bool, string) {
		w, _ := f.vsCanaryWeight(app)
		return w > 0, fmt.Sprintf("canary weight %d", w)
	})
	err := retryConflict(func() error {
		var live istionetworkingv1.VirtualService
		if err := f.c.Get(ctx, f.key(app), &live); err != nil {
			return err
		}
		reapplied := gitVS()
		reapplied.ResourceVersion = live.ResourceVersion
		return f.c.Update(ctx, reapplied)
	})
	if err != nil {
		t.Fatal(err)
	}
	f.eventually("a RoutesRestored Warning Event", func() (bool, string) {
		evs := f.events("RoutesRestored", "Canary", app)
		return len(evs) > 0 && evs[0].Type == corev1.EventTypeWarning, fmt.Sprintf("%+v", evs)
	})
	f.eventually("the routes carry the status' weight again", func() (bool, string) {
		st := f.status()
		w, _ := f.vsCanaryWeight(app)
		return w > 0 && w == st.CanaryWeight, fmt.Sprintf("route %d, status %s %d", w, st.Phase, st.CanaryWeight)
	})
	f.waitPhase(v1alpha1.PhaseSucceeded)
	var vs istionetworkingv1.VirtualService
	if err := f.c.Get(ctx, f.key(app), &vs); err != nil {
		t.Fatal(err)
	}
	if len(vs.Spec.Http) != 1 || !proto.Equal(vs.Spec.Http[0], gitRoutes[0]) {
		t.Errorf("Git's routes not restored exactly: %v", vs.Spec.Http)
	}
}
