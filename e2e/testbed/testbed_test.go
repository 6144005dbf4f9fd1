package testbed_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	promapi "github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/model"
	istioapinetworkingv1 "istio.io/api/networking/v1"
	istionetworkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	canarygatev1alpha1 "canarygate.io/canarygate/api/v1alpha1"
	"canarygate.io/canarygate/e2e/testbed"
)

func TestMain(m *testing.M) {
	os.Exit(testbed.Run(m, testbed.Options{Logf: func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "testbed: "+format+"\n", args...)
	}}))
}

func newClient(t *testing.T) client.Client {
	t.Helper()
	c, err := testbed.Shared().Client()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func newNamespace(t *testing.T, c client.Client) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "testbed-"}}
	if err := c.Create(t.Context(), ns); err != nil {
		t.Fatal(err)
	}
	return ns.Name
}

// poll waits for cond, failing the test with cond's last complaint on timeout.
func poll(t *testing.T, timeout time.Duration, what string, cond func(ctx context.Context) error) {
	t.Helper()
	var last error
	err := wait.PollUntilContextTimeout(t.Context(), 200*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		last = cond(ctx)
		return last == nil, nil
	})
	if err != nil {
		t.Fatalf("%s: %v (last: %v)", what, err, last)
	}
}

// A Deployment rolls out on the kwok node, and an image change rolls out a new ReplicaSet: proof that
// the API server, controller manager, scheduler and kwok all work together.
func TestDeploymentRollsOut(t *testing.T) {
	c := newClient(t)
	ns := newNamespace(t, c)
	labels := map[string]string{"app": "web"}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](3),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "example.com/web:v1"}}},
			},
		},
	}
	if err := c.Create(t.Context(), dep); err != nil {
		t.Fatal(err)
	}
	waitRolledOut(t, c, dep, "example.com/web:v1")

	var pods corev1.PodList
	if err := c.List(t.Context(), &pods, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		if p.Spec.NodeName != testbed.FakeNodeName || p.Status.Phase != corev1.PodRunning || p.Status.PodIP == "" {
			t.Errorf("pod %s: node %q phase %s IP %q, want Running on %s with an IP", p.Name, p.Spec.NodeName, p.Status.Phase, p.Status.PodIP, testbed.FakeNodeName)
		}
	}

	if err := c.Get(t.Context(), client.ObjectKeyFromObject(dep), dep); err != nil {
		t.Fatal(err)
	}
	dep.Spec.Template.Spec.Containers[0].Image = "example.com/web:v2"
	if err := c.Update(t.Context(), dep); err != nil {
		t.Fatal(err)
	}
	waitRolledOut(t, c, dep, "example.com/web:v2")

	var rss appsv1.ReplicaSetList
	if err := c.List(t.Context(), &rss, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	if len(rss.Items) != 2 {
		t.Fatalf("got %d ReplicaSets, want the old and the new one", len(rss.Items))
	}
}

// waitRolledOut waits until the Deployment is Available with every replica from a ReplicaSet running
// image, and every other ReplicaSet scaled to zero.
func waitRolledOut(t *testing.T, c client.Client, dep *appsv1.Deployment, image string) {
	t.Helper()
	want := *dep.Spec.Replicas
	poll(t, 2*time.Minute, "rollout of "+image, func(ctx context.Context) error {
		var d appsv1.Deployment
		if err := c.Get(ctx, client.ObjectKeyFromObject(dep), &d); err != nil {
			return err
		}
		available := false
		for _, cond := range d.Status.Conditions {
			available = available || (cond.Type == appsv1.DeploymentAvailable && cond.Status == corev1.ConditionTrue)
		}
		s := d.Status
		if s.ObservedGeneration < d.Generation || !available || s.UpdatedReplicas != want || s.AvailableReplicas != want || s.Replicas != want {
			return fmt.Errorf("deployment status %+v", s)
		}
		var rss appsv1.ReplicaSetList
		if err := c.List(ctx, &rss, client.InNamespace(dep.Namespace)); err != nil {
			return err
		}
		current := 0
		for _, rs := range rss.Items {
			if rs.Spec.Template.Spec.Containers[0].Image == image {
				current++
				if rs.Status.ReadyReplicas != want || rs.Status.AvailableReplicas != want {
					return fmt.Errorf("ReplicaSet %s: %d ready, %d available", rs.Name, rs.Status.ReadyReplicas, rs.Status.AvailableReplicas)
				}
			} else if rs.Status.Replicas != 0 {
				return fmt.Errorf("old ReplicaSet %s still has %d replicas", rs.Name, rs.Status.Replicas)
			}
		}
		if current != 1 {
			return fmt.Errorf("%d ReplicaSets run %s, want 1", current, image)
		}
		return nil
	})
}

// The canarygate and Istio CRDs are served: objects of each kind can be created, and CRD defaults apply.
func TestCRDsServed(t *testing.T) {
	c := newClient(t)
	ns := newNamespace(t, c)

	canary := &canarygatev1alpha1.Canary{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"},
		Spec:       canarygatev1alpha1.CanarySpec{TargetRef: canarygatev1alpha1.TargetRef{Name: "web"}},
	}
	if err := c.Create(t.Context(), canary); err != nil {
		t.Fatal(err)
	}
	if canary.Spec.Provider != "istio" || canary.Spec.TargetRef.Kind != "Deployment" {
		t.Errorf("Canary defaults not applied by the CRD schema: provider %q, targetRef.kind %q", canary.Spec.Provider, canary.Spec.TargetRef.Kind)
	}
	var policies canarygatev1alpha1.CanaryPolicyList
	if err := c.List(t.Context(), &policies); err != nil {
		t.Fatal(err)
	}

	vs := &istionetworkingv1.VirtualService{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"},
		Spec: istioapinetworkingv1.VirtualService{
			Hosts: []string{"web"},
			Http: []*istioapinetworkingv1.HTTPRoute{{Route: []*istioapinetworkingv1.HTTPRouteDestination{
				{Destination: &istioapinetworkingv1.Destination{Host: "web"}, Weight: 90},
				{Destination: &istioapinetworkingv1.Destination{Host: "web-canary"}, Weight: 10},
			}}},
		},
	}
	if err := c.Create(t.Context(), vs); err != nil {
		t.Fatal(err)
	}
	var got istionetworkingv1.VirtualService
	if err := c.Get(t.Context(), client.ObjectKeyFromObject(vs), &got); err != nil {
		t.Fatal(err)
	}
	if n := len(got.Spec.Http); n != 1 || got.Spec.Http[0].Route[1].Weight != 10 {
		t.Errorf("VirtualService read back as %v", got.Spec.Http)
	}
}

func TestPrometheus(t *testing.T) { checkPrometheus(t, testbed.Shared()) }

// With PrometheusOnly, Prometheus runs alone and works as in the full test bed; there is no Kubernetes,
// and Stop stops Prometheus and removes the directory.
func TestPrometheusOnly(t *testing.T) {
	if _, err := testbed.Start(t.Context(), testbed.Options{PrometheusOnly: true, NoPrometheus: true}); err == nil {
		t.Error("PrometheusOnly with NoPrometheus started, want an error")
	}
	env, err := testbed.Start(t.Context(), testbed.Options{PrometheusOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	if env.Config != nil || env.Kubeconfig != "" || env.APIServerURL != "" || env.NodeName != "" || env.CAFile != "" {
		t.Errorf("Kubernetes fields set without Kubernetes: config %v, kubeconfig %q, API server %q, node %q, CA %q",
			env.Config, env.Kubeconfig, env.APIServerURL, env.NodeName, env.CAFile)
	}
	if _, err := env.Client(); err == nil {
		t.Error("Client succeeded without Kubernetes, want an error")
	}
	if _, err := env.Clientset(); err == nil {
		t.Error("Clientset succeeded without Kubernetes, want an error")
	}

	checkPrometheus(t, env)

	if err := env.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := testbed.HTTPOK(t.Context(), http.DefaultClient, env.PrometheusURL+"/-/ready"); err == nil {
		t.Error("Prometheus still answers after Stop")
	}
	if _, err := os.Stat(env.Dir); !os.IsNotExist(err) {
		t.Errorf("test bed directory %s left after Stop: %v", env.Dir, err)
	}
}

// checkPrometheus checks that env's Prometheus answers queries, scrapes a target added at run time, and
// keeps its data across a restart.
func checkPrometheus(t *testing.T, env *testbed.Env) {
	t.Helper()
	pc, err := promapi.NewClient(promapi.Config{Address: env.PrometheusURL})
	if err != nil {
		t.Fatal(err)
	}
	prom := promv1.NewAPI(pc)
	valueAt := func(ctx context.Context, query string, ts time.Time) (float64, error) {
		v, _, _, err := prom.Query(ctx, query, ts)
		if err != nil {
			return 0, err
		}
		vec, ok := v.(model.Vector)
		if !ok || len(vec) != 1 {
			return 0, fmt.Errorf("%s = %v, want one sample", query, v)
		}
		return float64(vec[0].Value), nil
	}
	valueOf := func(ctx context.Context, query string) (float64, error) { return valueAt(ctx, query, time.Now()) }
	poll(t, time.Minute, "Prometheus scrapes itself", func(ctx context.Context) error {
		if up, err := valueOf(ctx, `up{job="prometheus"}`); err != nil || up != 1 {
			return fmt.Errorf("up = %v, %v", up, err)
		}
		return nil
	})

	reg := prometheus.NewRegistry()
	probe := prometheus.NewGauge(prometheus.GaugeOpts{Name: "testbed_probe", Help: "A value the test looks for."})
	probe.Set(42)
	reg.MustRegister(probe)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })

	if err := env.AddScrapeTarget("probe", l.Addr().String()); err != nil {
		t.Fatal(err)
	}
	poll(t, time.Minute, "Prometheus scrapes the added target", func(ctx context.Context) error {
		if v, err := valueOf(ctx, `testbed_probe{job="probe"}`); err != nil || v != 42 {
			return fmt.Errorf("testbed_probe = %v, %v", v, err)
		}
		return nil
	})
	before := time.Now()

	if err := env.StopPrometheus(); err != nil {
		t.Fatal(err)
	}
	if _, err := valueOf(t.Context(), "up"); err == nil {
		t.Fatal("Prometheus still answers after StopPrometheus")
	}
	if err := env.StartPrometheus(); err != nil {
		t.Fatal(err)
	}
	// A sample scraped before the restart is still there: same data directory.
	v, err := valueAt(t.Context(), `testbed_probe{job="probe"}`, before)
	if err != nil || v != 42 {
		t.Fatalf("sample from before the restart: %v, %v", v, err)
	}
}
