package scenarios

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"canarygate.io/canarygate/api/v1alpha1"
	"canarygate.io/canarygate/e2e/harness"
)

// Two replicas with leader election, as the install manifests run canarygate: every replica serves
// the webhooks, only the leader runs the controllers, and when the leader dies mid-flight the other
// takes over and finishes the release. The API server calls one replica at a time, as a Service's
// endpoints would route it.
func TestTwoReplicasLeaderElection(t *testing.T) {
	h := setup(t)
	ctx := t.Context()
	if err := h.Canarygate.Stop(); err != nil {
		t.Fatal(err)
	}
	var replicas []*harness.Canarygate
	t.Cleanup(func() {
		for _, r := range replicas {
			_ = r.Kill()
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := h.PointWebhooksAt(ctx, h.Canarygate.WebhookURL); err != nil {
			t.Errorf("pointing the webhooks back at the shared canarygate: %v", err)
		}
		restartIfDown(t, h)
	})
	for range 2 {
		r, err := h.StartReplica(ctx, "--leader-elect=true")
		if err != nil {
			t.Fatal(err)
		}
		replicas = append(replicas, r)
	}
	if err := h.PointWebhooksAt(ctx, replicas[0].WebhookURL); err != nil {
		t.Fatal(err)
	}
	leader, follower := waitLeader(t, replicas)

	a := demoApp(t, h, "e2e-replicas", nil)
	waitInitialized(t, a, app)
	push(t, a, app, newImage)
	before := waitWeight(t, h, a.Namespace, app, 20)

	// Only the leader reconciles Canaries; the follower answers admission requests all the same.
	if n := reconciles(t, follower, "canary"); n != 0 {
		t.Errorf("the follower reconciled Canaries %v times", n)
	}
	if n := reconciles(t, leader, "canary"); n == 0 {
		t.Error("the leader reconciled no Canary")
	}
	assertServesAdmission(t, h, follower)

	// The leader dies (SIGKILL: no lease release); the follower waits out the lease, takes over and
	// finishes the release from the status and the objects.
	if err := leader.Kill(); err != nil {
		t.Fatal(err)
	}
	if leader == replicas[0] {
		if err := h.PointWebhooksAt(ctx, follower.WebhookURL); err != nil {
			t.Fatal(err)
		}
	}
	c := waitPhase(t, h, a.Namespace, app, v1alpha1.PhaseSucceeded, flightTimeout)
	if c.Status.StableRevision != before.Status.CanaryRevision {
		t.Errorf("promoted %s, want the revision in flight before the failover, %s", c.Status.StableRevision, before.Status.CanaryRevision)
	}
	if !isLeader(t, follower) {
		t.Error("the surviving replica does not report itself leader")
	}
	assertImage(t, a, app, newImage)
	assertFleet(t, a)
}

// waitLeader waits until exactly one replica reports leadership (controller-runtime's
// leader_election_master_status) and returns it and the other.
func waitLeader(t *testing.T, replicas []*harness.Canarygate) (leader, follower *harness.Canarygate) {
	t.Helper()
	err := harness.WaitFor(t.Context(), time.Minute, "one leader among two replicas", func(ctx context.Context) (bool, string, error) {
		var leaders []*harness.Canarygate
		for _, r := range replicas {
			if isLeader(t, r) {
				leaders = append(leaders, r)
			}
		}
		if len(leaders) != 1 {
			return false, fmt.Sprintf("%d leaders", len(leaders)), nil
		}
		leader = leaders[0]
		return true, "", nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range replicas {
		if r != leader {
			follower = r
		}
	}
	return leader, follower
}

func isLeader(t *testing.T, r *harness.Canarygate) bool {
	t.Helper()
	return metricSum(t, r, "leader_election_master_status", "") == 1
}

func reconciles(t *testing.T, r *harness.Canarygate, controller string) float64 {
	t.Helper()
	return metricSum(t, r, "controller_runtime_reconcile_total", controller)
}

// metricSum adds up a metric's series, those of one controller when controller is set.
func metricSum(t *testing.T, r *harness.Canarygate, name, controller string) float64 {
	t.Helper()
	fams, err := r.Metrics(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	labelName := ""
	if controller != "" {
		labelName = "controller"
	}
	return harness.Sum(fams[name], labelName, controller)
}

// assertServesAdmission posts an AdmissionReview straight to a replica's Canary validator over
// TLS, trusting the CA bundle the webhook configurations carry, and expects an answer to it.
func assertServesAdmission(t *testing.T, h *harness.Harness, r *harness.Canarygate) {
	t.Helper()
	cfg, err := h.Clientset.AdmissionregistrationV1().ValidatingWebhookConfigurations().Get(t.Context(), "canarygate", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if len(cfg.Webhooks) == 0 || !roots.AppendCertsFromPEM(cfg.Webhooks[0].ClientConfig.CABundle) {
		t.Fatal("no CA bundle in the validating webhook configuration")
	}
	policy, err := json.Marshal(v1alpha1.CanaryPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion.String(), Kind: "CanaryPolicy"},
		ObjectMeta: metav1.ObjectMeta{Name: "replica-probe"},
		Spec:       v1alpha1.CanaryPolicySpec{BreakGlassGroups: []string{"platform-admins"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	review := admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID:       "replica-probe",
			Kind:      metav1.GroupVersionKind{Group: v1alpha1.GroupVersion.Group, Version: v1alpha1.GroupVersion.Version, Kind: "CanaryPolicy"},
			Resource:  metav1.GroupVersionResource{Group: v1alpha1.GroupVersion.Group, Version: v1alpha1.GroupVersion.Version, Resource: "canarypolicies"},
			Name:      "replica-probe",
			Operation: admissionv1.Create,
		},
	}
	review.Request.Object.Raw = policy
	body, err := json.Marshal(review)
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	resp, err := client.Post(r.WebhookURL+"/validate-canarygate", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatalf("the follower does not serve admission: %v", err)
	}
	defer resp.Body.Close()
	var answer admissionv1.AdmissionReview
	if err := json.NewDecoder(resp.Body).Decode(&answer); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("the follower's admission answer: %s, %v", resp.Status, err)
	}
	if answer.Response == nil || answer.Response.UID != "replica-probe" || !answer.Response.Allowed {
		t.Errorf("the follower's admission answer: %+v", answer.Response)
	}
}
