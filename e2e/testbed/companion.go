package testbed

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"k8s.io/client-go/tools/clientcmd"
)

// This file lets programs other than the test bed's own work with it: the end-to-end harness runs
// canarygate next to a test bed (Process), and `make run-local` attaches to one that
// e2e/cmd/testbed runs in the background (Attach).

// Process is a child process started with StartProcess: in its own process group, its output
// appended to a log file, and killed when the starting process dies (even by SIGKILL).
type Process struct{ p *process }

// StartProcess starts bin with args, appending its stdout and stderr to logDir/<name>.log.
func StartProcess(logDir, name, bin string, args ...string) (*Process, error) {
	p, err := startProcess(logDir, name, bin, args...)
	if err != nil {
		return nil, err
	}
	return &Process{p: p}, nil
}

// Pid is the process id.
func (p *Process) Pid() int { return p.p.cmd.Process.Pid }

// LogPath is the file the process writes to.
func (p *Process) LogPath() string { return p.p.logPath }

// Exited reports whether the process has ended, with its exit error.
func (p *Process) Exited() (bool, error) { return p.p.exited() }

// Done is closed once the process has exited.
func (p *Process) Done() <-chan struct{} { return p.p.done }

// Stop sends SIGTERM to the process group, SIGKILL after a grace period, and waits for the exit.
func (p *Process) Stop() error { return p.p.stop() }

// Kill sends SIGKILL to the process group at once, as a crash or an OOM kill would, and waits for
// the exit.
func (p *Process) Kill() error {
	if done, _ := p.p.exited(); done {
		return nil
	}
	if err := syscall.Kill(-p.Pid(), syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("kill %s: %w", p.p.name, err)
	}
	<-p.p.done
	return nil
}

// Attach returns an Env for a test bed that another process runs in dir (e2e/cmd/testbed up):
// clients, Kubeconfig and AddScrapeTarget work. The processes belong to the other program, so
// Stop stops nothing here and StopPrometheus and StartPrometheus fail. prometheusURL is the running
// Prometheus' address ("" if it runs without one).
func Attach(dir, prometheusURL string) (*Env, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	kubeconfig := filepath.Join(dir, "kubeconfig")
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("no test bed in %s: %w", dir, err)
	}
	cfg.QPS, cfg.Burst = 100, 200
	e := &Env{
		Dir:           dir,
		Kubeconfig:    kubeconfig,
		Config:        cfg,
		APIServerURL:  cfg.Host,
		PrometheusURL: prometheusURL,
		NodeName:      FakeNodeName,
		CAFile:        filepath.Join(dir, "pki", "ca.crt"),
		logf:          func(string, ...any) {},
		logDir:        filepath.Join(dir, "logs"),
	}
	if prometheusURL != "" {
		targets := filepath.Join(dir, "prometheus", "targets")
		if _, err := os.Stat(targets); err != nil {
			return nil, fmt.Errorf("test bed in %s has no Prometheus targets directory: %w", dir, err)
		}
		e.prom = &prometheus{dir: filepath.Join(dir, "prometheus"), targetsDir: targets, url: prometheusURL, attached: true}
	}
	return e, nil
}

var errAttached = errors.New("the test bed is run by another process; stop or start its Prometheus there")

// EnvFile is the file in a detached test bed's directory (e2e/cmd/testbed up) that holds
// KUBECONFIG=, PROMETHEUS_URL= and APISERVER_URL= lines.
const EnvFile = "env"

// ReadEnv reads the EnvFile of the detached test bed in dir.
func ReadEnv(dir string) (map[string]string, error) {
	data, err := os.ReadFile(filepath.Join(dir, EnvFile))
	if err != nil {
		return nil, fmt.Errorf("reading the test bed's env file: %w", err)
	}
	env := map[string]string{}
	for _, line := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			env[k] = v
		}
	}
	return env, nil
}
