package harness

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"canarygate.io/canarygate/api/v1alpha1"
	"canarygate.io/canarygate/e2e/testbed"
)

// Canarygate is the canarygate binary running as a child process against the test bed.
type Canarygate struct {
	bin     string
	args    []string
	logDir  string
	cs      kubernetes.Interface
	admin   client.Client
	install *install

	// WebhookURL is https://127.0.0.1:PORT, the address the webhook configurations call.
	WebhookURL string
	// MetricsAddr and ProbeAddr are host:port of the metrics and health endpoints.
	MetricsAddr, ProbeAddr string
	// replica: started by StartReplica; the API server need not call it.
	replica bool

	mu   sync.Mutex
	proc *testbed.Process
}

// buildCanarygate compiles cmd/canarygate into dir.
func buildCanarygate(ctx context.Context, repo, dir string) (string, error) {
	bin := filepath.Join(dir, "canarygate")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/canarygate")
	cmd.Dir = repo
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build ./cmd/canarygate: %w\n%s", err, out)
	}
	return bin, nil
}

// LogPath is the file canarygate logs to (every start appends to it).
func (c *Canarygate) LogPath() string { return filepath.Join(c.logDir, "canarygate.log") }

// Pid is the running process' id, 0 when it is not running.
func (c *Canarygate) Pid() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.proc == nil {
		return 0
	}
	return c.proc.Pid()
}

// Start starts canarygate and waits until the API server reaches its webhooks over TLS.
func (c *Canarygate) Start(ctx context.Context) error {
	c.mu.Lock()
	if c.proc != nil {
		c.mu.Unlock()
		return errors.New("canarygate is already running")
	}
	proc, err := testbed.StartProcess(c.logDir, "canarygate", c.bin, c.args...)
	if err != nil {
		c.mu.Unlock()
		return err
	}
	c.proc = proc
	c.mu.Unlock()
	if err := c.waitReady(ctx, proc); err != nil {
		return fmt.Errorf("%w; see %s", err, c.LogPath())
	}
	return nil
}

// readyTimeout covers canarygate's first start: creating its CA, injecting it and waiting out the
// trust delay before serving a certificate signed by it.
const readyTimeout = 2 * time.Minute

// waitReady waits for /readyz, for the CA bundle in every webhook, and for a dry-run CanaryPolicy
// create to pass the validating webhook: only then does the API server call canarygate over TLS.
func (c *Canarygate) waitReady(ctx context.Context, proc *testbed.Process) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	probe := &v1alpha1.CanaryPolicy{ObjectMeta: metav1.ObjectMeta{Name: "e2e-readiness-probe"}}
	checks := []struct {
		what string
		ok   func(context.Context) error
	}{
		{"canarygate /readyz", func(ctx context.Context) error {
			return testbed.HTTPOK(ctx, http.DefaultClient, "http://"+c.ProbeAddr+"/readyz")
		}},
		{"CA bundle in the webhook configurations", c.caBundleInjected},
		{"the API server calling the webhook", func(ctx context.Context) error {
			return c.admin.Create(ctx, probe.DeepCopy(), client.DryRunAll)
		}},
	}
	if c.replica {
		checks = checks[:2]
	}
	for _, check := range checks {
		var last error
		for {
			if done, err := proc.Exited(); done {
				return fmt.Errorf("canarygate exited while waiting for %s: %v", check.what, err)
			}
			if last = check.ok(ctx); last == nil {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("waiting for %s: %w (last error: %v)", check.what, ctx.Err(), last)
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	return nil
}

func (c *Canarygate) caBundleInjected(ctx context.Context) error {
	m, err := c.cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, c.install.mutating[0].Name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	v, err := c.cs.AdmissionregistrationV1().ValidatingWebhookConfigurations().Get(ctx, c.install.validating[0].Name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	var configs []admissionregistrationv1.WebhookClientConfig
	for _, w := range m.Webhooks {
		configs = append(configs, w.ClientConfig)
	}
	for _, w := range v.Webhooks {
		configs = append(configs, w.ClientConfig)
	}
	for _, cc := range configs {
		if len(cc.CABundle) == 0 {
			return errors.New("a webhook has no caBundle yet")
		}
	}
	return nil
}

// Stop stops canarygate gracefully (SIGTERM). Stopping a stopped canarygate is a no-op.
func (c *Canarygate) Stop() error { return c.end((*testbed.Process).Stop) }

// Kill kills canarygate with SIGKILL, as a crash or an OOM kill would.
func (c *Canarygate) Kill() error { return c.end((*testbed.Process).Kill) }

func (c *Canarygate) end(how func(*testbed.Process) error) error {
	c.mu.Lock()
	proc := c.proc
	c.proc = nil
	c.mu.Unlock()
	if proc == nil {
		return nil
	}
	return how(proc)
}

// Restart kills canarygate (SIGKILL) and starts it again with the same flags.
func (c *Canarygate) Restart(ctx context.Context) error {
	if err := c.Kill(); err != nil {
		return err
	}
	return c.Start(ctx)
}

// freeAddrs reserves n loopback ports and returns them as host:port; the listeners are closed
// right away, so a port may in rare cases be taken by someone else before it is used.
func freeAddrs(n int) ([]string, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	out := make([]string, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		out = append(out, "127.0.0.1:"+strconv.Itoa(l.Addr().(*net.TCPAddr).Port))
	}
	return out, nil
}
