package testbed

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
)

// prometheus is the test bed's Prometheus: one config file, a TSDB and a file_sd directory under dir.
type prometheus struct {
	bin        string
	dir        string
	targetsDir string
	url        string
	args       []string
	attached   bool // run by another process (Attach): never started or stopped here
}

// promConfig scrapes every second so tests see new samples quickly; targets come from file_sd files that
// Prometheus re-reads on change, so adding one needs no restart.
const promConfig = `global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: prometheus
    static_configs:
      - targets: [%q]
  - job_name: testbed
    file_sd_configs:
      - files: [%q]
        refresh_interval: 1s
`

func newPrometheus(dir, bin string, port int) (*prometheus, error) {
	hostPort := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	p := &prometheus{bin: bin, dir: dir, targetsDir: filepath.Join(dir, "targets"), url: "http://" + hostPort}
	if err := os.MkdirAll(p.targetsDir, 0o755); err != nil {
		return nil, err
	}
	configFile := filepath.Join(dir, "prometheus.yml")
	config := fmt.Sprintf(promConfig, hostPort, filepath.Join(p.targetsDir, "*.json"))
	if err := os.WriteFile(configFile, []byte(config), 0o644); err != nil {
		return nil, err
	}
	p.args = []string{
		"--config.file=" + configFile,
		"--storage.tsdb.path=" + filepath.Join(dir, "data"),
		"--storage.tsdb.retention.time=1d",
		"--web.listen-address=" + hostPort,
		"--web.enable-lifecycle",
	}
	return p, nil
}

// launchPrometheus starts the test bed's Prometheus on port without waiting for it to be ready.
func (e *Env) launchPrometheus(bin string, port int) error {
	prom, err := newPrometheus(filepath.Join(e.Dir, "prometheus"), bin, port)
	if err != nil {
		return err
	}
	e.prom, e.PrometheusURL = prom, prom.url
	e.promProc, err = prom.start(e.logDir)
	return err
}

func (p *prometheus) start(logDir string) (*process, error) {
	return startProcess(logDir, "prometheus", p.bin, p.args...)
}

func (p *prometheus) waitReady(ctx context.Context, proc *process) error {
	return waitUntil(ctx, proc, "Prometheus ready", func(ctx context.Context) error {
		return HTTPOK(ctx, http.DefaultClient, p.url+"/-/ready")
	})
}

// targetGroup is one entry of a file_sd file.
type targetGroup struct {
	Targets []string          `json:"targets"`
	Labels  map[string]string `json:"labels"`
}

var jobFileName = regexp.MustCompile(`[^A-Za-z0-9_.-]`)

// AddScrapeTarget makes Prometheus scrape http://hostPort/metrics every second with label job=job.
// Prometheus notices the change within about a second, without a restart; adding a target twice is a
// no-op.
func (e *Env) AddScrapeTarget(job, hostPort string) error {
	return e.editTargets(job, hostPort, func(targets []string) []string {
		if slices.Contains(targets, hostPort) {
			return targets
		}
		return append(targets, hostPort)
	})
}

// RemoveScrapeTarget stops scraping hostPort for job; removing an unknown target is a no-op.
func (e *Env) RemoveScrapeTarget(job, hostPort string) error {
	return e.editTargets(job, hostPort, func(targets []string) []string {
		return slices.DeleteFunc(targets, func(t string) bool { return t == hostPort })
	})
}

func (e *Env) editTargets(job, hostPort string, edit func([]string) []string) error {
	if job == "" {
		return errors.New("scrape target needs a job name")
	}
	if _, _, err := net.SplitHostPort(hostPort); err != nil {
		return fmt.Errorf("scrape target %q: %w", hostPort, err)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.prom == nil {
		return errors.New("test bed runs without Prometheus")
	}
	// One file per job; the name is only an identifier, the job label carries the exact job.
	file := filepath.Join(e.prom.targetsDir, jobFileName.ReplaceAllString(job, "_")+".json")
	var groups []targetGroup
	if data, err := os.ReadFile(file); err == nil {
		if err := json.Unmarshal(data, &groups); err != nil {
			return fmt.Errorf("read %s: %w", file, err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	var targets []string
	for _, g := range groups {
		if g.Labels["job"] == job {
			targets = append(targets, g.Targets...)
		}
	}
	groups = slices.DeleteFunc(groups, func(g targetGroup) bool { return g.Labels["job"] == job })
	if targets = edit(targets); len(targets) > 0 {
		groups = append(groups, targetGroup{Targets: targets, Labels: map[string]string{"job": job}})
	}
	data, err := json.MarshalIndent(groups, "", "  ")
	if err != nil {
		return err
	}
	// Written aside and renamed so Prometheus never reads a half-written file.
	tmp := file + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, file)
}

// StopPrometheus stops Prometheus, keeping its data and port, to simulate an outage. Stopping a stopped
// Prometheus is a no-op.
func (e *Env) StopPrometheus() error {
	e.mu.Lock()
	if e.prom != nil && e.prom.attached {
		e.mu.Unlock()
		return errAttached
	}
	proc := e.promProc
	e.promProc = nil
	prom := e.prom
	e.mu.Unlock()
	if prom == nil {
		return errors.New("test bed runs without Prometheus")
	}
	if proc == nil {
		return nil
	}
	return proc.stop()
}

// StartPrometheus starts Prometheus again after StopPrometheus, on the same port with the same data and
// targets, and waits until it is ready. Starting a running Prometheus is a no-op.
func (e *Env) StartPrometheus() error {
	e.mu.Lock()
	if e.prom != nil && e.prom.attached {
		e.mu.Unlock()
		return errAttached
	}
	if e.prom == nil {
		e.mu.Unlock()
		return errors.New("test bed runs without Prometheus")
	}
	if e.stopped {
		e.mu.Unlock()
		return errors.New("test bed is stopped")
	}
	if e.promProc != nil {
		e.mu.Unlock()
		return nil
	}
	proc, err := e.prom.start(e.logDir)
	if err != nil {
		e.mu.Unlock()
		return err
	}
	e.promProc = proc
	e.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	if err := e.prom.waitReady(ctx, proc); err != nil {
		return fmt.Errorf("%w\n%s", err, TailFile(proc.logPath, 25))
	}
	return nil
}
