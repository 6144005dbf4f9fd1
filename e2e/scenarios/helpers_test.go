package scenarios

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"canarygate.io/canarygate/api/v1alpha1"
	"canarygate.io/canarygate/e2e/fleet"
	"canarygate.io/canarygate/e2e/harness"
)

const (
	// newImage and newerImage are the Git commits the scenarios push.
	newImage   = "ghcr.io/stefanprodan/podinfo:6.0.1"
	newerImage = "ghcr.io/stefanprodan/podinfo:6.0.2"
	// flightTimeout bounds a whole canary release: five rounds of 5s plus promotion, on a busy machine.
	flightTimeout = 3 * time.Minute
)

// walk is the weight walk of the seed's analysis: stepWeight 10 up to maxWeight 50.
var walk = []int{10, 20, 30, 40, 50}

// demoApp deploys the seed's demo app into ns with the analysis interval shortened to 5s (the
// CRD's minimum); edit may change the bundle further before it is applied.
func demoApp(t *testing.T, h *harness.Harness, ns string, edit func(*fleet.Bundle)) *harness.App {
	t.Helper()
	name := ns + "-app"
	if ns == harness.DemoNamespace {
		name = "canary-demo-app" // the blog post's GitRepo path
	}
	b, err := harness.LoadDemoBundle(name, ns)
	if err != nil {
		t.Fatal(err)
	}
	if c := harness.Object(b, "Canary", harness.DemoApp); c != nil {
		setField(t, c, "5s", "spec", "analysis", "interval")
	}
	if edit != nil {
		edit(b)
	}
	app, err := h.NewApp(b)
	if err != nil {
		t.Fatal(err)
	}
	if err := app.Deploy(t.Context()); err != nil {
		t.Fatalf("deploying %s: %v", ns, err)
	}
	return app
}

// notOptedIn removes the opt-in annotation from the bundle's Namespace and drops its Canary.
func notOptedIn(b *fleet.Bundle) {
	b.Objects = slices.DeleteFunc(b.Objects, func(o *unstructured.Unstructured) bool { return o.GetKind() == "Canary" })
	for _, o := range b.Objects {
		if o.GetKind() == "Namespace" {
			o.SetAnnotations(nil)
		}
	}
}

func setField(t *testing.T, o *unstructured.Unstructured, value any, path ...string) {
	t.Helper()
	if err := unstructured.SetNestedField(o.Object, value, path...); err != nil {
		t.Fatal(err)
	}
}

func waitInitialized(t *testing.T, app *harness.App, names ...string) {
	t.Helper()
	if err := app.WaitInitialized(t.Context(), names...); err != nil {
		t.Fatal(err)
	}
}

func push(t *testing.T, app *harness.App, deployment, image string) {
	t.Helper()
	if err := app.PushImage(t.Context(), deployment, image); err != nil {
		t.Fatalf("pushing %s to %s: %v", image, deployment, err)
	}
}

// record follows the Canary of a Deployment and the weight of its generated VirtualService.
func record(t *testing.T, h *harness.Harness, ns, deployment string) *harness.Recording {
	t.Helper()
	gen := v1alpha1.GeneratedName(deployment)
	rec, err := h.Record(t.Context(), ns, deployment, gen, gen)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rec.Stop)
	return rec
}

func waitPhase(t *testing.T, h *harness.Harness, ns, name string, phase v1alpha1.CanaryPhase, timeout time.Duration) *v1alpha1.Canary {
	t.Helper()
	c, err := h.WaitPhase(t.Context(), ns, name, phase, timeout)
	if err != nil {
		t.Fatalf("%v\ncanarygate log: %s", err, h.Canarygate.LogPath())
	}
	return c
}

func waitWeight(t *testing.T, h *harness.Harness, ns, name string, atLeast int) *v1alpha1.Canary {
	t.Helper()
	c, err := h.WaitCanary(t.Context(), ns, name, flightTimeout, "weight ≥ "+strconv.Itoa(atLeast), func(c *v1alpha1.Canary) bool {
		return c.Status.Phase == v1alpha1.PhaseProgressing && c.Status.CanaryWeight >= atLeast
	})
	if err != nil {
		t.Fatalf("%v\ncanarygate log: %s", err, h.Canarygate.LogPath())
	}
	return c
}

// waitNoGenerated waits until canarygate's generated objects are gone from the app's namespace.
func waitNoGenerated(t *testing.T, app *harness.App) {
	t.Helper()
	err := harness.WaitFor(t.Context(), 30*time.Second, "no generated objects in "+app.Namespace, func(ctx context.Context) (bool, string, error) {
		objs, err := app.Generated(ctx)
		if err != nil {
			return false, "", err
		}
		return len(objs) == 0, "still there: " + strings.Join(objs, ", "), nil
	})
	if err != nil {
		t.Error(err)
	}
}

// trimZeros drops the leading and trailing zeros of a weight sequence: the time before the canary
// gets traffic and after it is gone.
func trimZeros(ws []int) []int {
	for len(ws) > 0 && ws[0] == 0 {
		ws = ws[1:]
	}
	for len(ws) > 0 && ws[len(ws)-1] == 0 {
		ws = ws[:len(ws)-1]
	}
	return ws
}

// fleetWatch runs Fleet's check every second while a release runs and remembers every object Fleet
// would have reported as extra or missing at any point.
type fleetWatch struct {
	mu       sync.Mutex
	problems map[string]bool
	errs     []error
	stop     context.CancelFunc
	done     chan struct{}
}

func watchFleet(t *testing.T, app *harness.App) *fleetWatch {
	ctx, cancel := context.WithCancel(t.Context())
	w := &fleetWatch{problems: map[string]bool{}, stop: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for {
			r, err := app.Check(ctx)
			w.mu.Lock()
			if err != nil && ctx.Err() == nil {
				w.errs = append(w.errs, err)
			}
			for _, e := range r.Extra {
				w.problems["extra "+e.String()] = true
			}
			for _, m := range r.Missing {
				w.problems["missing "+m.String()] = true
			}
			w.mu.Unlock()
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
		}
	}()
	t.Cleanup(w.finish)
	return w
}

func (w *fleetWatch) finish() {
	w.stop()
	<-w.done
}

// assertNeverDirty fails the test if Fleet reported anything extra or missing during the watch.
func (w *fleetWatch) assertNeverDirty(t *testing.T) {
	t.Helper()
	w.finish()
	w.mu.Lock()
	defer w.mu.Unlock()
	for p := range w.problems {
		t.Errorf("Fleet would have reported %s during the release", p)
	}
	for _, err := range w.errs {
		t.Errorf("Fleet check failed: %v", err)
	}
}

// assertClean fails unless Fleet reports exactly the given Deployments as modified, and nothing
// missing or extra.
func assertFleet(t *testing.T, app *harness.App, modified ...string) {
	t.Helper()
	r, err := app.Check(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range r.Modified {
		got = append(got, m.Kind+" "+m.Name)
	}
	var want []string
	for _, m := range modified {
		want = append(want, "Deployment "+m)
	}
	if len(r.Extra)+len(r.Missing) > 0 || !slices.Equal(got, want) {
		t.Errorf("Fleet reports:\n%s\nwant only modified: %v", r, want)
	}
}

func assertImage(t *testing.T, app *harness.App, deployment, image string) {
	t.Helper()
	d, err := app.Deployment(t.Context(), deployment)
	if err != nil {
		t.Fatal(err)
	}
	if got := harness.Image(d); got != image {
		t.Errorf("Deployment %s/%s runs %s, want %s", app.Namespace, deployment, got, image)
	}
}
