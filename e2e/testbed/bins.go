package testbed

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// Pinned versions; hack/testbed-bins.sh builds exactly these.
const (
	kubernetesVersion = "v1.37.2"
	etcdVersion       = "v3.7.0"
	kwokVersion       = "v0.8.0"

	modulePath = "canarygate.io/canarygate"
)

// binaries are the absolute paths of every program the test bed runs.
type binaries struct {
	etcd, apiserver, controllerManager, scheduler, kwok, prometheus string
	kwokStages                                                      []string // Stage YAML files for kwok --config
}

// RepoRoot returns the canarygate checkout: $CANARYGATE_REPO, else the nearest directory above the working
// directory whose go.mod declares the canarygate module.
func RepoRoot() (string, error) {
	if dir := os.Getenv("CANARYGATE_REPO"); dir != "" {
		return filepath.Abs(dir)
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if data, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && declaresModule(data, modulePath) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("canarygate checkout not found above the working directory; set CANARYGATE_REPO")
		}
		dir = parent
	}
}

func declaresModule(gomod []byte, path string) bool {
	sc := bufio.NewScanner(bytes.NewReader(gomod))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 2 && f[0] == "module" && f[1] == path {
			return true
		}
	}
	return false
}

// locateBinaries runs hack/testbed-bins.sh (a no-op after the first build on a machine) when the control
// plane is wanted and, when Prometheus is wanted and missing, hack/install-prometheus.sh.
func locateBinaries(ctx context.Context, repo string, controlPlane, withPrometheus bool, logf func(string, ...any)) (*binaries, error) {
	b := &binaries{}
	var err error
	if controlPlane {
		if b, err = locateControlPlane(ctx, repo, logf); err != nil {
			return nil, err
		}
	}
	if withPrometheus {
		if b.prometheus, err = exec.LookPath("prometheus"); err != nil {
			logf("prometheus not found; installing the Debian package")
			out, err := runScript(ctx, repo, "hack/install-prometheus.sh")
			if err != nil {
				return nil, err
			}
			b.prometheus = strings.TrimSpace(out)
		}
	}
	return b, nil
}

// locateControlPlane finds etcd, the Kubernetes components and kwok, building them the first time.
func locateControlPlane(ctx context.Context, repo string, logf func(string, ...any)) (*binaries, error) {
	logf("locating control-plane binaries (building them the first time takes about 10 minutes)")
	out, err := runScript(ctx, repo, "hack/testbed-bins.sh")
	if err != nil {
		return nil, err
	}
	cache := strings.TrimSpace(out)
	k8s := filepath.Join(cache, "kubernetes-"+kubernetesVersion)
	kwokDir := filepath.Join(cache, "kwok-"+kwokVersion)
	b := &binaries{
		etcd:              filepath.Join(cache, "etcd-"+etcdVersion, "etcd"),
		apiserver:         filepath.Join(k8s, "kube-apiserver"),
		controllerManager: filepath.Join(k8s, "kube-controller-manager"),
		scheduler:         filepath.Join(k8s, "kube-scheduler"),
		kwok:              filepath.Join(kwokDir, "kwok"),
	}
	for _, stage := range []string{"node/fast", "node/heartbeat", "pod/fast"} {
		files, err := filepath.Glob(filepath.Join(kwokDir, "stages", stage, "*.yaml"))
		if err != nil || len(files) == 0 {
			return nil, fmt.Errorf("kwok stage %s missing under %s: rebuild with hack/testbed-bins.sh after deleting it", stage, kwokDir)
		}
		b.kwokStages = append(b.kwokStages, files...)
	}
	for _, bin := range []string{b.etcd, b.apiserver, b.controllerManager, b.scheduler, b.kwok} {
		if _, err := os.Stat(bin); err != nil {
			return nil, fmt.Errorf("hack/testbed-bins.sh did not produce %s: %w", bin, err)
		}
	}
	return b, nil
}

// runScript runs a bash script of the checkout and returns its stdout; stderr goes into the error.
func runScript(ctx context.Context, repo, script string) (string, error) {
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(repo, script))
	cmd.Dir = repo
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s: %w\n%s", script, err, tailString(stderr.String(), 40))
	}
	return stdout.String(), nil
}

func tailString(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// freePorts returns n distinct loopback TCP ports that are free right now. They are drawn below the
// kernel's ephemeral range, so outgoing connections made before our servers bind can never take them.
func freePorts(n int) ([]int, error) {
	lo, hi := 10000, ephemeralLow()
	used := map[int]bool{}
	var ports []int
	for tries := 0; len(ports) < n; tries++ {
		if tries > 1000 {
			return nil, fmt.Errorf("no free loopback ports in [%d, %d)", lo, hi)
		}
		port := lo + rand.IntN(hi-lo)
		if used[port] {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue
		}
		_ = l.Close()
		used[port] = true
		ports = append(ports, port)
	}
	return ports, nil
}

// ephemeralLow is the first port the kernel hands out for outgoing connections.
func ephemeralLow() int {
	const fallback = 32768
	data, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return fallback
	}
	f := strings.Fields(string(data))
	if len(f) < 1 {
		return fallback
	}
	low, err := strconv.Atoi(f[0])
	if err != nil || low <= 11000 {
		return fallback
	}
	return low
}
