// Package testbed runs a real, container-free Kubernetes control plane for integration and end-to-end
// tests: etcd, kube-apiserver, kube-controller-manager and kube-scheduler built from source, kwok faking a
// node and its pods (so Deployments really roll out and become Available), and a real Prometheus.
// Everything listens on 127.0.0.1 on free ports and runs as child processes in their own process groups.
// Tests that only query metrics can run Prometheus alone (Options.PrometheusOnly).
package testbed

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"
	"k8s.io/client-go/rest"
)

// Options configure Start.
type Options struct {
	// Dir holds data, logs, certificates and kubeconfig. "" creates a fresh temporary directory that Stop
	// removes. A given Dir is kept by Stop; it must not be inside the git checkout.
	Dir string
	// NoPrometheus skips Prometheus; it is started unless this is set.
	NoPrometheus bool
	// PrometheusOnly runs Prometheus alone, for tests that need metrics but no Kubernetes: the
	// control-plane binaries are neither built nor started, so Kubeconfig, Config, APIServerURL,
	// NodeName and CAFile stay empty and Client and Clientset fail. It excludes NoPrometheus.
	PrometheusOnly bool
	// KubeAPIQPS is kube-controller-manager's and kube-scheduler's --kube-api-qps (0 keeps their
	// defaults); the burst is twice that.
	KubeAPIQPS int
	// Logf receives progress lines; nil is silent.
	Logf func(format string, args ...any)
}

// Env is a running test bed.
type Env struct {
	Dir           string
	Kubeconfig    string       // admin kubeconfig file (client certificate in system:masters); "" with PrometheusOnly
	Config        *rest.Config // admin; QPS 100, burst 200 (tests create objects in bulk); nil with PrometheusOnly
	APIServerURL  string       // https://127.0.0.1:PORT; "" with PrometheusOnly
	PrometheusURL string       // http://127.0.0.1:PORT, "" with NoPrometheus
	NodeName      string       // the kwok node pods are scheduled to; "" with PrometheusOnly
	CAFile        string       // CA of kube-apiserver's serving certificate and of every client certificate; "" with PrometheusOnly

	opts    Options
	logf    func(string, ...any)
	tempDir bool
	logDir  string

	mu       sync.Mutex
	procs    []*process // control plane, in start order
	stopped  bool
	prom     *prometheus
	promProc *process
}

// startTimeout bounds how long Start waits for each component once the binaries exist.
const startTimeout = 3 * time.Minute

// Start starts a test bed and returns once every component is ready: the API server answers /readyz,
// controller manager and scheduler are healthy, the kwok node is Ready and untainted, the canarygate and
// Istio CRDs are Established, and Prometheus (unless disabled) is ready. With PrometheusOnly it returns once
// Prometheus is ready. On error nothing is left running.
func Start(ctx context.Context, opts Options) (*Env, error) {
	if opts.PrometheusOnly && opts.NoPrometheus {
		return nil, errors.New("test bed options PrometheusOnly and NoPrometheus exclude each other")
	}
	began := time.Now()
	e := &Env{opts: opts, logf: opts.Logf}
	if e.logf == nil {
		e.logf = func(string, ...any) {}
	}
	repo, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	if err := e.prepareDir(repo); err != nil {
		return nil, err
	}
	bins, err := locateBinaries(ctx, repo, !opts.PrometheusOnly, !opts.NoPrometheus, e.logf)
	if err != nil {
		e.removeTempDir()
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	if err := e.start(ctx, repo, bins); err != nil {
		// The logs explain most failures; include them before the directory may disappear.
		err = fmt.Errorf("%w\n%s", err, e.logTails(25))
		_ = e.Stop()
		return nil, err
	}
	if opts.PrometheusOnly {
		e.logf("Prometheus alone ready in %s: %s, dir %s", time.Since(began).Round(time.Millisecond), e.PrometheusURL, e.Dir)
		return e, nil
	}
	e.logf("test bed ready in %s: API server %s, Prometheus %q, dir %s", time.Since(began).Round(time.Millisecond), e.APIServerURL, e.PrometheusURL, e.Dir)
	return e, nil
}

// prepareDir creates the working directory, or clears the parts of a given one that a previous test bed
// left behind; nothing else in it is touched.
func (e *Env) prepareDir(repo string) error {
	if e.opts.Dir == "" {
		removeAbandonedTempDirs()
		dir, err := os.MkdirTemp("", tempDirPrefix)
		if err != nil {
			return err
		}
		e.Dir, e.tempDir = dir, true
		if err := os.WriteFile(filepath.Join(dir, ownerFile), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
			return err
		}
	} else {
		dir, err := filepath.Abs(e.opts.Dir)
		if err != nil {
			return err
		}
		if rel, err := filepath.Rel(repo, dir); err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
			return fmt.Errorf("test bed dir %s is inside the checkout %s; use a directory outside it", dir, repo)
		}
		e.Dir = dir
		if err := removeData(dir); err != nil {
			return err
		}
	}
	e.logDir = filepath.Join(e.Dir, "logs")
	return os.MkdirAll(e.logDir, 0o755)
}

func (e *Env) start(ctx context.Context, repo string, bins *binaries) error {
	if e.opts.PrometheusOnly {
		ports, err := freePorts(1)
		if err != nil {
			return err
		}
		if err := e.launchPrometheus(bins.prometheus, ports[0]); err != nil {
			return err
		}
		return e.prom.waitReady(ctx, e.promProc)
	}

	ports, err := freePorts(6)
	if err != nil {
		return err
	}
	etcdPort, etcdPeerPort, apiPort, kcmPort, schedPort, promPort := ports[0], ports[1], ports[2], ports[3], ports[4], ports[5]

	pki, err := newPKI(filepath.Join(e.Dir, "pki"))
	if err != nil {
		return fmt.Errorf("certificates: %w", err)
	}
	e.CAFile = pki.CAFile
	e.APIServerURL = "https://127.0.0.1:" + strconv.Itoa(apiPort)
	e.Kubeconfig = filepath.Join(e.Dir, "kubeconfig")
	kcmKubeconfig := filepath.Join(e.Dir, "kube-controller-manager.kubeconfig")
	schedKubeconfig := filepath.Join(e.Dir, "kube-scheduler.kubeconfig")
	for path, kp := range map[string]*keyPair{e.Kubeconfig: pki.Admin, kcmKubeconfig: pki.KCM, schedKubeconfig: pki.Sched} {
		if err := writeKubeconfig(path, e.APIServerURL, pki.CA.CertPEM, kp); err != nil {
			return err
		}
	}
	e.Config = restConfig(e.APIServerURL, pki.CA.CertPEM, pki.Admin)

	// Prometheus needs nothing from Kubernetes: it starts first and becomes ready alongside the rest.
	if !e.opts.NoPrometheus {
		if err := e.launchPrometheus(bins.prometheus, promPort); err != nil {
			return err
		}
	}

	e.logf("starting etcd on 127.0.0.1:%d", etcdPort)
	etcdURL := "http://127.0.0.1:" + strconv.Itoa(etcdPort)
	peerURL := "http://127.0.0.1:" + strconv.Itoa(etcdPeerPort)
	etcd, err := e.run("etcd", bins.etcd,
		"--name=testbed",
		"--data-dir="+filepath.Join(e.Dir, "etcd"),
		"--listen-client-urls="+etcdURL, "--advertise-client-urls="+etcdURL,
		"--listen-peer-urls="+peerURL, "--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=testbed="+peerURL,
		// Test data is disposable; skipping fsync keeps etcd fast on a busy machine.
		"--unsafe-no-fsync=true",
		"--quota-backend-bytes="+strconv.Itoa(8<<30),
		"--log-level=warn",
	)
	if err != nil {
		return err
	}
	if err := waitUntil(ctx, etcd, "etcd healthy", func(ctx context.Context) error {
		return HTTPOK(ctx, http.DefaultClient, etcdURL+"/health")
	}); err != nil {
		return err
	}

	e.logf("starting kube-apiserver on %s", e.APIServerURL)
	apiserver, err := e.run("kube-apiserver", bins.apiserver,
		"--etcd-servers="+etcdURL,
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", "--secure-port="+strconv.Itoa(apiPort),
		"--tls-cert-file="+pki.ServingCertFile, "--tls-private-key-file="+pki.ServingKeyFile,
		"--client-ca-file="+pki.CAFile,
		"--requestheader-client-ca-file="+pki.FrontProxyCAFile,
		"--requestheader-allowed-names="+frontProxyClientName,
		"--requestheader-username-headers=X-Remote-User",
		"--requestheader-group-headers=X-Remote-Group",
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
		"--proxy-client-cert-file="+pki.FrontProxyCertFile, "--proxy-client-key-file="+pki.FrontProxyKeyFile,
		"--service-account-key-file="+pki.SAPubFile,
		"--service-account-signing-key-file="+pki.SAKeyFile,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		// Only an allocation range (nothing routes there); /16 leaves room for thousands of Services.
		"--service-cluster-ip-range=10.96.0.0/16",
		// The default reconciler refuses a loopback advertise address.
		"--endpoint-reconciler-type=none",
		"--authorization-mode=Node,RBAC",
		"--allow-privileged=true",
		"--cert-dir="+filepath.Join(e.Dir, "pki", "kube-apiserver"),
	)
	if err != nil {
		return err
	}
	cs, err := newClientset(e.Config)
	if err != nil {
		return err
	}
	if err := waitUntil(ctx, apiserver, "kube-apiserver ready", func(ctx context.Context) error {
		_, err := cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		return err
	}); err != nil {
		return err
	}

	qps := func() []string {
		if e.opts.KubeAPIQPS <= 0 {
			return nil
		}
		return []string{"--kube-api-qps=" + strconv.Itoa(e.opts.KubeAPIQPS), "--kube-api-burst=" + strconv.Itoa(2*e.opts.KubeAPIQPS)}
	}
	e.logf("starting kube-controller-manager, kube-scheduler and kwok")
	kcm, err := e.run("kube-controller-manager", bins.controllerManager, append([]string{
		"--kubeconfig=" + kcmKubeconfig,
		"--authentication-kubeconfig=" + kcmKubeconfig, "--authorization-kubeconfig=" + kcmKubeconfig,
		"--bind-address=127.0.0.1", "--secure-port=" + strconv.Itoa(kcmPort),
		"--cert-dir=" + filepath.Join(e.Dir, "pki", "kube-controller-manager"),
		// Nothing renews kwok's node lease the way node lifecycle expects; Start untaints the node itself.
		"--controllers=*,-node-lifecycle-controller",
		"--use-service-account-credentials=true",
		"--service-account-private-key-file=" + pki.SAKeyFile,
		"--root-ca-file=" + pki.CAFile,
		"--cluster-signing-cert-file=" + pki.CAFile, "--cluster-signing-key-file=" + pki.CAKeyFile,
		"--leader-elect=false",
	}, qps()...)...)
	if err != nil {
		return err
	}
	sched, err := e.run("kube-scheduler", bins.scheduler, append([]string{
		"--kubeconfig=" + schedKubeconfig,
		"--authentication-kubeconfig=" + schedKubeconfig, "--authorization-kubeconfig=" + schedKubeconfig,
		"--bind-address=127.0.0.1", "--secure-port=" + strconv.Itoa(schedPort),
		"--cert-dir=" + filepath.Join(e.Dir, "pki", "kube-scheduler"),
		"--leader-elect=false",
	}, qps()...)...)
	if err != nil {
		return err
	}
	kwokArgs := []string{
		"--kubeconfig=" + e.Kubeconfig,
		"--manage-all-nodes=false",
		"--manage-nodes-with-annotation-selector=" + kwokNodeAnnotation + "=fake",
		"--manage-nodes-with-label-selector=",
		"--cidr=" + podCIDR,
		"--node-ip=127.0.0.1",
	}
	for _, stage := range bins.kwokStages {
		kwokArgs = append(kwokArgs, "--config="+stage)
	}
	kwok, err := e.run("kwok", bins.kwok, kwokArgs...)
	if err != nil {
		return err
	}

	repoCRDs := filepath.Join(repo, "manifests", "crd", "bases")
	g, gctx := errgroup.WithContext(ctx)
	began := time.Now()
	step := func(what string, f func() error) {
		g.Go(func() error {
			if err := f(); err != nil {
				return err
			}
			e.logf("%s (%s)", what, time.Since(began).Round(time.Millisecond))
			return nil
		})
	}
	step("kube-controller-manager healthy", func() error {
		return waitUntil(gctx, kcm, "kube-controller-manager healthy", func(ctx context.Context) error {
			return HTTPOK(ctx, insecureLoopbackClient, "https://127.0.0.1:"+strconv.Itoa(kcmPort)+"/healthz")
		})
	})
	step("kube-scheduler healthy", func() error {
		return waitUntil(gctx, sched, "kube-scheduler healthy", func(ctx context.Context) error {
			return HTTPOK(ctx, insecureLoopbackClient, "https://127.0.0.1:"+strconv.Itoa(schedPort)+"/healthz")
		})
	})
	step("default ServiceAccount created", func() error {
		// The service-account controllers in kube-controller-manager create it; pods need it.
		return waitUntil(gctx, kcm, "default ServiceAccount created", func(ctx context.Context) error {
			_, err := cs.CoreV1().ServiceAccounts("default").Get(ctx, "default", getOpts)
			return err
		})
	})
	step("kwok node Ready and untainted", func() error {
		name, err := createNode(gctx, cs, kwok)
		e.NodeName = name
		return err
	})
	step("CRDs Established", func() error {
		files, err := crdFiles(gctx, repo, repoCRDs)
		if err != nil {
			return err
		}
		return installCRDs(gctx, e.Config, apiserver, files)
	})
	if e.prom != nil {
		step("Prometheus ready", func() error {
			return e.prom.waitReady(gctx, e.promProc)
		})
	}
	return g.Wait()
}

// run starts a control-plane process and records it for Stop.
func (e *Env) run(name, bin string, args ...string) (*process, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.stopped {
		return nil, errors.New("test bed is stopped")
	}
	p, err := startProcess(e.logDir, name, bin, args...)
	if err != nil {
		return nil, err
	}
	e.procs = append(e.procs, p)
	return p, nil
}

// Stop stops every process the test bed started (SIGTERM to each process group, SIGKILL after a grace
// period) and removes the directory if Start created it. It is safe to call more than once.
func (e *Env) Stop() error {
	e.mu.Lock()
	if e.stopped {
		e.mu.Unlock()
		return nil
	}
	e.stopped = true
	procs := append([]*process(nil), e.procs...)
	if e.promProc != nil {
		procs = append(procs, e.promProc)
		e.promProc = nil
	}
	e.mu.Unlock()

	// Clients first, all at once, then kube-apiserver, then etcd: a server stopped under its clients makes
	// them (and the API server's own shutdown) wait out retries for seconds.
	var clients, apiserver, etcd []*process
	for _, p := range procs {
		switch p.name {
		case "etcd":
			etcd = append(etcd, p)
		case "kube-apiserver":
			apiserver = append(apiserver, p)
		default:
			clients = append(clients, p)
		}
	}
	var errs []error
	for _, tier := range [][]*process{clients, apiserver, etcd} {
		errs = append(errs, e.stopAll(tier)...)
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	e.removeTempDir()
	return nil
}

func (e *Env) stopAll(procs []*process) []error {
	var wg sync.WaitGroup
	errs := make([]error, len(procs))
	for i, p := range procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			began := time.Now()
			errs[i] = p.stop()
			e.logf("stopped %s in %s", p.name, time.Since(began).Round(time.Millisecond))
		}()
	}
	wg.Wait()
	return errs
}

const (
	tempDirPrefix = "canarygate-testbed-"
	// ownerFile in a temporary directory holds the pid of the process that created it.
	ownerFile = "owner.pid"
)

// removeAbandonedTempDirs deletes temporary test-bed directories whose creator is gone: a test binary
// killed by -timeout or SIGKILL cannot run Stop (its processes die with it, its directory stays).
// Directories of live processes, or without an owner file, are left alone.
func removeAbandonedTempDirs() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), tempDirPrefix+"*"))
	for _, dir := range dirs {
		data, err := os.ReadFile(filepath.Join(dir, ownerFile))
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
		if err != nil || pid <= 0 {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			_ = os.RemoveAll(dir)
		}
	}
}

// dataNames are the entries Start creates in its directory.
var dataNames = []string{"etcd", "pki", "prometheus", "logs", "kubeconfig", "kube-controller-manager.kubeconfig", "kube-scheduler.kubeconfig"}

func removeData(dir string) error {
	for _, name := range dataNames {
		if err := os.RemoveAll(filepath.Join(dir, name)); err != nil {
			return err
		}
	}
	return nil
}

// RemoveData deletes what a stopped test bed left in dir, then dir itself if nothing else is in it.
// Files that the test bed did not create are kept.
func RemoveData(dir string) error {
	if err := removeData(dir); err != nil {
		return err
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		if entries, rerr := os.ReadDir(dir); rerr == nil && len(entries) > 0 {
			return nil // other files remain; they are not ours to delete
		}
		return err
	}
	return nil
}

func (e *Env) removeTempDir() {
	if e.tempDir {
		_ = os.RemoveAll(e.Dir)
	}
}

// LogDir is the directory holding one <component>.log per process.
func (e *Env) LogDir() string { return e.logDir }

// logTails returns the last n lines of every component log.
func (e *Env) logTails(n int) string {
	files, _ := filepath.Glob(filepath.Join(e.logDir, "*.log"))
	var b strings.Builder
	for _, f := range files {
		fmt.Fprintf(&b, "--- last lines of %s ---\n%s\n", f, TailFile(f, n))
	}
	return b.String()
}

// waitUntil polls check until it succeeds, the context ends, or p exits (which fails at once with the
// reason instead of waiting out the timeout).
func waitUntil(ctx context.Context, p *process, what string, check func(context.Context) error) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		if done, err := p.exited(); done {
			return fmt.Errorf("waiting for %s: %s exited (%v); see %s", what, p.name, err, p.logPath)
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		last = check(cctx)
		cancel()
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w (last error: %v)", what, ctx.Err(), last)
		case <-tick.C:
		}
	}
}
