package harness

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"canarygate.io/canarygate/e2e/testbed"
	"canarygate.io/canarygate/e2e/trafficsim"
)

// Options configure Start.
type Options struct {
	// Env is the test bed; it must run Prometheus.
	Env *testbed.Env
	// Dir holds the canarygate binary, its kubeconfig, certificates and log. "" uses
	// <Env.Dir>/canarygate.
	Dir string
	// Args are extra canarygate flags, after the harness' own (a later flag wins).
	Args []string
	// Binary is a canarygate binary to run instead of building ./cmd/canarygate; "" takes
	// $CANARYGATE_BINARY, and builds when that is empty too.
	Binary string
	// Logf receives progress lines; nil is silent.
	Logf func(format string, args ...any)
}

// Harness is canarygate and the traffic simulator running against a test bed.
type Harness struct {
	Env        *testbed.Env
	Client     client.WithWatch // admin, with testbed.Scheme
	Clientset  kubernetes.Interface
	Canarygate *Canarygate
	Sim        *trafficsim.Sim
	// SimURL is the simulator's control API and /metrics, http://127.0.0.1:PORT.
	SimURL string
	// Kubeconfig is canarygate's own kubeconfig (its ServiceAccount's token).
	Kubeconfig string
	// ServiceAccount is canarygate's user name, system:serviceaccount:<ns>:<name>.
	ServiceAccount string
	// Namespace is canarygate's own namespace.
	Namespace string

	install   *install
	simStop   context.CancelFunc
	simServer *http.Server
	logf      func(string, ...any)
	replicas  int // started by StartReplica, for their log directories
}

// Start installs canarygate's identity and webhook configurations from the manifests, builds and
// starts the binary under its ServiceAccount, and starts the traffic simulator; both are scraped by
// the test bed's Prometheus. On error nothing is left running.
func Start(ctx context.Context, opts Options) (h *Harness, err error) {
	env := opts.Env
	if env == nil || env.PrometheusURL == "" {
		return nil, errors.New("harness: a test bed with Prometheus is required")
	}
	logf := opts.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	dir := opts.Dir
	if dir == "" {
		dir = filepath.Join(env.Dir, "canarygate")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	repo, err := testbed.RepoRoot()
	if err != nil {
		return nil, err
	}
	admin, err := client.NewWithWatch(env.Config, client.Options{Scheme: testbed.Scheme})
	if err != nil {
		return nil, err
	}
	cs, err := env.Clientset()
	if err != nil {
		return nil, err
	}
	h = &Harness{Env: env, Client: admin, Clientset: cs, logf: logf}
	defer func() {
		if err != nil {
			_ = h.Stop()
			h = nil
		}
	}()

	// The build takes a while on a cold cache; install the manifests meanwhile.
	began := time.Now()
	type built struct {
		bin string
		err error
	}
	buildDone := make(chan built, 1)
	bin := opts.Binary
	if bin == "" {
		bin = os.Getenv("CANARYGATE_BINARY")
	}
	go func() {
		if bin != "" {
			buildDone <- built{bin, nil}
			return
		}
		bin, err := buildCanarygate(ctx, repo, dir)
		buildDone <- built{bin, err}
	}()
	in, err := loadInstall(repo)
	if err == nil {
		err = applyInstall(ctx, admin, in)
	}
	b := <-buildDone
	if err = errors.Join(err, b.err); err != nil {
		return nil, fmt.Errorf("harness: %w", err)
	}
	h.install, h.ServiceAccount, h.Namespace = in, in.userName(), in.namespace
	logf("canarygate built and its RBAC applied in %s", time.Since(began).Round(time.Millisecond))

	h.Kubeconfig = filepath.Join(dir, "kubeconfig")
	if err := writeServiceAccountKubeconfig(ctx, cs, in, env.APIServerURL, env.CAFile, h.Kubeconfig); err != nil {
		return nil, fmt.Errorf("harness: %w", err)
	}
	addrs, err := freeAddrs(4)
	if err != nil {
		return nil, err
	}
	webhookAddr, metricsAddr, probeAddr, simAddr := addrs[0], addrs[1], addrs[2], addrs[3]
	webhookHost, webhookPort, _ := net.SplitHostPort(webhookAddr)
	cg := &Canarygate{
		bin: b.bin, logDir: dir, cs: cs, admin: admin, install: in,
		WebhookURL:  "https://" + webhookAddr,
		MetricsAddr: metricsAddr, ProbeAddr: probeAddr,
	}
	cg.args = append([]string{
		"--kubeconfig=" + h.Kubeconfig,
		"--namespace=" + in.namespace,
		"--service-account=" + in.userName(),
		"--webhook-host=" + webhookHost, "--webhook-port=" + webhookPort,
		"--cert-dir=" + filepath.Join(dir, "certs"),
		"--cert-management=self", "--cert-extra-ips=127.0.0.1",
		"--mutating-webhook-configuration=" + in.mutating[0].Name,
		"--validating-webhook-configuration=" + in.validating[0].Name,
		"--metrics-bind-address=" + metricsAddr,
		"--health-probe-bind-address=" + probeAddr,
		"--prometheus-address=" + env.PrometheusURL,
		// One process: nothing to elect, and a restarted canarygate must not wait out a lease.
		"--leader-elect=false",
		// Canaries without analysis of their own run at the shortest interval the API allows.
		"--default-interval=5s",
	}, opts.Args...)
	h.Canarygate = cg
	if err := registerWebhooks(ctx, cs, in, cg.WebhookURL); err != nil {
		return nil, fmt.Errorf("harness: %w", err)
	}

	if err := h.startSim(ctx, simAddr); err != nil {
		return nil, err
	}
	if err := env.AddScrapeTarget("canarygate", metricsAddr); err != nil {
		return nil, err
	}
	began = time.Now()
	if err := cg.Start(ctx); err != nil {
		return nil, fmt.Errorf("harness: starting canarygate: %w", err)
	}
	logf("canarygate ready in %s: webhooks %s, metrics http://%s/metrics, log %s", time.Since(began).Round(time.Millisecond), cg.WebhookURL, metricsAddr, cg.LogPath())
	return h, nil
}

// startSim runs the traffic simulator in this process, serving on addr, scraped as job trafficsim.
func (h *Harness) startSim(ctx context.Context, addr string) error {
	sim, err := trafficsim.New(h.Env.Config, trafficsim.Options{})
	if err != nil {
		return err
	}
	simCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	h.simStop = cancel
	if err := sim.Start(simCtx); err != nil {
		return err
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	h.Sim, h.SimURL = sim, "http://"+addr
	h.simServer = &http.Server{Addr: addr, Handler: sim.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = h.simServer.Serve(l) }()
	return h.Env.AddScrapeTarget("trafficsim", addr)
}

// Stop stops canarygate and the simulator and removes the webhook configurations, so that the test
// bed is usable without canarygate afterwards.
func (h *Harness) Stop() error {
	var errs []error
	if h.Canarygate != nil {
		errs = append(errs, h.Canarygate.Stop())
		_ = h.Env.RemoveScrapeTarget("canarygate", h.Canarygate.MetricsAddr)
	}
	if h.simServer != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		errs = append(errs, h.simServer.Shutdown(ctx))
		cancel()
		_ = h.Env.RemoveScrapeTarget("trafficsim", h.simServer.Addr)
	}
	if h.simStop != nil {
		h.simStop()
	}
	if h.install != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		errs = append(errs, unregisterWebhooks(ctx, h.Clientset, h.install))
		cancel()
	}
	return errors.Join(errs...)
}
