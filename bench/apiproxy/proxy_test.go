package apiproxy

import (
	"net/url"
	"testing"
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
