package trafficsim

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	networking "istio.io/api/networking/v1alpha3"
	istionetworkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"canarygate.io/canarygate/e2e/testbed"
)

func TestMain(m *testing.M) { os.Exit(testbed.Run(m, testbed.Options{NoPrometheus: true})) }

// sample is one scrape of the simulator, reduced to what the test checks.
type sample struct {
	requests map[string]float64            // "workload code" → istio_requests_total
	buckets  map[string]map[float64]uint64 // workload → le → cumulative count, over all codes
	labels   map[string]map[string]string  // workload → labels of its code-200 series
}

func scrape(t *testing.T, url string) sample {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parsing /metrics: %v", err)
	}
	s := sample{requests: map[string]float64{}, buckets: map[string]map[float64]uint64{}, labels: map[string]map[string]string{}}
	labelsOf := func(m *dto.Metric) map[string]string {
		l := map[string]string{}
		for _, p := range m.GetLabel() {
			l[p.GetName()] = p.GetValue()
		}
		return l
	}
	if f := families["istio_requests_total"]; f != nil {
		if f.GetType() != dto.MetricType_COUNTER {
			t.Errorf("istio_requests_total is a %v", f.GetType())
		}
		for _, m := range f.GetMetric() {
			l := labelsOf(m)
			s.requests[l["destination_workload"]+" "+l["response_code"]] += m.GetCounter().GetValue()
			if l["response_code"] == "200" {
				s.labels[l["destination_workload"]] = l
			}
		}
	}
	if f := families["istio_request_duration_milliseconds"]; f != nil {
		if f.GetType() != dto.MetricType_HISTOGRAM {
			t.Errorf("istio_request_duration_milliseconds is a %v", f.GetType())
		}
		for _, m := range f.GetMetric() {
			wl := labelsOf(m)["destination_workload"]
			if s.buckets[wl] == nil {
				s.buckets[wl] = map[float64]uint64{}
			}
			for _, b := range m.GetHistogram().GetBucket() {
				s.buckets[wl][b.GetUpperBound()] += b.GetCumulativeCount()
			}
		}
	}
	return s
}

func (s sample) total(workload string) float64 {
	return s.requests[workload+" 200"] + s.requests[workload+" 500"]
}

func put(t *testing.T, url string, body any) {
	t.Helper()
	data, _ := json.Marshal(body)
	req, _ := http.NewRequest(http.MethodPut, url, bytes.NewReader(data))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		msg, _ := io.ReadAll(resp.Body)
		t.Fatalf("PUT %s: %s %s", url, resp.Status, msg)
	}
}

// waitFor polls cond for up to a minute.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func workloadObjects(ns, name string, replicas int32) (*corev1.Service, *appsv1.Deployment) {
	podLabels := map[string]string{"app": name}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: corev1.ServiceSpec{
		Selector: podLabels,
		Ports:    []corev1.ServicePort{{Name: "http", Port: 80}},
	}}
	dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: appsv1.DeploymentSpec{
		Replicas: &replicas,
		Selector: &metav1.LabelSelector{MatchLabels: podLabels},
		Template: corev1.PodTemplateSpec{
			ObjectMeta: metav1.ObjectMeta{Labels: podLabels},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "example.com/" + name + ":1"}}},
		},
	}}
	return svc, dep
}

func setWeights(t *testing.T, c client.Client, vs *istionetworkingv1.VirtualService, stable, canary int32) {
	t.Helper()
	vs.Spec.Http[0].Route[0].Weight = stable
	vs.Spec.Http[0].Route[1].Weight = canary
	if err := c.Update(context.Background(), vs); err != nil {
		t.Fatal(err)
	}
}

// within reports whether got is want ± tol.
func within(got, want, tol float64) bool { return math.Abs(got-want) <= tol }

func TestSimulatorFollowsVirtualServiceWeights(t *testing.T) {
	env := testbed.Shared()
	c, err := env.Client()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ns := fmt.Sprintf("trafficsim-%d", time.Now().UnixNano()%1e6)
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"web", "web-canary"} {
		svc, dep := workloadObjects(ns, name, 1)
		for _, obj := range []client.Object{svc, dep} {
			if err := c.Create(ctx, obj); err != nil {
				t.Fatal(err)
			}
		}
	}
	vs := &istionetworkingv1.VirtualService{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"}}
	vs.Spec.Hosts = []string{"web"}
	vs.Spec.Http = []*networking.HTTPRoute{{Route: []*networking.HTTPRouteDestination{
		{Destination: &networking.Destination{Host: "web", Port: &networking.PortSelector{Number: 80}}, Weight: 100},
		{Destination: &networking.Destination{Host: "web-canary." + ns + ".svc.cluster.local", Port: &networking.PortSelector{Number: 80}}, Weight: 0},
	}}}
	if err := c.Create(ctx, vs); err != nil {
		t.Fatal(err)
	}

	sim, err := New(env.Config, Options{Tick: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := sim.Start(ctx); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(sim.Handler())
	defer srv.Close()
	put(t, srv.URL+"/services/"+ns+"/web", map[string]any{"rps": 200})
	put(t, srv.URL+"/workloads/"+ns+"/web-canary", map[string]any{"errorRatio": 0.25, "latencyMs": 300})
	put(t, srv.URL+"/workloads/"+ns+"/web-canary", map[string]any{"latencyMs": 300}) // keeps the error ratio

	// Weight 0: the canary gets nothing, so it has no series at all.
	waitFor(t, "stable traffic", func() bool { return scrape(t, srv.URL).total("web") >= 100 })
	s := scrape(t, srv.URL)
	if _, ok := s.labels["web-canary"]; ok || s.total("web-canary") != 0 {
		t.Fatalf("canary at weight 0 has series: %v", s.requests)
	}
	want := map[string]string{
		"reporter": "destination", "destination_workload_namespace": ns, "destination_service_name": "web",
		"destination_service": "web." + ns + ".svc.cluster.local", "destination_service_namespace": ns,
		"source_workload": "trafficsim", "source_workload_namespace": "trafficsim", "request_protocol": "http",
		"response_flags": "-", "connection_security_policy": "mutual_tls", "destination_app": "web",
	}
	for k, v := range want {
		if got := s.labels["web"][k]; got != v {
			t.Errorf("label %s = %q, want %q", k, got, v)
		}
	}

	// 80/20: deltas between two scrapes follow the weights.
	setWeights(t, c, vs, 80, 20)
	waitFor(t, "the canary's first requests", func() bool { return scrape(t, srv.URL).total("web-canary") > 0 })
	before := scrape(t, srv.URL)
	waitFor(t, "400 more requests", func() bool {
		now := scrape(t, srv.URL)
		return now.total("web")+now.total("web-canary")-before.total("web")-before.total("web-canary") >= 400
	})
	after := scrape(t, srv.URL)
	stable, canary := after.total("web")-before.total("web"), after.total("web-canary")-before.total("web-canary")
	// Carries keep each flow within one request of its exact share; ±2 per scrape pair.
	if !within(canary, (stable+canary)*0.2, 3) {
		t.Errorf("at 80/20: stable %v, canary %v requests", stable, canary)
	}
	if errs := after.requests["web-canary 500"]; !within(errs, after.total("web-canary")*0.25, 1) {
		t.Errorf("canary errors %v of %v, want a quarter", errs, after.total("web-canary"))
	}
	if after.requests["web 500"] != 0 {
		t.Errorf("stable answered %v errors", after.requests["web 500"])
	}
	if l := after.labels["web-canary"]; l["destination_service"] != "web-canary."+ns+".svc.cluster.local" || l["destination_service_name"] != "web-canary" {
		t.Errorf("canary series labels %v", l)
	}
	b := after.buckets["web-canary"]
	if b[250] != 0 || float64(b[500]) != after.total("web-canary") || float64(b[math.Inf(1)]) != after.total("web-canary") {
		t.Errorf("canary latency buckets le=250: %d, le=500: %d, +Inf: %d; want 0, %v, %v", b[250], b[500], b[math.Inf(1)],
			after.total("web-canary"), after.total("web-canary"))
	}

	// 50/50, then 100/0: the simulator follows.
	for _, step := range []struct{ stable, canary int32 }{{50, 50}, {100, 0}} {
		setWeights(t, c, vs, step.stable, step.canary)
		waitFor(t, fmt.Sprintf("routing %d/%d", step.stable, step.canary), func() bool {
			st, err := sim.State(ctx)
			if err != nil {
				t.Fatal(err)
			}
			routes := st.Services[ns+"/web"].Routes
			return within(routes[ns+"/web-canary via "+ns+"/web-canary"], float64(step.canary)/100, 1e-9)
		})
		before := scrape(t, srv.URL)
		waitFor(t, "400 more requests", func() bool {
			now := scrape(t, srv.URL)
			return now.total("web")+now.total("web-canary")-before.total("web")-before.total("web-canary") >= 400
		})
		after := scrape(t, srv.URL)
		stable, canary := after.total("web")-before.total("web"), after.total("web-canary")-before.total("web-canary")
		if !within(canary, (stable+canary)*float64(step.canary)/100, 3) {
			t.Errorf("at %d/%d: stable %v, canary %v requests", step.stable, step.canary, stable, canary)
		}
	}
}

func TestControlAPIRejectsBadInput(t *testing.T) {
	sim, err := New(testbed.Shared().Config, Options{})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(sim.Handler())
	defer srv.Close()
	for _, tc := range []struct{ path, body string }{
		{"/services/shop/web", `{"rps": -1}`},
		{"/services/shop/web", `{}`},
		{"/services/shop/web", `{"rate": 3}`},
		{"/workloads/shop/web", `{"errorRatio": 2}`},
		{"/workloads/shop/web", `{"latencyMs": -5}`},
		{"/workloads/shop/web", `not json`},
	} {
		req, _ := http.NewRequest(http.MethodPut, srv.URL+tc.path, bytes.NewBufferString(tc.body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("PUT %s %s: %s, want 400", tc.path, tc.body, resp.Status)
		}
	}
}
