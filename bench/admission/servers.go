package admission

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	ctrlwebhook "sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"canarygate.io/canarygate/api/v1alpha1"
	"canarygate.io/canarygate/e2e/testbed"
	"canarygate.io/canarygate/webhook"
)

// Servers are the two webhook servers under load, both controller-runtime webhook servers with the
// same options (the library's default TLS config: TLS 1.2+, h2 offered) and the same ECDSA P-256
// certificate, as canarygate's own certificates are.
type Servers struct {
	// CanarygateURL is canarygate's mutating handler, served by a manager whose cache (Namespaces,
	// CanaryPolicies, Canaries) is synced from the API server, as in production.
	CanarygateURL string
	// FloorURL is a handler that allows everything.
	FloorURL string
	// CAPEM is the CA both certificates chain to.
	CAPEM []byte
}

// StartServers starts both servers on loopback; they stop when ctx ends. ns is created opted in,
// so that canarygate manages the reviews' namespace.
func StartServers(ctx context.Context, cfg *rest.Config, dir, ns string) (*Servers, error) {
	caPEM, err := testbed.WriteServingCert(dir)
	if err != nil {
		return nil, err
	}
	ports, err := freePorts(2)
	if err != nil {
		return nil, err
	}
	if err := ensureManagedNamespace(ctx, cfg, ns); err != nil {
		return nil, err
	}

	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 testbed.Scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		WebhookServer:          ctrlwebhook.NewServer(ctrlwebhook.Options{Host: "127.0.0.1", Port: ports[0], CertDir: dir}),
	})
	if err != nil {
		return nil, err
	}
	if err := webhook.Register(mgr, webhook.Options{
		OwnNamespace:   "canarygate-system",
		ServiceAccount: "system:serviceaccount:canarygate-system:canarygate",
	}); err != nil {
		return nil, err
	}
	mgrErr := make(chan error, 1)
	go func() { mgrErr <- mgr.Start(ctx) }()

	floor := ctrlwebhook.NewServer(ctrlwebhook.Options{Host: "127.0.0.1", Port: ports[1], CertDir: dir})
	floor.Register("/allow", &admission.Webhook{Handler: admission.HandlerFunc(func(context.Context, admission.Request) admission.Response {
		return admission.Allowed("")
	})})
	floorErr := make(chan error, 1)
	go func() { floorErr <- floor.Start(ctx) }()

	s := &Servers{
		CanarygateURL: "https://127.0.0.1:" + strconv.Itoa(ports[0]) + webhook.MutateDeploymentsPath,
		FloorURL:      "https://127.0.0.1:" + strconv.Itoa(ports[1]) + "/allow",
		CAPEM:         caPEM,
	}
	wait, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if !mgr.GetCache().WaitForCacheSync(wait) {
		return nil, errors.New("admission: the manager's cache did not sync")
	}
	for _, started := range []func(*http.Request) error{mgr.GetWebhookServer().StartedChecker(), floor.StartedChecker()} {
		for started(nil) != nil {
			select {
			case err := <-mgrErr:
				return nil, fmt.Errorf("admission: manager stopped: %v", err)
			case err := <-floorErr:
				return nil, fmt.Errorf("admission: floor server stopped: %v", err)
			case <-wait.Done():
				return nil, errors.New("admission: webhook servers did not start")
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	return s, nil
}

// ensureManagedNamespace creates ns with the opt-in annotation and the label the controller
// would mirror (no controller runs here).
func ensureManagedNamespace(ctx context.Context, cfg *rest.Config, ns string) error {
	c, err := client.New(cfg, client.Options{Scheme: testbed.Scheme})
	if err != nil {
		return err
	}
	optIn := map[string]string{v1alpha1.OptInKey: v1alpha1.OptInEnabled}
	err = c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: optIn, Annotations: optIn}})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	out := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	return out, nil
}
