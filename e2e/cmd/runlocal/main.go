// Command runlocal runs canarygate and the traffic simulator in the background against a test bed
// that `testbed up --dir DIR` started (see package canarygate.io/canarygate/e2e/harness):
//
//	runlocal up --dir DIR     start them detached; returns once canarygate serves its webhooks
//	runlocal down --dir DIR   stop them and remove their files from DIR/runlocal
//
// They also stop by themselves when the test bed's daemon goes away.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"canarygate.io/canarygate/e2e/harness"
	"canarygate.io/canarygate/e2e/testbed"
)

// Files in DIR: the test bed's (written by e2e/cmd/testbed) and ours, all under DIR/runlocal.
const (
	bedPidFile = "testbed.pid"
	subdir     = "runlocal"
	pidFile    = "runlocal.pid"
	infoFile   = "info"
	logFile    = "runlocal.log"
	daemonCmd  = "daemon"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: runlocal up|down --dir DIR")
		os.Exit(2)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	dir := fs.String("dir", "", "the test bed's directory (testbed up --dir)")
	_ = fs.Parse(os.Args[2:])
	if *dir == "" {
		fmt.Fprintln(os.Stderr, "runlocal: --dir is required")
		os.Exit(2)
	}
	abs, err := filepath.Abs(*dir)
	if err == nil {
		switch os.Args[1] {
		case "up":
			err = up(abs)
		case "down":
			err = down(abs)
		case daemonCmd:
			err = daemon(abs)
		default:
			err = fmt.Errorf("unknown command %q (want up or down)", os.Args[1])
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "runlocal: %v\n", err)
		os.Exit(1)
	}
}

func up(dir string) error {
	if _, ok := livePid(filepath.Join(dir, bedPidFile)); !ok {
		return fmt.Errorf("no test bed runs in %s: run 'make testbed-up' first", dir)
	}
	own := filepath.Join(dir, subdir)
	if pid, ok := livePid(filepath.Join(own, pidFile)); ok {
		fmt.Printf("already running (pid %d)\n", pid)
		return printInfo(own)
	}
	if err := os.MkdirAll(own, 0o755); err != nil {
		return err
	}
	_ = os.Remove(filepath.Join(own, infoFile))
	self, err := os.Executable()
	if err != nil {
		return err
	}
	log, err := os.OpenFile(filepath.Join(own, logFile), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	defer log.Close()
	cmd := exec.Command(self, daemonCmd, "--dir="+dir)
	cmd.Stdout, cmd.Stderr = log, log
	// Its own session: it outlives this command and its terminal.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	fmt.Fprintf(os.Stderr, "starting canarygate and the traffic simulator (log %s)\n", log.Name())
	for {
		select {
		case err := <-exited:
			return fmt.Errorf("the daemon exited (%v); its log ends with:\n%s", err, testbed.TailFile(log.Name(), 30))
		case <-time.After(200 * time.Millisecond):
		}
		if _, err := os.Stat(filepath.Join(own, infoFile)); err == nil {
			return printInfo(own)
		}
	}
}

// daemon runs the harness until SIGTERM or until the test bed's daemon is gone.
func daemon(dir string) error {
	env, err := testbed.ReadEnv(dir)
	if err != nil {
		return err
	}
	bed, err := testbed.Attach(dir, env["PROMETHEUS_URL"])
	if err != nil {
		return err
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer cancel()
	own := filepath.Join(dir, subdir)
	logf := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format(time.TimeOnly)}, args...)...)
	}
	h, err := harness.Start(ctx, harness.Options{Env: bed, Dir: own, Logf: logf})
	if err != nil {
		return err
	}
	defer func() {
		if err := h.Stop(); err != nil {
			logf("stopping: %v", err)
		}
		_ = os.Remove(filepath.Join(own, pidFile))
		_ = os.Remove(filepath.Join(own, infoFile))
	}()
	info := fmt.Sprintf(`kubeconfig (admin):        %s
Prometheus:                %s
traffic simulator:         %s   (GET /state; PUT /services/NS/NAME {"rps": 20}; PUT /workloads/NS/NAME {"errorRatio": 0.5})
canarygate log:            %s
canarygate metrics:        http://%s/metrics
canarygate webhooks:       %s
canarygate's kubeconfig:   %s   (its ServiceAccount %s)
`, bed.Kubeconfig, bed.PrometheusURL, h.SimURL, h.Canarygate.LogPath(), h.Canarygate.MetricsAddr, h.Canarygate.WebhookURL, h.Kubeconfig, h.ServiceAccount)
	if err := errors.Join(
		os.WriteFile(filepath.Join(own, pidFile), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644),
		os.WriteFile(filepath.Join(own, infoFile), []byte(info), 0o644),
	); err != nil {
		return err
	}
	logf("running")
	for {
		select {
		case <-ctx.Done():
			logf("stopping")
			return nil
		case <-time.After(2 * time.Second):
		}
		if _, ok := livePid(filepath.Join(dir, bedPidFile)); !ok {
			logf("the test bed is gone; stopping")
			return nil
		}
	}
}

func down(dir string) error {
	own := filepath.Join(dir, subdir)
	if pid, ok := livePid(filepath.Join(own, pidFile)); ok {
		if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
			return err
		}
		deadline := time.Now().Add(time.Minute)
		for alive(pid) {
			if time.Now().After(deadline) {
				_ = syscall.Kill(pid, syscall.SIGKILL)
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		fmt.Println("canarygate and the traffic simulator stopped")
	}
	return os.RemoveAll(own)
}

// livePid reads a pid file and reports whether that process runs.
func livePid(path string) (int, bool) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 0 {
		return 0, false
	}
	return pid, alive(pid)
}

func alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

func printInfo(own string) error {
	data, err := os.ReadFile(filepath.Join(own, infoFile))
	if err != nil {
		return err
	}
	fmt.Print(string(data))
	fmt.Println("stop everything with: make testbed-down")
	return nil
}
