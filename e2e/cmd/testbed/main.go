// Command testbed runs the local test bed (see package canarygate.io/canarygate/e2e/testbed) in the
// background for manual work and demos:
//
//	testbed up --dir DIR       start it detached; returns once it is ready
//	testbed status --dir DIR   report whether it runs and is healthy
//	testbed down --dir DIR     stop it and everything it started, and remove its data
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"canarygate.io/canarygate/e2e/testbed"
)

// Files the command keeps in DIR next to the test bed's own.
const (
	pidFile   = "testbed.pid"
	daemonLog = "testbed.log"
)

// daemonCmd is the hidden subcommand the background process runs; readyFD carries its verdict to `up`.
const (
	daemonCmd = "daemon"
	readyFD   = 3
)

const usage = `Usage: testbed <command> [flags]

Runs the local Kubernetes test bed (etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
kwok with a fake node, Prometheus) on 127.0.0.1 in the background.

Commands:
  up       start the test bed detached and wait until it is ready; prints the kubeconfig path and the
           Prometheus URL and writes DIR/env (KUBECONFIG=, PROMETHEUS_URL=, APISERVER_URL=). If it
           already runs in DIR, prints that one.
  status   report whether the test bed in DIR runs and answers; exit status 1 if not.
  down     stop the test bed in DIR and every process it started, and remove its data.

Run 'testbed <command> --help' for the command's flags.
`

func main() {
	if len(os.Args) < 2 || os.Args[1] == "-h" || os.Args[1] == "--help" || os.Args[1] == "help" {
		fmt.Fprint(os.Stderr, usage)
		if len(os.Args) < 2 {
			os.Exit(2)
		}
		return
	}
	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "up":
		err = up(args)
	case "status":
		err = status(args)
	case "down":
		err = down(args)
	case daemonCmd:
		err = daemon(args)
	default:
		fmt.Fprintf(os.Stderr, "testbed: unknown command %q\n\n%s", cmd, usage)
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "testbed: %v\n", err)
		os.Exit(1)
	}
}

// config is what every command needs to know.
type config struct {
	dir          string
	noPrometheus bool
	kubeAPIQPS   int
}

func parseFlags(name string, args []string, withStartFlags bool) (*config, error) {
	c := &config{}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.StringVar(&c.dir, "dir", "", "directory for the test bed's data, logs, certificates and kubeconfig (required; outside the git checkout)")
	if withStartFlags {
		fs.BoolVar(&c.noPrometheus, "no-prometheus", false, "do not start Prometheus")
		fs.IntVar(&c.kubeAPIQPS, "kube-api-qps", 0, "--kube-api-qps for kube-controller-manager and kube-scheduler, burst twice that (0 keeps their defaults)")
	}
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: testbed %s --dir DIR [flags]\n\nFlags:\n", name)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("%s: unexpected arguments %q", name, fs.Args())
	}
	if c.dir == "" {
		return nil, fmt.Errorf("%s: --dir is required", name)
	}
	dir, err := filepath.Abs(c.dir)
	if err != nil {
		return nil, err
	}
	c.dir = dir
	return c, nil
}

// readyMsg is the daemon's single line to `up`.
type readyMsg struct {
	Error         string `json:"error,omitempty"`
	Kubeconfig    string `json:"kubeconfig,omitempty"`
	PrometheusURL string `json:"prometheusURL,omitempty"`
	APIServerURL  string `json:"apiServerURL,omitempty"`
}

func up(args []string) error {
	c, err := parseFlags("up", args, true)
	if err != nil {
		return err
	}
	if pid, ok := runningPID(c.dir); ok {
		fmt.Printf("test bed already running in %s (pid %d)\n", c.dir, pid)
		return printEnv(c.dir)
	}
	if err := os.MkdirAll(c.dir, 0o755); err != nil {
		return err
	}
	_ = os.Remove(filepath.Join(c.dir, pidFile)) // stale

	self, err := os.Executable()
	if err != nil {
		return err
	}
	logFile, err := os.OpenFile(filepath.Join(c.dir, daemonLog), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	defer logFile.Close()
	readR, readyW, err := os.Pipe()
	if err != nil {
		return err
	}
	defer readR.Close()
	cmd := exec.Command(self, daemonCmd, "--dir="+c.dir, "--no-prometheus="+strconv.FormatBool(c.noPrometheus), "--kube-api-qps="+strconv.Itoa(c.kubeAPIQPS))
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.ExtraFiles = []*os.File{readyW} // becomes fd 3
	// Its own session: the daemon outlives this command and its terminal.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start the test bed daemon: %w", err)
	}
	readyW.Close() // only the daemon holds the write end now: EOF means it is done or dead
	fmt.Fprintf(os.Stderr, "starting the test bed in %s (daemon pid %d, log %s)\n", c.dir, cmd.Process.Pid, logFile.Name())

	// Ctrl-C while waiting stops the half-started test bed rather than leaving it behind.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		if _, ok := <-sigs; ok {
			_ = cmd.Process.Signal(syscall.SIGTERM)
		}
	}()

	line, readErr := bufio.NewReader(readR).ReadBytes('\n')
	var msg readyMsg
	if readErr != nil && !errors.Is(readErr, io.EOF) || json.Unmarshal(line, &msg) != nil {
		_ = cmd.Wait()
		return fmt.Errorf("the test bed daemon exited before it was ready; its log %s ends with:\n%s", logFile.Name(), testbed.TailFile(logFile.Name(), 40))
	}
	if msg.Error != "" {
		_ = cmd.Wait()
		return fmt.Errorf("the test bed did not start: %s", msg.Error)
	}
	_ = cmd.Process.Release()
	fmt.Printf("test bed ready\nkubeconfig: %s\nPrometheus: %s\nenv file:   %s\n", msg.Kubeconfig, msg.PrometheusURL, filepath.Join(c.dir, testbed.EnvFile))
	return nil
}

// daemon starts the test bed, reports to `up` through readyFD, and holds the processes until SIGTERM.
func daemon(args []string) error {
	c, err := parseFlags(daemonCmd, args, true)
	if err != nil {
		return err
	}
	ready := os.NewFile(readyFD, "ready")
	report := func(m readyMsg) {
		if ready == nil {
			return
		}
		data, _ := json.Marshal(m)
		_, _ = ready.Write(append(data, '\n'))
		_ = ready.Close()
		ready = nil
	}

	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer cancel()
	env, err := testbed.Start(ctx, testbed.Options{
		Dir:          c.dir,
		NoPrometheus: c.noPrometheus,
		KubeAPIQPS:   c.kubeAPIQPS,
		Logf: func(format string, args ...any) {
			fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format(time.TimeOnly)}, args...)...)
		},
	})
	if err != nil {
		report(readyMsg{Error: err.Error()})
		return err
	}
	pidPath := filepath.Join(c.dir, pidFile)
	envContent := fmt.Sprintf("KUBECONFIG=%s\nPROMETHEUS_URL=%s\nAPISERVER_URL=%s\n", env.Kubeconfig, env.PrometheusURL, env.APIServerURL)
	err = errors.Join(
		os.WriteFile(filepath.Join(c.dir, testbed.EnvFile), []byte(envContent), 0o644),
		os.WriteFile(pidPath, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644),
	)
	if err != nil {
		_ = env.Stop()
		report(readyMsg{Error: err.Error()})
		return err
	}
	report(readyMsg{Kubeconfig: env.Kubeconfig, PrometheusURL: env.PrometheusURL, APIServerURL: env.APIServerURL})

	<-ctx.Done()
	fmt.Fprintln(os.Stderr, "stopping the test bed")
	err = env.Stop()
	_ = os.Remove(pidPath)
	return err
}

func down(args []string) error {
	c, err := parseFlags("down", args, false)
	if err != nil {
		return err
	}
	if pid, ok := runningPID(c.dir); ok {
		if err := stopDaemon(pid); err != nil {
			return err
		}
		fmt.Printf("test bed in %s stopped\n", c.dir)
	} else {
		fmt.Printf("no test bed running in %s\n", c.dir)
	}
	for _, name := range []string{pidFile, testbed.EnvFile, daemonLog} {
		if err := os.Remove(filepath.Join(c.dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return testbed.RemoveData(c.dir)
}

// stopDaemon sends SIGTERM and waits for the daemon to stop its processes and exit. After a minute it is
// killed: its children then die with it (they are started with a parent-death signal).
func stopDaemon(pid int) error {
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		return fmt.Errorf("signal test bed daemon %d: %w", pid, err)
	}
	deadline := time.Now().Add(time.Minute)
	for alive(pid) {
		if time.Now().After(deadline) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			time.Sleep(time.Second)
			return fmt.Errorf("test bed daemon %d did not stop within a minute and was killed", pid)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nil
}

func status(args []string) error {
	c, err := parseFlags("status", args, false)
	if err != nil {
		return err
	}
	pid, ok := runningPID(c.dir)
	if !ok {
		return fmt.Errorf("no test bed running in %s", c.dir)
	}
	fmt.Printf("test bed running in %s (pid %d)\n", c.dir, pid)
	if err := printEnv(c.dir); err != nil {
		return err
	}
	env, err := testbed.ReadEnv(c.dir)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var problems []error
	if err := apiserverReady(ctx, env["KUBECONFIG"]); err != nil {
		problems = append(problems, fmt.Errorf("kube-apiserver: %w", err))
	} else {
		fmt.Println("kube-apiserver: ready")
	}
	if url := env["PROMETHEUS_URL"]; url != "" {
		if err := testbed.HTTPOK(ctx, http.DefaultClient, url+"/-/ready"); err != nil {
			problems = append(problems, fmt.Errorf("prometheus: %w", err))
		} else {
			fmt.Println("Prometheus: ready")
		}
	}
	return errors.Join(problems...)
}

func apiserverReady(ctx context.Context, kubeconfig string) error {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	_, err = cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
	return err
}

// runningPID returns the daemon's pid if DIR's pid file names a live test bed daemon for DIR. The
// command line is checked so that a recycled pid never gets signalled.
func runningPID(dir string) (int, bool) {
	data, err := os.ReadFile(filepath.Join(dir, pidFile))
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 0 || !alive(pid) {
		return 0, false
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return 0, false
	}
	args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
	if len(args) < 3 || args[1] != daemonCmd || args[2] != "--dir="+dir {
		return 0, false
	}
	return pid, true
}

func alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

func printEnv(dir string) error {
	env, err := testbed.ReadEnv(dir)
	if err != nil {
		return err
	}
	fmt.Printf("kubeconfig: %s\nPrometheus: %s\nenv file:   %s\n", env["KUBECONFIG"], env["PROMETHEUS_URL"], filepath.Join(dir, testbed.EnvFile))
	return nil
}
