package harness

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
)

// StartReplica starts one more canarygate process, as a second replica of the installed
// Deployment would run: the same binary, identity and flags as h.Canarygate, its own webhook,
// metrics and health ports, its own log directory, and args after those (a later flag wins). The
// webhook configurations keep calling whatever URL they call (see PointWebhooksAt); the replica is
// ready when /readyz passes and every webhook has a CA bundle.
func (h *Harness) StartReplica(ctx context.Context, args ...string) (*Canarygate, error) {
	addrs, err := freeAddrs(3)
	if err != nil {
		return nil, err
	}
	h.replicas++
	dir := filepath.Join(h.Canarygate.logDir, "replica-"+strconv.Itoa(h.replicas))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	host, port, _ := net.SplitHostPort(addrs[0])
	main := h.Canarygate
	r := &Canarygate{
		bin: main.bin, logDir: dir, cs: main.cs, admin: main.admin, install: main.install,
		WebhookURL:  "https://" + addrs[0],
		MetricsAddr: addrs[1], ProbeAddr: addrs[2],
		replica: true,
	}
	r.args = append(append([]string{}, main.args...),
		"--webhook-host="+host, "--webhook-port="+port,
		"--metrics-bind-address="+addrs[1], "--health-probe-bind-address="+addrs[2])
	r.args = append(r.args, args...)
	if err := r.Start(ctx); err != nil {
		return nil, fmt.Errorf("harness: starting a replica: %w", err)
	}
	return r, nil
}

// PointWebhooksAt makes the API server call canarygate's webhooks at url (https://host:port), as
// a Service's endpoints would move to the replicas that are up.
func (h *Harness) PointWebhooksAt(ctx context.Context, url string) error {
	return registerWebhooks(ctx, h.Clientset, h.install, url)
}
