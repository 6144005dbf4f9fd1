// Package integration tests package certs against a real kube-apiserver that calls webhooks served
// with the self-managed certificates.
package integration

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"canarygate.io/canarygate/certs"
	"canarygate.io/canarygate/e2e/testbed"
)

func TestMain(m *testing.M) {
	logf.SetLogger(zap.New(zap.WriteTo(os.Stderr)))
	os.Exit(testbed.Run(m, testbed.Options{NoPrometheus: true}))
}

const (
	selectorLabel = "certs-test"
	allowPath     = "/allow"
)

// replica is one canarygate-like manager: a webhook server with an allow-all handler and certs.Setup.
type replica struct {
	mgr   manager.Manager
	port  int
	ready healthz.Checker
	calls atomic.Int64 // admission requests served
}

func newReplica(t *testing.T, opts certs.Options, leaderElection bool, port int) *replica {
	t.Helper()
	r := &replica{port: port}
	env := testbed.Shared()
	mgr, err := manager.New(env.Config, manager.Options{
		Scheme:                  clientgoscheme.Scheme,
		Metrics:                 metricsserver.Options{BindAddress: "0"},
		WebhookServer:           webhook.NewServer(webhook.Options{Host: "127.0.0.1", Port: port}),
		LeaderElection:          leaderElection,
		LeaderElectionID:        "certs-test-" + opts.SecretName,
		LeaderElectionNamespace: opts.Namespace,
	})
	if err != nil {
		t.Fatal(err)
	}
	mgr.GetWebhookServer().Register(allowPath, &webhook.Admission{Handler: admission.HandlerFunc(
		func(context.Context, admission.Request) admission.Response {
			r.calls.Add(1)
			return admission.Allowed("")
		})})
	if r.ready, err = certs.Setup(mgr, opts); err != nil {
		t.Fatal(err)
	}
	if r.ready(nil) == nil {
		t.Error("ready before the manager started")
	}
	r.mgr = mgr
	return r
}

// start runs the manager until ctx ends; the test's cleanup waits for it to stop.
func (r *replica) start(t *testing.T, ctx context.Context) {
	done := make(chan error, 1)
	go func() { done <- r.mgr.Start(ctx) }()
	t.Cleanup(func() {
		if err := <-done; err != nil {
			t.Errorf("manager on port %d: %v", r.port, err)
		}
	})
}

// servedLeaf dials the replica and returns the certificate it presents, or nil.
func (r *replica) servedLeaf() *x509.Certificate {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: time.Second}, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(r.port)),
		&tls.Config{InsecureSkipVerify: true}) // we compare the certificate ourselves
	if err != nil {
		return nil
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0]
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func newClient(t *testing.T) client.Client {
	t.Helper()
	c, err := testbed.Shared().Client()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func createNamespace(t *testing.T, ctx context.Context, c client.Client, name string, labels map[string]string) {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	if err := c.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}

// createWebhookConfigs registers a mutating and a validating webhook for ConfigMaps in namespaces
// labeled selectorLabel=selectorValue, calling the given ports, with failurePolicy Fail so that
// every TLS problem surfaces as a failed request. No caBundle: Setup must inject it.
func createWebhookConfigs(t *testing.T, ctx context.Context, c client.Client, name, selectorValue string, mutatingPort, validatingPort int) {
	t.Helper()
	url := func(port int) *string { return ptr.To(fmt.Sprintf("https://127.0.0.1:%d%s", port, allowPath)) }
	rules := []admissionregistrationv1.RuleWithOperations{{
		Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update},
		Rule:       admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"configmaps"}},
	}}
	selector := &metav1.LabelSelector{MatchLabels: map[string]string{selectorLabel: selectorValue}}
	objs := []client.Object{
		&admissionregistrationv1.MutatingWebhookConfiguration{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Webhooks: []admissionregistrationv1.MutatingWebhook{{
				Name:                    "mutate." + name + ".canarygate.io",
				ClientConfig:            admissionregistrationv1.WebhookClientConfig{URL: url(mutatingPort)},
				Rules:                   rules,
				NamespaceSelector:       selector,
				FailurePolicy:           ptr.To(admissionregistrationv1.Fail),
				SideEffects:             ptr.To(admissionregistrationv1.SideEffectClassNone),
				AdmissionReviewVersions: []string{"v1"},
				TimeoutSeconds:          ptr.To[int32](5),
			}},
		},
		&admissionregistrationv1.ValidatingWebhookConfiguration{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Webhooks: []admissionregistrationv1.ValidatingWebhook{{
				Name:                    "validate." + name + ".canarygate.io",
				ClientConfig:            admissionregistrationv1.WebhookClientConfig{URL: url(validatingPort)},
				Rules:                   rules,
				NamespaceSelector:       selector,
				FailurePolicy:           ptr.To(admissionregistrationv1.Fail),
				SideEffects:             ptr.To(admissionregistrationv1.SideEffectClassNone),
				AdmissionReviewVersions: []string{"v1"},
				TimeoutSeconds:          ptr.To[int32](5),
			}},
		},
	}
	for _, o := range objs {
		if err := c.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Delete(context.Background(), o) })
	}
}

func options(ns, secret, configs string) certs.Options {
	return certs.Options{
		Namespace:               ns,
		SecretName:              secret,
		ServiceName:             "canarygate-webhook",
		ExtraIPs:                []string{"127.0.0.1"},
		MutatingWebhookConfig:   configs,
		ValidatingWebhookConfig: configs,
	}
}

// waitFor polls cond every interval until it holds or timeout passes.
func waitFor(t *testing.T, timeout, interval time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			t.Fatalf("%s: not within %s", what, timeout)
		}
		time.Sleep(interval)
	}
	return time.Since(start)
}

// injectedBundle returns the CAs that both webhook configurations trust, as the API server sees them.
func injectedBundle(ctx context.Context, c client.Client, name string) (*x509.CertPool, bool) {
	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{}
	vwc := &admissionregistrationv1.ValidatingWebhookConfiguration{}
	if c.Get(ctx, client.ObjectKey{Name: name}, mwc) != nil || c.Get(ctx, client.ObjectKey{Name: name}, vwc) != nil {
		return nil, false
	}
	m, v := mwc.Webhooks[0].ClientConfig.CABundle, vwc.Webhooks[0].ClientConfig.CABundle
	pool := x509.NewCertPool()
	for _, ca := range bundleCerts(m) {
		if containsCert(bundleCerts(v), ca) {
			pool.AddCert(ca)
		}
	}
	return pool, true
}

func containsCert(cs []*x509.Certificate, c *x509.Certificate) bool {
	for _, x := range cs {
		if x.Equal(c) {
			return true
		}
	}
	return false
}

func bundleCerts(pemData []byte) []*x509.Certificate {
	var out []*x509.Certificate
	for {
		var b *pem.Block
		b, pemData = pem.Decode(pemData)
		if b == nil {
			return out
		}
		if c, err := x509.ParseCertificate(b.Bytes); err == nil {
			out = append(out, c)
		}
	}
}

// TestRotationUnderLoad rotates CA and serving certificate every few seconds while the API server
// sends a steady stream of admission requests through both webhook configurations; none may fail.
func TestRotationUnderLoad(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := newClient(t)
	const ns, loadNS, name = "certs-rotation", "certs-rotation-load", "certs-rotation"
	createNamespace(t, ctx, c, ns, nil)
	createNamespace(t, ctx, c, loadNS, map[string]string{selectorLabel: "rotation"})

	opts := options(ns, "webhook-certs", name)
	opts.CAValidity, opts.CertValidity, opts.RenewBefore, opts.TrustDelay = 24*time.Second, 12*time.Second, 6*time.Second, 2*time.Second
	r := newReplica(t, opts, false, freePort(t))
	r.start(t, ctx)
	createWebhookConfigs(t, ctx, c, name, "rotation", r.port, r.port)

	// The first request can only succeed once the certificate is served and its CA injected.
	probe := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: loadNS, Name: "probe"}}
	waitFor(t, 60*time.Second, 200*time.Millisecond, "first admission request", func() bool {
		return c.Create(ctx, probe, client.DryRunAll) == nil
	})
	if err := r.ready(nil); err != nil {
		t.Fatalf("webhook answers but is not ready: %v", err)
	}

	// Observe rotations: serving certificates presented and CAs in the Secret. Each presented
	// certificate must chain to the caBundle that both configurations held just before the dial:
	// a certificate from a CA that was not injected yet is what would fail the API server's calls.
	var (
		mu        sync.Mutex
		leaves    = map[string]bool{}
		signers   = map[string]bool{}
		untrusted int
		observer  = newClient(t) // its own client-side rate limit, apart from the load's
	)
	end := time.Now().Add(75 * time.Second)
	running := func() bool { return time.Now().Before(end) }
	var wg sync.WaitGroup
	wg.Go(func() {
		for running() {
			sec := &corev1.Secret{}
			if err := observer.Get(ctx, client.ObjectKey{Namespace: ns, Name: opts.SecretName}, sec); err == nil {
				mu.Lock()
				signers[string(sec.Data["signer.crt"])] = true
				mu.Unlock()
			}
			trusted, ok := injectedBundle(ctx, observer, name)
			if leaf := r.servedLeaf(); ok && leaf != nil {
				_, err := leaf.Verify(x509.VerifyOptions{Roots: trusted})
				mu.Lock()
				leaves[string(leaf.Raw)] = true
				if err != nil {
					untrusted++
				}
				mu.Unlock()
			}
			time.Sleep(20 * time.Millisecond)
		}
	})

	// The load: ConfigMap creates and updates from a few workers, each passing both webhooks.
	var requests, failures atomic.Int64
	errs := map[string]int{}
	for w := range 3 {
		wg.Go(func() {
			for i := 0; running(); i++ {
				cm := &corev1.ConfigMap{
					ObjectMeta: metav1.ObjectMeta{Namespace: loadNS, Name: fmt.Sprintf("load-%d-%d", w, i%20)},
					Data:       map[string]string{"i": strconv.Itoa(i)},
				}
				err := c.Create(ctx, cm)
				if apierrors.IsAlreadyExists(err) {
					err = c.Update(ctx, cm) // no resourceVersion: an unconditional update
				}
				requests.Add(1)
				if err != nil {
					failures.Add(1)
					mu.Lock()
					errs[err.Error()]++
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()

	t.Logf("%d API requests (%d admission calls) across %d serving certificates from %d CAs; %d failed",
		requests.Load(), r.calls.Load(), len(leaves), len(signers), failures.Load())
	if untrusted > 0 {
		t.Errorf("%d times the webhook presented a certificate that the injected caBundle did not trust", untrusted)
	}
	for msg, n := range errs {
		t.Errorf("%d requests failed with: %s", n, msg)
	}
	if len(leaves) < 6 || len(signers) < 3 {
		t.Errorf("expected several rotations, saw %d serving certificates and %d CAs", len(leaves), len(signers))
	}
	if requests.Load() < 200 {
		t.Errorf("only %d requests: the load did not run", requests.Load())
	}
}

// TestReplicasConverge starts two replicas (leader-elected managers: only one holds the lease,
// both must serve) against one missing Secret at the same time, then blanks the caBundles.
func TestReplicasConverge(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := newClient(t)
	const ns, loadNS, name = "certs-converge", "certs-converge-load", "certs-converge"
	createNamespace(t, ctx, c, ns, nil)
	createNamespace(t, ctx, c, loadNS, map[string]string{selectorLabel: "converge"})
	opts := options(ns, "webhook-certs", name)

	// Configurations first, with the ports the replicas will take, so both start injecting at once.
	a, b := newReplica(t, opts, true, freePort(t)), newReplica(t, opts, true, freePort(t))
	createWebhookConfigs(t, ctx, c, name, "converge", a.port, b.port)
	a.start(t, ctx)
	b.start(t, ctx)

	sec := &corev1.Secret{}
	waitFor(t, 60*time.Second, 100*time.Millisecond, "both replicas serving the Secret's certificate", func() bool {
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: opts.SecretName}, sec); err != nil {
			return false
		}
		la, lb := a.servedLeaf(), b.servedLeaf()
		return la != nil && lb != nil && la.Equal(lb) && bytes.Equal(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: la.Raw}), sec.Data[corev1.TLSCertKey])
	})
	if n := len(bundleCerts(sec.Data["ca.crt"])); n != 1 {
		t.Errorf("bundle holds %d CAs after a concurrent start, want 1", n)
	}
	for _, r := range []*replica{a, b} {
		if err := r.ready(nil); err != nil {
			t.Errorf("replica on port %d not ready: %v", r.port, err)
		}
	}
	probe := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: loadNS, Name: "probe"}}
	waitFor(t, 30*time.Second, 100*time.Millisecond, "admission through both replicas", func() bool {
		return c.Create(ctx, probe, client.DryRunAll) == nil
	})
	if a.calls.Load() == 0 || b.calls.Load() == 0 {
		t.Errorf("admission calls: %d and %d, want both replicas called", a.calls.Load(), b.calls.Load())
	}

	// A GitOps agent re-applies the configurations without caBundle.
	want := sec.Data["ca.crt"]
	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{}
	vwc := &admissionregistrationv1.ValidatingWebhookConfiguration{}
	blank := func() {
		if err := c.Get(ctx, client.ObjectKey{Name: name}, mwc); err != nil {
			t.Fatal(err)
		}
		mwc.Webhooks[0].ClientConfig.CABundle = nil
		if err := c.Update(ctx, mwc); err != nil {
			t.Fatal(err)
		}
		if err := c.Get(ctx, client.ObjectKey{Name: name}, vwc); err != nil {
			t.Fatal(err)
		}
		vwc.Webhooks[0].ClientConfig.CABundle = nil
		if err := c.Update(ctx, vwc); err != nil {
			t.Fatal(err)
		}
	}
	for round := range 3 {
		blank()
		took := waitFor(t, 10*time.Second, 20*time.Millisecond, "caBundle restored", func() bool {
			if c.Get(ctx, client.ObjectKey{Name: name}, mwc) != nil || c.Get(ctx, client.ObjectKey{Name: name}, vwc) != nil {
				return false
			}
			return bytes.Equal(mwc.Webhooks[0].ClientConfig.CABundle, want) && bytes.Equal(vwc.Webhooks[0].ClientConfig.CABundle, want)
		})
		t.Logf("round %d: blanked caBundles restored after %s", round, took.Round(time.Millisecond))
	}
}
