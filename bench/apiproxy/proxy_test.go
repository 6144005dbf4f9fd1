package apiproxy

import (
	"net/url"
	"testing"
	"time"
)

func TestClassify(t *testing.T) {
	for _, tc := range []struct{ method, url, want string }{
		{"GET", "/api/v1/namespaces/shop/pods?watch=true&resourceVersion=5", "watch pods"},
		{"GET", "/api/v1/namespaces?limit=500", "list namespaces"},
		{"GET", "/api/v1/namespaces/shop", "get namespaces"},
		{"GET", "/apis/apps/v1/namespaces/shop/deployments/web", "get deployments"},
		{"GET", "/apis/apps/v1/deployments?watch=1", "watch deployments"},
		{"PATCH", "/apis/canarygate.io/v1alpha1/namespaces/shop/canaries/web/status", "patch canaries/status"},
		{"PUT", "/apis/apps/v1/namespaces/shop/deployments/web", "update deployments"},
		{"POST", "/api/v1/namespaces/shop/services", "create services"},
		{"POST", "/api/v1/namespaces/shop/events", "create events"},
		{"DELETE", "/apis/networking.istio.io/v1/namespaces/shop/virtualservices/web-canary", "delete virtualservices"},
		{"DELETE", "/api/v1/namespaces/shop/pods", "deletecollection pods"},
		{"POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", "create selfsubjectaccessreviews"},
		{"GET", "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/x", "get leases"},
		{"GET", "/version", "get discovery"},
		{"GET", "/apis/apps/v1", "get discovery"},
		{"GET", "/api", "get discovery"},
	} {
		u, err := url.Parse(tc.url)
		if err != nil {
			t.Fatal(err)
		}
		if got := Classify(tc.method, u); got != tc.want {
			t.Errorf("Classify(%s %s) = %q, want %q", tc.method, tc.url, got, tc.want)
		}
	}
}

func TestCountsArithmetic(t *testing.T) {
	before := Counts{"get pods": 2, "patch canaries/status": 5}
	after := Counts{"get pods": 2, "patch canaries/status": 9, "watch pods": 1}
	d := after.Sub(before)
	if len(d) != 2 || d["patch canaries/status"] != 4 || d["watch pods"] != 1 {
		t.Errorf("Sub = %v", d)
	}
	if d.Total() != 5 {
		t.Errorf("Total = %d, want 5", d.Total())
	}
	if v := after.ByVerb(); v["patch"] != 9 || v["get"] != 2 || v["watch"] != 1 {
		t.Errorf("ByVerb = %v", v)
	}
}

func TestRate(t *testing.T) {
	p := &Proxy{counts: Counts{}, perSec: map[int64]int64{}}
	base := time.Unix(1000, 0)
	p.perSec[1000], p.perSec[1001], p.perSec[1003] = 50, 10, 60
	peak, near := p.Rate(base, base.Add(3*time.Second), 45)
	if peak != 60 || near != 2 {
		t.Errorf("Rate = %d, %d; want 60, 2", peak, near)
	}
	if peak, near := p.Rate(base.Add(time.Second), base.Add(2*time.Second), 45); peak != 10 || near != 0 {
		t.Errorf("Rate over a quiet span = %d, %d; want 10, 0", peak, near)
	}
}

func TestLatenciesWindow(t *testing.T) {
	base := time.Unix(1_000_000, 0)
	p := &Proxy{latencies: []timed{
		{end: base, latency: time.Millisecond, key: "create events"},
		{end: base.Add(time.Second), latency: 2 * time.Millisecond, key: "create events"},
		{end: base.Add(2 * time.Second), latency: 3 * time.Millisecond, key: "update canaries/status"},
	}}
	got := p.Latencies(base.Add(time.Second), base.Add(3*time.Second))
	if len(got) != 2 || len(got["create events"]) != 1 || got["create events"][0] != 2*time.Millisecond || got["update canaries/status"][0] != 3*time.Millisecond {
		t.Fatalf("Latencies in [1 s, 3 s] = %v, want create events [2ms], update canaries/status [3ms]", got)
	}
}
