package scenarios

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"canarygate.io/canarygate/api/v1alpha1"
	"canarygate.io/canarygate/e2e/fleet"
	"canarygate.io/canarygate/e2e/harness"
	"canarygate.io/canarygate/e2e/trafficsim"
)

const app = harness.DemoApp

// Scenario 1, the seed's flow: a new image applied Fleet-style walks the weights 10..50, promotes,
// and leaves the Deployment equal to Git with nothing generated left; Fleet never sees an extra
// object.
func TestSeedFlow(t *testing.T) {
	t.Parallel()
	h := setup(t)
	a := demoApp(t, h, harness.DemoNamespace, nil)
	waitInitialized(t, a, app)
	rec := record(t, h, a.Namespace, app)
	fw := watchFleet(t, a)

	push(t, a, app, newImage)
	waitPhase(t, h, a.Namespace, app, v1alpha1.PhaseSucceeded, flightTimeout)
	rec.Stop()
	fw.assertNeverDirty(t)

	if got := trimZeros(rec.Weights()); !slices.Equal(got, walk) {
		t.Errorf("VirtualService canary weights went %v, want %v", rec.Weights(), walk)
	}
	wantTail := []v1alpha1.CanaryPhase{v1alpha1.PhaseProgressing, v1alpha1.PhasePromoting, v1alpha1.PhaseFinalising, v1alpha1.PhaseSucceeded}
	if p := rec.Phases(); len(p) < len(wantTail) || !slices.Equal(p[len(p)-len(wantTail):], wantTail) {
		t.Errorf("phases went %v, want them to end with %v", p, wantTail)
	}
	if err := rec.Err(); err != nil {
		t.Error(err)
	}
	assertImage(t, a, app, newImage)
	assertFleet(t, a)
	waitNoGenerated(t, a)
}

// Scenario 2: a canary answering errors above the minimum success rate is rolled back: Failed, all
// traffic to stable, nothing generated left, and Fleet shows the Deployment modified (Git wants the
// new image, the cluster runs the old one: the truth).
func TestFailingCanary(t *testing.T) {
	t.Parallel()
	h := setup(t)
	a := demoApp(t, h, "e2e-failing", func(b *fleet.Bundle) {
		setField(t, harness.Object(b, "Canary", app), int64(2), "spec", "analysis", "threshold")
	})
	waitInitialized(t, a, app)
	if err := h.Sim.SetWorkload(a.Namespace, v1alpha1.GeneratedName(app), trafficsim.Workload{ErrorRatio: 0.5, LatencyMs: 5}); err != nil {
		t.Fatal(err)
	}
	rec := record(t, h, a.Namespace, app)

	push(t, a, app, newImage)
	c := waitPhase(t, h, a.Namespace, app, v1alpha1.PhaseFailed, flightTimeout)
	rec.Stop()
	if c.Status.CanaryWeight != 0 {
		t.Errorf("Canary weight %d after rollback, want 0", c.Status.CanaryWeight)
	}
	if w := rec.Weights(); len(w) == 0 || w[len(w)-1] != 0 {
		t.Errorf("VirtualService canary weights went %v, want them to end at 0", w)
	}
	if slices.Contains(rec.Phases(), v1alpha1.PhasePromoting) {
		t.Errorf("a failing canary reached Promoting: phases %v", rec.Phases())
	}
	waitNoGenerated(t, a)
	assertImage(t, a, app, harness.DemoImage)
	assertFleet(t, a, app)
}

// Scenario 3: Fleet's drift correction and redeploys of the same revision while the canary runs
// write nothing (the Deployment's resourceVersion stays) and disturb nothing; a forced drift
// correction (a replace) keeps the stable template and the pending revision.
func TestDriftCorrection(t *testing.T) {
	t.Parallel()
	h := setup(t)
	a := demoApp(t, h, "e2e-drift", nil)
	waitInitialized(t, a, app)
	rec := record(t, h, a.Namespace, app)

	push(t, a, app, newImage)
	before := waitWeight(t, h, a.Namespace, app, 10)
	d, err := a.Deployment(t.Context(), app)
	if err != nil {
		t.Fatal(err)
	}
	// Each write must be a no-op: the webhook diverts the template to what is stored already.
	for i := range 3 {
		for _, w := range []struct {
			what  string
			write func(context.Context, *fleet.Bundle) error
		}{{"drift correction (Helm rollback, strategic merge patch)", a.Applier.CorrectDrift}, {"redeploy (server-side apply)", a.Applier.Apply}} {
			if err := w.write(t.Context(), a.Bundle); err != nil {
				t.Fatalf("%s %d: %v", w.what, i+1, err)
			}
			now, err := a.Deployment(t.Context(), app)
			if err != nil {
				t.Fatal(err)
			}
			if now.ResourceVersion != d.ResourceVersion {
				t.Fatalf("%s %d changed the Deployment (resourceVersion %s → %s); managedFields before: %s; after: %s",
					w.what, i+1, d.ResourceVersion, now.ResourceVersion, managers(d), managers(now))
			}
		}
	}
	// correctDrift.force replaces every object by its manifest (a PUT, as Helm's rollback with
	// ForceReplace does), the Namespace first. That writes a new resourceVersion whatever
	// canarygate does (the manifest lacks the Deployment controller's revision annotation, which it
	// then puts back), but the Namespace keeps the opt-in label Git does not declare, so the
	// replaced Deployment still reaches the webhooks: the template stays the stable one and the
	// pending revision stays.
	forcing := *a.Applier
	forcing.ForceDriftCorrection = true
	for i := range 2 {
		if err := forcing.CorrectDrift(t.Context(), a.Bundle); err != nil {
			t.Fatalf("forced drift correction %d: %v", i+1, err)
		}
		var ns corev1.Namespace
		if err := h.Client.Get(t.Context(), client.ObjectKey{Name: a.Namespace}, &ns); err != nil {
			t.Fatal(err)
		}
		if ns.Labels[v1alpha1.OptInKey] != v1alpha1.OptInEnabled {
			t.Fatalf("forced drift correction %d took the opt-in label off the Namespace: %v", i+1, ns.Labels)
		}
		now, err := a.Deployment(t.Context(), app)
		if err != nil {
			t.Fatal(err)
		}
		if harness.Image(now) != harness.Image(d) || now.Annotations[v1alpha1.DesiredRevisionAnnotation] != before.Status.CanaryRevision {
			t.Fatalf("forced drift correction %d: the Deployment runs %s with pending revision %q, want %s with %q",
				i+1, harness.Image(now), now.Annotations[v1alpha1.DesiredRevisionAnnotation], harness.Image(d), before.Status.CanaryRevision)
		}
	}
	c, err := h.Canary(t.Context(), a.Namespace, app)
	if err != nil {
		t.Fatal(err)
	}
	if c.Status.CanaryRevision != before.Status.CanaryRevision || c.Status.Phase != v1alpha1.PhaseProgressing {
		t.Errorf("after drift correction: %s; before: %s", harness.DescribeCanary(c), harness.DescribeCanary(before))
	}
	waitPhase(t, h, a.Namespace, app, v1alpha1.PhaseSucceeded, flightTimeout)
	rec.Stop()
	if got := trimZeros(rec.Weights()); !slices.Equal(got, walk) {
		t.Errorf("VirtualService canary weights went %v, want %v undisturbed", rec.Weights(), walk)
	}
	assertImage(t, a, app, newImage)
	assertFleet(t, a)
}

// Scenario 4: a newer revision mid-flight takes the traffic back to stable and restarts the
// analysis on the newest revision, which is promoted.
func TestNewerRevisionMidFlight(t *testing.T) {
	t.Parallel()
	h := setup(t)
	a := demoApp(t, h, "e2e-newer", nil)
	waitInitialized(t, a, app)
	rec := record(t, h, a.Namespace, app)

	push(t, a, app, newImage)
	first := waitWeight(t, h, a.Namespace, app, 20)
	push(t, a, app, newerImage)
	c := waitPhase(t, h, a.Namespace, app, v1alpha1.PhaseSucceeded, flightTimeout)
	rec.Stop()

	if c.Status.StableRevision == first.Status.CanaryRevision {
		t.Errorf("the replaced revision %s was promoted", first.Status.CanaryRevision)
	}
	w := trimZeros(rec.Weights())
	restart := slices.Index(w, 0)
	if restart < 1 || slices.Max(w[:restart]) < 20 || !slices.Equal(w[restart+1:], walk) {
		t.Errorf("VirtualService canary weights went %v, want a walk to ≥20, back to 0, then %v", rec.Weights(), walk)
	}
	assertImage(t, a, app, newerImage)
	assertFleet(t, a)
	waitNoGenerated(t, a)
}

// Scenario 5: a Git revert mid-flight withdraws the canary: traffic back to stable, nothing
// generated left, nothing pending, and Fleet sees the Deployment in sync.
func TestGitRevertMidFlight(t *testing.T) {
	t.Parallel()
	h := setup(t)
	a := demoApp(t, h, "e2e-revert", nil)
	waitInitialized(t, a, app)
	original := a.Bundle
	rec := record(t, h, a.Namespace, app)

	push(t, a, app, newImage)
	waitWeight(t, h, a.Namespace, app, 20)
	a.Bundle = original
	if err := a.Applier.Apply(t.Context(), a.Bundle); err != nil {
		t.Fatalf("reverting: %v", err)
	}
	_, err := h.WaitCanary(t.Context(), a.Namespace, app, time.Minute, "withdrawn", func(c *v1alpha1.Canary) bool {
		return c.Status.Phase == v1alpha1.PhaseInitialized && c.Status.CanaryRevision == ""
	})
	if err != nil {
		t.Fatal(err)
	}
	waitNoGenerated(t, a)
	rec.Stop()
	if w := rec.Weights(); len(w) == 0 || w[len(w)-1] != 0 {
		t.Errorf("VirtualService canary weights went %v, want them to end at 0", w)
	}
	d, err := a.Deployment(t.Context(), app)
	if err != nil {
		t.Fatal(err)
	}
	if rev, ok := d.Annotations[v1alpha1.DesiredRevisionAnnotation]; ok {
		t.Errorf("Deployment still has a pending revision %s after the revert", rev)
	}
	assertImage(t, a, app, harness.DemoImage)
	assertFleet(t, a)
}

// Scenario 6: canarygate killed (SIGKILL) mid-flight and started again resumes at its weight: the
// traffic never drops back, and the release completes.
func TestCanarygateKilledMidFlight(t *testing.T) {
	h := setup(t)
	a := demoApp(t, h, "e2e-restart", nil)
	waitInitialized(t, a, app)
	rec := record(t, h, a.Namespace, app)

	push(t, a, app, newImage)
	before := waitWeight(t, h, a.Namespace, app, 20)
	t.Cleanup(func() { restartIfDown(t, h) })
	if err := h.Canarygate.Kill(); err != nil {
		t.Fatal(err)
	}
	// Longer than an interval: a round falls due while nobody runs it.
	time.Sleep(6 * time.Second)
	if err := h.Canarygate.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	c := waitPhase(t, h, a.Namespace, app, v1alpha1.PhaseSucceeded, flightTimeout)
	rec.Stop()
	if c.Status.StableRevision != before.Status.CanaryRevision {
		t.Errorf("promoted %s, want the revision in flight before the kill, %s", c.Status.StableRevision, before.Status.CanaryRevision)
	}
	if got := trimZeros(rec.Weights()); !slices.Equal(got, walk) {
		t.Errorf("VirtualService canary weights went %v, want %v without a glitch across the restart", rec.Weights(), walk)
	}
	assertImage(t, a, app, newImage)
	assertFleet(t, a)
}

// Scenario 7: with Prometheus down mid-flight no promotion happens: the rounds fail for lack of
// data and the weight does not advance.
func TestPrometheusDownMidFlight(t *testing.T) {
	h := setup(t)
	a := demoApp(t, h, "e2e-promdown", nil)
	waitInitialized(t, a, app)
	rec := record(t, h, a.Namespace, app)

	push(t, a, app, newImage)
	waitWeight(t, h, a.Namespace, app, 10)
	if err := h.Env.StopPrometheus(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := h.Env.StartPrometheus(); err != nil {
			t.Errorf("restarting Prometheus: %v", err)
		}
	})
	atStop, err := h.Canary(t.Context(), a.Namespace, app)
	if err != nil {
		t.Fatal(err)
	}
	// Three rounds that must all fail: the weight may take one step that was already under way.
	c, err := h.WaitCanary(t.Context(), a.Namespace, app, time.Minute, "three failed checks", func(c *v1alpha1.Canary) bool {
		return c.Status.FailedChecks >= atStop.Status.FailedChecks+3
	})
	if err != nil {
		t.Fatal(err)
	}
	rec.Stop()
	if c.Status.Phase != v1alpha1.PhaseProgressing || c.Status.CanaryWeight > atStop.Status.CanaryWeight+10 {
		t.Errorf("without Prometheus: %s; when it stopped: %s", harness.DescribeCanary(c), harness.DescribeCanary(atStop))
	}
	for _, p := range rec.Phases() {
		if p == v1alpha1.PhasePromoting || p == v1alpha1.PhaseSucceeded {
			t.Errorf("promoted without metrics: phases %v", rec.Phases())
		}
	}
	assertImage(t, a, app, harness.DemoImage)
}

// Scenario 8: with canarygate down, a Deployment update in a managed namespace is rejected (the
// webhooks' failurePolicy is Fail there, so nothing escapes the canary), while one in a namespace
// that did not opt in goes through at once (the webhooks never see it).
func TestCanarygateDown(t *testing.T) {
	h := setup(t)
	managed := demoApp(t, h, "e2e-down-managed", nil)
	waitInitialized(t, managed, app)
	plain := demoApp(t, h, "e2e-down-plain", notOptedIn)

	t.Cleanup(func() { restartIfDown(t, h) })
	if err := h.Canarygate.Stop(); err != nil {
		t.Fatal(err)
	}
	err := managed.PushImage(t.Context(), app, newImage)
	if err == nil {
		t.Fatal("a Deployment update in a managed namespace went through while canarygate was down")
	}
	if msg := err.Error(); !strings.Contains(msg, "failed calling webhook") || !strings.Contains(msg, "canarygate.io") {
		t.Errorf("the rejection does not name canarygate's webhook: %v", err)
	}
	assertImage(t, managed, app, harness.DemoImage)

	push(t, plain, app, newImage)
	if err := h.WaitRolledOut(t.Context(), plain.Namespace, app, time.Minute); err != nil {
		t.Fatal(err)
	}
	assertImage(t, plain, app, newImage)

	// Back up, the same deploy becomes a canary.
	if err := h.Canarygate.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := managed.Applier.Apply(t.Context(), managed.Bundle); err != nil {
		t.Fatalf("redeploying once canarygate is back: %v", err)
	}
	waitWeight(t, h, managed.Namespace, app, 10)
}

// Scenario 9: two Deployments of one namespace released at once, each through its own
// (automatically created) Canary.
func TestTwoDeployments(t *testing.T) {
	t.Parallel()
	h := setup(t)
	const second = app + "-b"
	a := demoApp(t, h, "e2e-two", func(b *fleet.Bundle) {
		b.Objects = slices.DeleteFunc(b.Objects, func(o *unstructured.Unstructured) bool { return o.GetKind() == "Canary" })
		b.Objects = append(b.Objects, renamed(t, harness.Object(b, "Deployment", app), second), renamed(t, harness.Object(b, "Service", app), second))
	})
	waitInitialized(t, a, app, second)
	recs := map[string]*harness.Recording{app: record(t, h, a.Namespace, app), second: record(t, h, a.Namespace, second)}

	b, err := a.Bundle.WithImage(app, app, newImage)
	if err != nil {
		t.Fatal(err)
	}
	if b, err = b.WithImage(second, second, newImage); err != nil {
		t.Fatal(err)
	}
	a.Bundle = b
	if err := a.Applier.Apply(t.Context(), b); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{app, second} {
		waitPhase(t, h, a.Namespace, name, v1alpha1.PhaseSucceeded, flightTimeout)
		recs[name].Stop()
		if got := trimZeros(recs[name].Weights()); !slices.Equal(got, walk) {
			t.Errorf("%s: VirtualService canary weights went %v, want %v", name, recs[name].Weights(), walk)
		}
		assertImage(t, a, name, newImage)
	}
	assertFleet(t, a)
	waitNoGenerated(t, a)
}

// Scenario 10: in a namespace that did not opt in, updates roll out natively and no Canary appears.
func TestNamespaceNotOptedIn(t *testing.T) {
	t.Parallel()
	h := setup(t)
	a := demoApp(t, h, "e2e-plain", notOptedIn)
	push(t, a, app, newImage)
	if err := h.WaitRolledOut(t.Context(), a.Namespace, app, time.Minute); err != nil {
		t.Fatal(err)
	}
	d, err := a.Deployment(t.Context(), app)
	if err != nil {
		t.Fatal(err)
	}
	if harness.Image(d) != newImage {
		t.Errorf("Deployment runs %s, want %s rolled out natively", harness.Image(d), newImage)
	}
	for _, k := range []string{v1alpha1.DesiredRevisionAnnotation, v1alpha1.DesiredTemplateAnnotation} {
		if v, ok := d.Annotations[k]; ok {
			t.Errorf("Deployment in a namespace that did not opt in carries %s=%s", k, v)
		}
	}
	// Two analysis intervals: long enough for the controller to have created a Canary if it would.
	time.Sleep(10 * time.Second)
	var canaries v1alpha1.CanaryList
	if err := h.Client.List(t.Context(), &canaries, client.InNamespace(a.Namespace)); err != nil {
		t.Fatal(err)
	}
	if len(canaries.Items) > 0 {
		t.Errorf("a Canary appeared in a namespace that did not opt in: %s", canaries.Items[0].Name)
	}
	assertFleet(t, a)
}

// renamed copies a Deployment or Service of the demo app under another name, with its own app label
// and selector so the two apps' pods stay apart.
func renamed(t *testing.T, o *unstructured.Unstructured, name string) *unstructured.Unstructured {
	t.Helper()
	c := o.DeepCopy()
	c.SetName(name)
	c.SetLabels(map[string]string{"app": name})
	switch c.GetKind() {
	case "Deployment":
		setField(t, c, map[string]any{"app": name}, "spec", "selector", "matchLabels")
		setField(t, c, map[string]any{"app": name}, "spec", "template", "metadata", "labels")
		containers, _, _ := unstructured.NestedSlice(c.Object, "spec", "template", "spec", "containers")
		containers[0].(map[string]any)["name"] = name
		setField(t, c, containers, "spec", "template", "spec", "containers")
	case "Service":
		setField(t, c, map[string]any{"app": name}, "spec", "selector")
	}
	return c
}

// restartIfDown starts canarygate again for the scenarios that follow, if a scenario left it down.
func restartIfDown(t *testing.T, h *harness.Harness) {
	if h.Canarygate.Pid() != 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := h.Canarygate.Start(ctx); err != nil {
		t.Errorf("restarting canarygate: %v", err)
	}
}

// managers summarises managedFields: who last wrote the object, how and when.
func managers(d *appsv1.Deployment) string {
	var out []string
	for _, m := range d.ManagedFields {
		out = append(out, fmt.Sprintf("%s/%s@%s", m.Manager, m.Operation, m.Time.UTC().Format(time.TimeOnly)))
	}
	return "[" + strings.Join(out, " ") + "]"
}
