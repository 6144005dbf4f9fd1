package scale

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"canarygate.io/canarygate/api/v1alpha1"
	"canarygate.io/canarygate/bench/apiproxy"
	"canarygate.io/canarygate/e2e/testbed"
)

// IdleOptions configure Idle.
type IdleOptions struct {
	// Deployments are spread over Namespaces opted-in namespaces.
	Deployments, Namespaces int
	// Settle is the longest wait, after every Canary exists, for canarygate to stop sending
	// requests; Window is how long it is then measured.
	Settle, Window time.Duration
	Logf           func(format string, args ...any)
}

// IdleResult is canarygate with many managed Deployments and nothing pending.
type IdleResult struct {
	Deployments, Namespaces, Canaries int
	SetupDuration                     time.Duration
	Window                            time.Duration
	Requests                          apiproxy.Counts
	CPU                               time.Duration
	RSS, PeakRSS                      int64
	// CPUUnscraped is the CPU over a second window of the same length with Prometheus no longer
	// scraping canarygate; MetricsBytes and MetricsFetch are one /metrics response's size and time.
	CPUUnscraped time.Duration
	MetricsBytes int64
	MetricsFetch time.Duration
	// Heap is the Go runtime's view at the end of the window (heapMetrics).
	Heap map[string]int64
	// Reconciles are reconciles per controller during the window.
	Reconciles map[string]int64
	// CreateRetries counts Deployment creates that failed (a webhook timeout) and were retried.
	CreateRetries int
	// Settled is false when canarygate was still sending requests when Settle ran out.
	Settled bool
}

// Idle creates the Deployments (replicas 0: only the controller's caches grow, kwok need not run
// pods), waits for canarygate to have created and initialised a Canary for each, then measures a
// quiet window.
func Idle(ctx context.Context, env *Env, opts IdleOptions) (*IdleResult, error) {
	logf := opts.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	began := time.Now()
	c, err := client.New(env.Admin, client.Options{Scheme: testbed.Scheme})
	if err != nil {
		return nil, err
	}
	optIn := map[string]string{v1alpha1.OptInKey: v1alpha1.OptInEnabled}
	var items []*app
	for n := range opts.Namespaces {
		ns := fmt.Sprintf("idle-%03d", n)
		if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Annotations: optIn}}); err != nil && !apierrors.IsAlreadyExists(err) {
			return nil, err
		}
	}
	for i := range opts.Deployments {
		items = append(items, &app{ns: fmt.Sprintf("idle-%03d", i%opts.Namespaces), name: fmt.Sprintf("app-%05d", i)})
	}
	var retries atomic.Int64
	if err := parallel(ctx, items, 8, func(ctx context.Context, a *app) error {
		// canarygate's mutating webhook sees every create; on this shared machine a call can exceed
		// the webhook's 5 s timeout while canarygate is busy creating Canaries. A GitOps agent
		// retries; so does this, and the retries are reported.
		var err error
		for attempt := range 5 {
			if err = c.Create(ctx, idleDeployment(a.ns, a.name)); err == nil || apierrors.IsAlreadyExists(err) {
				return nil
			}
			retries.Add(1)
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Duration(attempt+1) * time.Second):
			}
		}
		return err
	}); err != nil {
		return nil, err
	}
	logf("%d Deployments created in %s; waiting for their Canaries", opts.Deployments, time.Since(began).Round(time.Second))
	if err := waitPhases(ctx, env, opts.Deployments, 30*time.Minute, func(c *v1alpha1.Canary) bool {
		return c.Status.Phase == v1alpha1.PhaseInitialized
	}); err != nil {
		return nil, err
	}
	res := &IdleResult{Deployments: opts.Deployments, Namespaces: opts.Namespaces, Canaries: opts.Deployments, Window: opts.Window, CreateRetries: int(retries.Load())}

	// Wait for a quiet 10 s (at most Settle): the initial wave of Canary creations and status writes
	// is over.
	settleEnd := time.Now().Add(opts.Settle)
	for time.Now().Before(settleEnd) {
		before := env.Proxy.Counts()
		time.Sleep(10 * time.Second)
		if env.Proxy.Counts().Sub(before).Total() == 0 {
			res.Settled = true
			break
		}
	}
	res.SetupDuration = time.Since(began)
	before, err := RuntimeMetrics(ctx, env.H.Canarygate.MetricsAddr)
	if err != nil {
		return nil, err
	}
	c0, cpu0 := env.Proxy.Counts(), mustCPU(env.Pid)
	time.Sleep(opts.Window)
	res.Requests = env.Proxy.Counts().Sub(c0)
	res.CPU = mustCPU(env.Pid) - cpu0
	res.RSS, res.PeakRSS, err = ProcMemory(env.Pid)
	if err != nil {
		return nil, err
	}
	after, err := RuntimeMetrics(ctx, env.H.Canarygate.MetricsAddr)
	if err != nil {
		return nil, err
	}
	res.Heap, res.Reconciles = map[string]int64{}, map[string]int64{}
	for k, v := range after {
		if c, ok := strings.CutPrefix(k, "reconciles "); ok {
			res.Reconciles[c] = v - before[k]
		} else {
			res.Heap[k] = v
		}
	}
	// The test bed's Prometheus scrapes canarygate every second; canarygate exports gauges per
	// Canary. Measure once what a scrape costs, then a second window without the scrape.
	fetchStart := time.Now()
	if res.MetricsBytes, err = metricsSize(ctx, env.H.Canarygate.MetricsAddr); err != nil {
		return nil, err
	}
	res.MetricsFetch = time.Since(fetchStart)
	if err := env.Bed.RemoveScrapeTarget("canarygate", env.H.Canarygate.MetricsAddr); err != nil {
		return nil, err
	}
	time.Sleep(15 * time.Second) // Prometheus re-reads its file targets
	cpu1 := mustCPU(env.Pid)
	time.Sleep(opts.Window)
	res.CPUUnscraped = mustCPU(env.Pid) - cpu1
	logf("idle with %d Deployments: %d requests in %s, CPU %s, RSS %d MiB (peak %d MiB)", opts.Deployments, res.Requests.Total(), opts.Window, res.CPU, res.RSS>>20, res.PeakRSS>>20)
	return res, nil
}

func idleDeployment(ns, name string) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(int32(0)),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: name, Image: "ghcr.io/stefanprodan/podinfo:6.0.0",
					Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
				}}},
			},
		},
	}
}
