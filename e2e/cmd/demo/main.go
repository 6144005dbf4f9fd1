// Command demo is `make demo`: on a fresh machine it starts the local test bed, runs canarygate and
// the traffic simulator, deploys the seed's demo app the way Fleet does, pushes a new image, and
// prints the Canary and the VirtualService weights live until the release ends. Everything it
// started is stopped when it ends, Ctrl-C included.
//
//	demo [--scenario success|fail]
//
// With --scenario fail the new version answers half of its requests with errors and is rolled back.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	istionetworkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"canarygate.io/canarygate/api/v1alpha1"
	"canarygate.io/canarygate/e2e/harness"
	"canarygate.io/canarygate/e2e/testbed"
	"canarygate.io/canarygate/e2e/trafficsim"
)

const (
	newImage = "ghcr.io/stefanprodan/podinfo:6.0.1"
	// failThreshold replaces the seed's threshold of 10 in the fail scenario, so that the rollback
	// shows after three failed rounds rather than ten.
	failThreshold = 3
	// timeout bounds the release; the seed's analysis needs about a minute.
	timeout = 6 * time.Minute
)

func main() {
	scenario := flag.String("scenario", "success", "success: the new image is promoted; fail: it answers errors and is rolled back")
	flag.Parse()
	if *scenario != "success" && *scenario != "fail" {
		fmt.Fprintf(os.Stderr, "demo: --scenario must be success or fail, not %q\n", *scenario)
		os.Exit(2)
	}
	// Client watches log through controller-runtime; the demo's output is its own.
	ctrllog.SetLogger(logr.Discard())
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	if err := run(ctx, *scenario == "fail"); err != nil {
		if ctx.Err() != nil {
			fmt.Fprintln(os.Stderr, "\ninterrupted; everything the demo started is stopped")
			os.Exit(130)
		}
		fmt.Fprintf(os.Stderr, "demo: %v\n", err)
		os.Exit(1)
	}
}

// step prints a numbered progress line.
func step(format string, args ...any) {
	fmt.Printf("==> "+format+"\n", args...)
}

func run(ctx context.Context, fail bool) error {
	began := time.Now()
	step("starting a local Kubernetes control plane (etcd, kube-apiserver, controller manager, scheduler, a kwok node) and Prometheus")
	env, err := testbed.Start(ctx, testbed.Options{})
	if err != nil {
		return err
	}
	defer stopping("the test bed", env.Stop)
	step("test bed ready in %s: API server %s, Prometheus %s", since(began), env.APIServerURL, env.PrometheusURL)

	step("installing canarygate's ServiceAccount and RBAC (manifests/default), building and starting canarygate under that identity")
	h, err := harness.Start(ctx, harness.Options{Env: env})
	if err != nil {
		return err
	}
	defer stopping("canarygate and the traffic simulator", h.Stop)
	step("canarygate serves its webhooks at %s (log %s); traffic simulator at %s", h.Canarygate.WebhookURL, h.Canarygate.LogPath(), h.SimURL)

	b, err := harness.LoadDemoBundle("canary-demo-app", harness.DemoNamespace)
	if err != nil {
		return err
	}
	if fail {
		if err := unstructured.SetNestedField(harness.Object(b, "Canary", harness.DemoApp).Object, int64(failThreshold), "spec", "analysis", "threshold"); err != nil {
			return err
		}
	}
	app, err := h.NewApp(b)
	if err != nil {
		return err
	}
	step("deploying the demo app Fleet-style (namespace %s opted in with canarygate.io/canary: enabled; Deployment, Service :8080, the seed's Canary)", harness.DemoNamespace)
	if err := app.Deploy(ctx); err != nil {
		return err
	}
	if err := app.WaitInitialized(ctx, harness.DemoApp); err != nil {
		return err
	}
	step("the simulator sends %d requests/s to Service %s; Prometheus scrapes its Istio metrics every second", harness.DemoRPS, harness.DemoApp)
	if fail {
		canary := v1alpha1.GeneratedName(harness.DemoApp)
		if err := h.Sim.SetWorkload(harness.DemoNamespace, canary, trafficsim.Workload{ErrorRatio: 0.5, LatencyMs: 5}); err != nil {
			return err
		}
		step("SCENARIO=fail: the new version will answer half of its requests with HTTP 500 (threshold lowered to %d failed checks)", failThreshold)
	}

	step("pushing image %s (a Git commit, applied Fleet-style); canarygate's webhook keeps the running version and starts a canary", newImage)
	if err := app.PushImage(ctx, harness.DemoApp, newImage); err != nil {
		return err
	}
	final, err := watch(ctx, h, os.Stdout)
	if err != nil {
		return err
	}

	d, err := app.Deployment(ctx, harness.DemoApp)
	if err != nil {
		return err
	}
	report, err := app.Check(ctx)
	if err != nil {
		return err
	}
	fmt.Println()
	step("Deployment %s/%s runs %s", harness.DemoNamespace, harness.DemoApp, harness.Image(d))
	step("what Fleet reports: %s", strings.ReplaceAll(report.String(), "\n", "\n    "))
	if final.Status.Phase == v1alpha1.PhaseFailed {
		step("rolled back: all traffic is on the stable version; Git still asks for %s, so Fleet shows the Deployment modified, which is the truth", newImage)
	} else {
		step("promoted: the Deployment equals Git and nothing canarygate generated is left")
	}
	step("demo finished in %s; stopping everything", since(began))
	return nil
}

// watch prints a `kubectl get canary -w`-style row, with the VirtualService's weights, whenever either
// changes, until the release ends.
func watch(ctx context.Context, h *harness.Harness, out io.Writer) (*v1alpha1.Canary, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	// Fixed widths rather than a tabwriter: every row is printed the moment it happens.
	const rowFormat = "%-18s %-13s %-7s %-22s %s\n"
	fmt.Fprintf(out, rowFormat, "NAME", "STATUS", "WEIGHT", "LASTTRANSITIONTIME", "VIRTUALSERVICE WEIGHTS")
	last := ""
	started := false
	for {
		c, err := h.Canary(ctx, harness.DemoNamespace, harness.DemoApp)
		if err != nil {
			return nil, err
		}
		routes, err := vsWeights(ctx, h.Client)
		if err != nil {
			return nil, err
		}
		if c != nil {
			row := fmt.Sprintf(rowFormat, c.Name, c.Status.Phase, strconv.Itoa(c.Status.CanaryWeight),
				c.Status.LastTransitionTime.UTC().Format(time.RFC3339), routes)
			if row != last {
				fmt.Fprint(out, row)
				last = row
			}
			switch c.Status.Phase {
			case v1alpha1.PhaseProgressing, v1alpha1.PhasePromoting, v1alpha1.PhaseFinalising, v1alpha1.PhaseWaiting:
				started = true
			case v1alpha1.PhaseSucceeded, v1alpha1.PhaseFailed:
				if started {
					return c, nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("the release did not end within %s; see %s", timeout, h.Canarygate.LogPath())
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// vsWeights renders the generated VirtualService's first route as "host=weight ...".
func vsWeights(ctx context.Context, c client.Client) (string, error) {
	var vs istionetworkingv1.VirtualService
	err := c.Get(ctx, client.ObjectKey{Namespace: harness.DemoNamespace, Name: v1alpha1.GeneratedName(harness.DemoApp)}, &vs)
	if apierrors.IsNotFound(err) {
		return "(none: all traffic to " + harness.DemoApp + ")", nil
	}
	if err != nil {
		return "", err
	}
	if len(vs.Spec.Http) == 0 {
		return "(no routes)", nil
	}
	var parts []string
	for _, d := range vs.Spec.Http[0].Route {
		if d.Destination != nil {
			parts = append(parts, fmt.Sprintf("%s=%d", strings.SplitN(d.Destination.Host, ".", 2)[0], d.Weight))
		}
	}
	return strings.Join(parts, " "), nil
}

func stopping(what string, stop func() error) {
	if err := stop(); err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintf(os.Stderr, "demo: stopping %s: %v\n", what, err)
	}
}

func since(t time.Time) time.Duration { return time.Since(t).Round(100 * time.Millisecond) }
