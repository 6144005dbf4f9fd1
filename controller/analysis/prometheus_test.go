package analysis

import (
	"context"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"math"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	promconfig "github.com/prometheus/common/config"

	"canarygate.io/canarygate/api/v1alpha1"
	"canarygate.io/canarygate/e2e/testbed"
)

// istioBuckets are Istio's default request-duration buckets in milliseconds.
var istioBuckets = []float64{0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000}

// newIstioSimulator serves Istio-shaped metrics. Every scrape first adds one batch of requests, so
// each series grows in fixed proportions between samples and rates come out exact: the canary
// app-canary in namespace ns answers 90 of 100 requests with 200 and 10 with 503, all taking 300ms
// (the (250, 500] bucket). The stable workload (all 500s, 5s) and a source-reporter view of the
// canary (all 500s) must not leak into the canary's figures.
func newIstioSimulator(t *testing.T) *httptest.Server {
	reg := prometheus.NewRegistry()
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "istio_requests_total"},
		[]string{"reporter", "destination_workload", "destination_workload_namespace", "response_code"})
	duration := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "istio_request_duration_milliseconds", Buckets: istioBuckets},
		[]string{"reporter", "destination_workload", "destination_workload_namespace", "response_code"})
	reg.MustRegister(requests, duration)

	batch := []struct {
		reporter, workload, code string
		n                        int
		ms                       float64
	}{
		{"destination", "app-canary", "200", 90, 300},
		{"destination", "app-canary", "503", 10, 300},
		{"destination", "app", "500", 100, 5000},
		{"source", "app-canary", "500", 100, 5000},
	}
	var mu sync.Mutex
	metrics := promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		for _, b := range batch {
			requests.WithLabelValues(b.reporter, b.workload, "ns", b.code).Add(float64(b.n))
			for range b.n {
				duration.WithLabelValues(b.reporter, b.workload, "ns", b.code).Observe(b.ms)
			}
		}
		mu.Unlock()
		metrics.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// eventually polls f until it returns nil or a minute passes; Prometheus picks up an added target
// within about a second and needs two scrapes of it before rate() has a value.
func eventually(t *testing.T, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// authProxy fronts Prometheus and admits only requests whose Authorization header is want.
func authProxy(t *testing.T, promURL, want string, tls bool) *httptest.Server {
	u, err := url.Parse(promURL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(u)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != want {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		proxy.ServeHTTP(w, r)
	})
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the untrusted-CA case makes handshakes fail
	if tls {
		srv.StartTLS()
	} else {
		srv.Start()
	}
	t.Cleanup(srv.Close)
	return srv
}

func TestPrometheus(t *testing.T) {
	sim := newIstioSimulator(t)
	// The test bed's Prometheus alone: it scrapes its targets every second.
	env, err := testbed.Start(t.Context(), testbed.Options{PrometheusOnly: true, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Error(err)
		}
	})
	if err := env.AddScrapeTarget("istio", sim.Listener.Addr().String()); err != nil {
		t.Fatal(err)
	}
	promURL := env.PrometheusURL
	ctx := context.Background()

	p, err := NewPrometheus(promURL, promconfig.HTTPClientConfig{})
	if err != nil {
		t.Fatal(err)
	}
	canary := Vars{Namespace: "ns", Name: "app", Target: "app-canary", Service: "app", Interval: "30s"}
	query := func(name string, vars Vars) string {
		q, err := RenderQuery(v1alpha1.CanaryMetric{Name: name}, vars)
		if err != nil {
			t.Fatal(err)
		}
		return q
	}
	eventually(t, "canary success rate", func() error {
		_, ok, err := p.Query(ctx, query(v1alpha1.MetricRequestSuccessRate, canary))
		if err == nil && !ok {
			err = errors.New("no data yet")
		}
		return err
	})

	t.Run("built-in queries", func(t *testing.T) {
		rate, ok, err := p.Query(ctx, query(v1alpha1.MetricRequestSuccessRate, canary))
		if err != nil || !ok || math.Abs(rate-90) > 1e-6 {
			t.Errorf("success rate %v %v %v, want 90%% (10%% of the canary's requests are 503)", rate, ok, err)
		}
		// All observations fall into (250, 500]: the 99th percentile interpolates to 250+0.99*250.
		p99, ok, err := p.Query(ctx, query(v1alpha1.MetricRequestDuration, canary))
		if err != nil || !ok || math.Abs(p99-497.5) > 1e-6 {
			t.Errorf("p99 %v %v %v, want 497.5ms", p99, ok, err)
		}
	})

	t.Run("result shapes", func(t *testing.T) {
		cases := []struct {
			query string
			value float64
			ok    bool
			err   string
		}{
			{query: `count(istio_requests_total)`, value: 4, ok: true},
			{query: `6 * 7`, value: 42, ok: true}, // a scalar
			{query: `istio_requests_total{destination_workload="nobody"}`},
			{query: `0 / 0`}, // NaN is no data
			{query: `istio_requests_total`, err: "query returned 4 series, want one: aggregate them"},
			{query: `istio_requests_total[1m]`, err: "query returned a matrix"},
			{query: `sum(`, err: "parse error"},
		}
		for _, tc := range cases {
			v, ok, err := p.Query(ctx, tc.query)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Errorf("%s: error %v, want one containing %q", tc.query, err, tc.err)
				}
				continue
			}
			if err != nil || ok != tc.ok || v != tc.value {
				t.Errorf("%s: got %v %v %v, want %v %v", tc.query, v, ok, err, tc.value, tc.ok)
			}
		}
	})

	t.Run("RunMetrics judges the canary", func(t *testing.T) {
		cases := []struct {
			name    string
			metrics []v1alpha1.CanaryMetric
			vars    Vars
			noData  v1alpha1.NoDataPolicy
			verdict Verdict
			msg     string
		}{{
			name: "healthy enough",
			metrics: []v1alpha1.CanaryMetric{
				metric(v1alpha1.MetricRequestSuccessRate, ptr(85), nil),
				metric(v1alpha1.MetricRequestDuration, nil, ptr(500)),
			},
			vars: canary, verdict: Pass,
		}, {
			name:    "success rate under its minimum",
			metrics: []v1alpha1.CanaryMetric{metric(v1alpha1.MetricRequestSuccessRate, ptr(99), nil)},
			vars:    canary, verdict: Fail, msg: "metric request-success-rate: 90 is below the minimum 99",
		}, {
			name:    "latency over its maximum",
			metrics: []v1alpha1.CanaryMetric{metric(v1alpha1.MetricRequestDuration, nil, ptr(400))},
			vars:    canary, verdict: Fail, msg: "metric request-duration: 497.5 is above the maximum 400",
		}, {
			name:    "a workload without traffic has no data",
			metrics: []v1alpha1.CanaryMetric{metric(v1alpha1.MetricRequestSuccessRate, ptr(99), nil)},
			vars:    Vars{Namespace: "ns", Target: "absent-canary"}, verdict: Fail, msg: "metric request-success-rate: no data",
		}, {
			name:    "no data can wait",
			metrics: []v1alpha1.CanaryMetric{metric(v1alpha1.MetricRequestDuration, nil, ptr(500))},
			vars:    Vars{Namespace: "ns", Target: "absent-canary"}, noData: v1alpha1.NoDataWait, verdict: Wait,
		}, {
			name: "custom query",
			// A ratio, so it is exact however young the series: 10% for the canary; 100% if the
			// stable workload leaked in, 55% if the source reporter did.
			metrics: []v1alpha1.CanaryMetric{{Name: "error-percentage", Interval: "30s",
				Query: `sum(rate(istio_requests_total{reporter="destination",destination_workload="{{ target }}",destination_workload_namespace="{{ namespace }}",response_code=~"5.."}[{{ interval }}]))
					/ sum(rate(istio_requests_total{reporter="destination",destination_workload="{{ target }}",destination_workload_namespace="{{ namespace }}"}[{{ interval }}])) * 100`,
				ThresholdRange: &v1alpha1.CanaryThresholdRange{Min: ptr(9.999), Max: ptr(10.001)}}},
			vars: canary, verdict: Pass,
		}, {
			name:    "bad PromQL fails with Prometheus' message",
			metrics: []v1alpha1.CanaryMetric{{Name: "broken", Query: `sum(rate(istio_requests_total[{{ interval }}]`}},
			vars:    canary, verdict: Fail, msg: "metric broken: prometheus query failed: bad_data",
		}}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				r := RunMetrics(ctx, p, tc.metrics, tc.vars, tc.noData)
				if r.Verdict != tc.verdict || !strings.Contains(r.Message, tc.msg) {
					t.Errorf("got %s %q, want %s with %q", r.Verdict, r.Message, tc.verdict, tc.msg)
				}
			})
		}
	})

	t.Run("bearer token", func(t *testing.T) {
		proxy := authProxy(t, promURL, "Bearer s3cret", false)
		without, err := NewPrometheus(proxy.URL, promconfig.HTTPClientConfig{})
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := without.Query(ctx, "6 * 7"); err == nil || !strings.Contains(err.Error(), "401") {
			t.Errorf("without token: error %v, want 401", err)
		}
		with, err := NewPrometheus(proxy.URL, promconfig.HTTPClientConfig{BearerToken: "s3cret"})
		if err != nil {
			t.Fatal(err)
		}
		if v, ok, err := with.Query(ctx, "6 * 7"); err != nil || !ok || v != 42 {
			t.Errorf("with token: %v %v %v", v, ok, err)
		}
	})

	t.Run("basic auth over TLS", func(t *testing.T) {
		proxy := authProxy(t, promURL, "Basic YWRtaW46cGFzcw==", true) // admin:pass
		basic := &promconfig.BasicAuth{Username: "admin", Password: "pass"}

		untrusted, err := NewPrometheus(proxy.URL, promconfig.HTTPClientConfig{BasicAuth: basic})
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := untrusted.Query(ctx, "6 * 7"); err == nil || !strings.Contains(err.Error(), "certificate") {
			t.Errorf("unknown CA: error %v, want a certificate error", err)
		}

		ca := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: proxy.Certificate().Raw}))
		trusted, err := NewPrometheus(proxy.URL, promconfig.HTTPClientConfig{BasicAuth: basic, TLSConfig: promconfig.TLSConfig{CA: ca}})
		if err != nil {
			t.Fatal(err)
		}
		if v, ok, err := trusted.Query(ctx, "6 * 7"); err != nil || !ok || v != 42 {
			t.Errorf("trusted CA and basic auth: %v %v %v", v, ok, err)
		}
	})
}

func TestNewPrometheusInvalid(t *testing.T) {
	cases := []struct {
		address string
		cfg     promconfig.HTTPClientConfig
		err     string
	}{
		{"prometheus:9090", promconfig.HTTPClientConfig{}, "want http(s)://host"},
		{"ftp://prometheus", promconfig.HTTPClientConfig{}, "want http(s)://host"},
		{"http://", promconfig.HTTPClientConfig{}, "want http(s)://host"},
		{"http://prom\x7f", promconfig.HTTPClientConfig{}, "invalid control character"},
		{"http://prometheus:9090", promconfig.HTTPClientConfig{BearerToken: "a", BasicAuth: &promconfig.BasicAuth{Username: "u"}},
			"http client config: at most one of basic_auth, oauth2, bearer_token"},
	}
	for _, tc := range cases {
		if _, err := NewPrometheus(tc.address, tc.cfg); err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%q: error %v, want one containing %q", tc.address, err, tc.err)
		}
	}
}

// TestPrometheusTimeoutAndWarnings uses a stand-in server: real Prometheus neither hangs nor warns
// on demand.
func TestPrometheusTimeoutAndWarnings(t *testing.T) {
	gotTimeout := make(chan string, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		switch r.Form.Get("query") {
		case "hang":
			gotTimeout <- r.Form.Get("timeout")
			<-r.Context().Done()
		case "warn":
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"status":"success","warnings":["partial data: store down"],"data":{"resultType":"vector","result":[{"metric":{},"value":[1,"99.5"]}]}}`)
		}
	}))
	defer srv.Close()
	p, err := NewPrometheus(srv.URL, promconfig.HTTPClientConfig{})
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	if _, _, err := p.Query(ctx, "hang"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %v, want the deadline", err)
	}
	// Prometheus is told how long we wait, in whole seconds (it rejects "1.4s").
	if got := <-gotTimeout; got != "1s" {
		t.Errorf("timeout parameter %q, want 1s", got)
	}

	var logged []string
	logger := funcr.New(func(prefix, args string) { logged = append(logged, args) }, funcr.Options{})
	v, ok, err := p.Query(logr.NewContext(context.Background(), logger), "warn")
	if err != nil || !ok || v != 99.5 {
		t.Errorf("warnings must not fail the query: %v %v %v", v, ok, err)
	}
	if len(logged) != 1 || !strings.Contains(logged[0], "partial data: store down") {
		t.Errorf("logged %q, want the warning", logged)
	}
}
