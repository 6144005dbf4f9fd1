package scale

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"
	"time"

	istionetworkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"canarygate.io/canarygate/api/v1alpha1"
	"canarygate.io/canarygate/bench/apiproxy"
	"canarygate.io/canarygate/bench/stats"
	"canarygate.io/canarygate/e2e/fleet"
	"canarygate.io/canarygate/e2e/harness"
)

// RolloutOptions configure Rollout.
type RolloutOptions struct {
	N int
	// Interval, StepWeight and MaxWeight are every Canary's analysis (the issue's: 10s, 10, 50).
	Interval              time.Duration
	StepWeight, MaxWeight int
	// IdleWindow is how long requests are counted while all canaries are Initialized and nothing is
	// pending, before the rollout.
	IdleWindow time.Duration
	// Timeout bounds the wait for every Canary to succeed.
	Timeout time.Duration
	// ProfilePath, when set and the Env serves pprof, receives a CPU profile of canarygate over the
	// first ProfileSeconds of the rollout.
	ProfilePath    string
	ProfileSeconds int
	// ClientQPS is canarygate's --kube-api-qps in the run, for the report.
	ClientQPS int
	Logf      func(format string, args ...any)
}

// RolloutResult is one rollout of N canaries.
type RolloutResult struct {
	N                             int
	Succeeded, Failed, Unfinished int
	FirstStepP50, FirstStepP99    time.Duration
	LatenessP50, LatenessP99      time.Duration
	LatenessMax                   time.Duration
	SucceededP50, SucceededP99    time.Duration
	Steps                         int // weight steps observed after the first (lateness samples)
	RolloutWall                   time.Duration
	RolloutCPU                    time.Duration
	RolloutRequests               apiproxy.Counts
	IdleWindow                    time.Duration
	IdleRequests                  apiproxy.Counts
	IdleCPU                       time.Duration
	PeakRSS, RSSAfter             int64
	SetupDuration, UpdateDuration time.Duration
	Args                          []string
	// PeakRate is the busiest second of canarygate's requests during the rollout; SecondsNearLimit
	// counts the seconds with at least 90% of ClientQPS requests, canarygate's client limit (per
	// resource type) in the run.
	PeakRate         int64
	SecondsNearLimit int
	Interval         time.Duration
	ClientQPS        int
	// Queue is the canary controller's work queue and reconcile timing during the rollout.
	Queue QueueStats
	// APILatencyP50, P99 and Max are the latencies of canarygate's requests (watches aside) as the
	// counting proxy saw them during the rollout: how long the API server took to answer.
	APILatencyP50, APILatencyP99, APILatencyMax time.Duration
	// APILatencyByRequest is the p50 and p99 latency of each kind of request ("verb resource").
	APILatencyByRequest map[string][2]time.Duration
	// Profile is the file holding a CPU profile of canarygate over the rollout's first
	// ProfileSeconds, empty when none was taken.
	Profile        string
	ProfileSeconds int
}

// app is one Fleet bundle (Namespace, Deployment, Service, Canary) in its own namespace.
type app struct {
	ns, name string
	bundle   *fleet.Bundle
	// updated is when the Fleet deploy of the new image returned.
	updated time.Time
}

// trace is what the watches saw of one canary, by observation time.
type trace struct {
	weightAt  map[int]time.Time // first time the VirtualService carried each canary weight > 0
	succeeded time.Time
	failed    bool
}

// Rollout deploys N apps on env, waits until their Canaries are Initialized, counts canarygate's
// idle requests, then deploys a new image to every app at once and measures the rollouts.
func Rollout(ctx context.Context, env *Env, opts RolloutOptions) (*RolloutResult, error) {
	logf := opts.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	began := time.Now()
	applier, err := fleet.NewApplier(env.Admin)
	if err != nil {
		return nil, err
	}
	apps := make([]*app, opts.N)
	for i := range apps {
		ns := fmt.Sprintf("bench-%04d", i)
		b, err := harness.LoadDemoBundle("bench", ns)
		if err != nil {
			return nil, err
		}
		if err := setAnalysis(b, opts); err != nil {
			return nil, err
		}
		apps[i] = &app{ns: ns, bundle: b}
	}
	if err := parallel(ctx, apps, 16, func(ctx context.Context, a *app) error { return applier.Apply(ctx, a.bundle) }); err != nil {
		return nil, err
	}
	logf("%d apps applied in %s; waiting for their Canaries to be Initialized", opts.N, time.Since(began).Round(time.Second))
	if err := waitPhases(ctx, env, opts.N, 5*time.Minute+time.Duration(opts.N)*time.Second, func(c *v1alpha1.Canary) bool {
		return c.Status.Phase == v1alpha1.PhaseInitialized
	}); err != nil {
		return nil, err
	}
	res := &RolloutResult{N: opts.N, Interval: opts.Interval, SetupDuration: time.Since(began), IdleWindow: opts.IdleWindow}

	// Idle: everything Initialized, nothing pending.
	if opts.IdleWindow > 0 {
		c0, cpu0 := env.Proxy.Counts(), mustCPU(env.Pid)
		time.Sleep(opts.IdleWindow)
		res.IdleRequests = env.Proxy.Counts().Sub(c0)
		res.IdleCPU = mustCPU(env.Pid) - cpu0
		logf("idle %s: %d requests %v, CPU %s", opts.IdleWindow, res.IdleRequests.Total(), res.IdleRequests.ByVerb(), res.IdleCPU)
	}

	// The rollout: watch first, then update every app at once as Fleet would.
	rec, err := startRecording(ctx, env.H.Client)
	if err != nil {
		return nil, err
	}
	defer rec.stop()
	c0, cpu0 := env.Proxy.Counts(), mustCPU(env.Pid)
	start := time.Now()
	sampler := startQueueSampler(ctx, env.H.Canarygate.MetricsAddr)
	profiled := make(chan error, 1)
	if env.PprofAddr != "" && opts.ProfilePath != "" {
		res.Profile, res.ProfileSeconds = opts.ProfilePath, opts.ProfileSeconds
		go func() { profiled <- cpuProfile(ctx, env.PprofAddr, opts.ProfileSeconds, opts.ProfilePath) }()
	} else {
		profiled <- nil
	}
	if err := parallel(ctx, apps, 32, func(ctx context.Context, a *app) error {
		b, err := a.bundle.WithImage(harness.DemoApp, harness.DemoApp, "ghcr.io/stefanprodan/podinfo:6.0.1")
		if err != nil {
			return err
		}
		if err := applier.Apply(ctx, b); err != nil {
			return err
		}
		a.updated = time.Now()
		return nil
	}); err != nil {
		return nil, err
	}
	res.UpdateDuration = time.Since(start)
	logf("%d apps updated in %s; waiting for the canaries to finish", opts.N, res.UpdateDuration.Round(time.Millisecond))

	deadline := time.Now().Add(opts.Timeout)
	for {
		done := rec.finished()
		if done == opts.N || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		time.Sleep(time.Second)
	}
	res.RolloutWall = time.Since(start)
	res.RolloutRequests = env.Proxy.Counts().Sub(c0)
	res.ClientQPS = opts.ClientQPS
	var all []time.Duration
	res.APILatencyByRequest = map[string][2]time.Duration{}
	for key, lat := range env.Proxy.Latencies(start, time.Now()) {
		all = append(all, lat...)
		res.APILatencyByRequest[key] = [2]time.Duration{stats.Quantile(lat, 0.5), stats.Quantile(lat, 0.99)}
	}
	res.APILatencyP50, res.APILatencyP99, res.APILatencyMax = stats.Quantile(all, 0.5), stats.Quantile(all, 0.99), stats.Quantile(all, 1)
	res.PeakRate, res.SecondsNearLimit = env.Proxy.Rate(start, time.Now(), int64(opts.ClientQPS*9/10))
	res.RolloutCPU = mustCPU(env.Pid) - cpu0
	res.RSSAfter, res.PeakRSS, err = ProcMemory(env.Pid)
	if err != nil {
		return nil, err
	}
	if res.Queue, err = sampler.stop(ctx); err != nil {
		return nil, fmt.Errorf("canarygate's work queue metrics: %w", err)
	}
	if err := <-profiled; err != nil {
		return nil, fmt.Errorf("profiling canarygate: %w", err)
	}
	rec.stop()
	if err := rec.err(); err != nil {
		return nil, err
	}
	summarise(res, apps, rec.traces(), opts)
	return res, nil
}

// setAnalysis gives the bundle's Canary the experiment's analysis: no metrics, so that each round
// passes on the canary's readiness and the controller is measured without Prometheus' latency.
func setAnalysis(b *fleet.Bundle, opts RolloutOptions) error {
	c := harness.Object(b, "Canary", harness.DemoApp)
	if c == nil {
		return fmt.Errorf("the demo bundle has no Canary")
	}
	analysis := map[string]any{
		"interval":   opts.Interval.String(),
		"threshold":  int64(5),
		"stepWeight": int64(opts.StepWeight),
		"maxWeight":  int64(opts.MaxWeight),
	}
	return unstructured.SetNestedMap(c.Object, analysis, "spec", "analysis")
}

func summarise(res *RolloutResult, apps []*app, traces map[string]*trace, opts RolloutOptions) {
	var first, done, late []time.Duration
	for _, a := range apps {
		t := traces[a.ns]
		if t == nil {
			res.Unfinished++
			continue
		}
		switch {
		case t.failed:
			res.Failed++
		case t.succeeded.IsZero():
			res.Unfinished++
		default:
			res.Succeeded++
			done = append(done, t.succeeded.Sub(a.updated))
		}
		if w, ok := t.weightAt[opts.StepWeight]; ok {
			first = append(first, w.Sub(a.updated))
		}
		for w := 2 * opts.StepWeight; w <= opts.MaxWeight; w += opts.StepWeight {
			prev, ok1 := t.weightAt[w-opts.StepWeight]
			cur, ok2 := t.weightAt[w]
			if ok1 && ok2 {
				late = append(late, cur.Sub(prev)-opts.Interval)
			}
		}
	}
	res.FirstStepP50, res.FirstStepP99 = stats.Quantile(first, 0.5), stats.Quantile(first, 0.99)
	res.SucceededP50, res.SucceededP99 = stats.Quantile(done, 0.5), stats.Quantile(done, 0.99)
	res.LatenessP50, res.LatenessP99, res.LatenessMax = stats.Quantile(late, 0.5), stats.Quantile(late, 0.99), stats.Quantile(late, 1)
	res.Steps = len(late)
}

func mustCPU(pid int) time.Duration {
	d, err := ProcCPU(pid)
	if err != nil {
		return 0
	}
	return d
}

// parallel runs f for every app with at most n at a time and returns the first error.
func parallel(ctx context.Context, apps []*app, n int, f func(context.Context, *app) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sem := make(chan struct{}, n)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	for _, a := range apps {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func(a *app) {
			defer wg.Done()
			defer func() { <-sem }()
			if err := f(ctx, a); err != nil {
				mu.Lock()
				if first == nil {
					first = fmt.Errorf("%s: %w", a.ns, err)
					cancel()
				}
				mu.Unlock()
			}
		}(a)
	}
	wg.Wait()
	if first != nil {
		return first
	}
	return ctx.Err()
}

// waitPhases polls the Canaries until n of them satisfy ok.
func waitPhases(ctx context.Context, env *Env, n int, timeout time.Duration, ok func(*v1alpha1.Canary) bool) error {
	return harness.WaitFor(ctx, timeout, fmt.Sprintf("%d Canaries", n), func(ctx context.Context) (bool, string, error) {
		var list v1alpha1.CanaryList
		if err := env.H.Client.List(ctx, &list); err != nil {
			return false, err.Error(), nil
		}
		count := 0
		phases := map[v1alpha1.CanaryPhase]int{}
		for i := range list.Items {
			phases[list.Items[i].Status.Phase]++
			if ok(&list.Items[i]) {
				count++
			}
		}
		return count >= n, fmt.Sprintf("%d of %d; phases %v", count, n, phases), nil
	})
}

// recording follows every Canary and VirtualService in the cluster by watch.
type recording struct {
	mu     sync.Mutex
	tr     map[string]*trace // by namespace: one app per namespace
	errs   []error
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
}

func startRecording(ctx context.Context, c client.WithWatch) (*recording, error) {
	ctx, cancel := context.WithCancel(ctx)
	r := &recording{tr: map[string]*trace{}, cancel: cancel}
	cw, err := c.Watch(ctx, &v1alpha1.CanaryList{})
	if err != nil {
		cancel()
		return nil, err
	}
	vw, err := c.Watch(ctx, &istionetworkingv1.VirtualServiceList{})
	if err != nil {
		cw.Stop()
		cancel()
		return nil, err
	}
	r.wg.Add(2)
	go r.follow(ctx, cw, func(ev watch.Event, now time.Time) {
		cn, ok := ev.Object.(*v1alpha1.Canary)
		if !ok {
			return
		}
		t := r.trace(cn.Namespace)
		switch cn.Status.Phase {
		case v1alpha1.PhaseSucceeded:
			if t.succeeded.IsZero() {
				t.succeeded = now
			}
		case v1alpha1.PhaseFailed:
			t.failed = true
		}
	})
	go r.follow(ctx, vw, func(ev watch.Event, now time.Time) {
		vs, ok := ev.Object.(*istionetworkingv1.VirtualService)
		if !ok || ev.Type == watch.Deleted {
			return
		}
		w, named := harness.CanaryWeight(vs, harness.DemoApp+"-canary")
		if !named || w <= 0 {
			return
		}
		t := r.trace(vs.Namespace)
		if _, seen := t.weightAt[w]; !seen {
			t.weightAt[w] = now
		}
	})
	return r, nil
}

// trace must be called with r.mu held (follow holds it around record).
func (r *recording) trace(ns string) *trace {
	t := r.tr[ns]
	if t == nil {
		t = &trace{weightAt: map[int]time.Time{}}
		r.tr[ns] = t
	}
	return t
}

func (r *recording) follow(ctx context.Context, w watch.Interface, record func(watch.Event, time.Time)) {
	defer r.wg.Done()
	harness.FollowWatch(ctx, w, func(ev watch.Event) {
		now := time.Now()
		r.mu.Lock()
		record(ev, now)
		r.mu.Unlock()
	}, func(err error) {
		r.mu.Lock()
		r.errs = append(r.errs, err)
		r.mu.Unlock()
	})
}

func (r *recording) finished() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, t := range r.tr {
		if t.failed || !t.succeeded.IsZero() {
			n++
		}
	}
	return n
}

func (r *recording) traces() map[string]*trace {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.tr
}

func (r *recording) err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.errs) == 0 {
		return nil
	}
	return r.errs[0]
}

func (r *recording) stop() {
	r.once.Do(func() {
		r.cancel()
		r.wg.Wait()
	})
}

// cpuProfile saves canarygate's CPU profile over the next seconds to path.
func cpuProfile(ctx context.Context, addr string, seconds int, path string) error {
	url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", addr, seconds)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, body)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}
