package trafficsim

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	networking "istio.io/api/networking/v1alpha3"
	istionetworkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const ns = "shop"

func service(name string, selector map[string]string) *corev1.Service {
	return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: corev1.ServiceSpec{Selector: selector}}
}

func deployment(name string, replicas int32, podLabels map[string]string) *appsv1.Deployment {
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	d.Spec.Replicas = &replicas
	d.Spec.Template.Labels = podLabels
	return d
}

// vs builds a mesh VirtualService for hosts with one HTTP route per entry of routes, each given as
// "host=weight host=weight".
func vs(name string, age time.Duration, hosts []string, routes ...string) *istionetworkingv1.VirtualService {
	v := &istionetworkingv1.VirtualService{ObjectMeta: metav1.ObjectMeta{
		Namespace: ns, Name: name, CreationTimestamp: metav1.NewTime(time.Unix(1e9, 0).Add(-age)),
	}}
	v.Spec.Hosts = hosts
	for _, rt := range routes {
		hr := &networking.HTTPRoute{}
		for _, d := range strings.Fields(rt) {
			host, w, _ := strings.Cut(d, "=")
			var weight int32
			fmt.Sscan(w, &weight)
			hr.Route = append(hr.Route, &networking.HTTPRouteDestination{Destination: &networking.Destination{Host: host}, Weight: weight})
		}
		v.Spec.Http = append(v.Spec.Http, hr)
	}
	return v
}

// render shows shares as sorted "workload via service=fraction" strings.
func render(shares []share) string {
	m := map[string]float64{}
	for _, s := range shares {
		m[s.workload.Name+" via "+s.service.Name] += s.fraction
	}
	var out []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		out = append(out, fmt.Sprintf("%s=%.3f", k, m[k]))
	}
	return strings.Join(out, ", ")
}

func TestServiceOfHost(t *testing.T) {
	for _, tc := range []struct {
		host string
		want string // "" for no Service
	}{
		{"web", "shop/web"},
		{"web.other", "other/web"},
		{"web.other.svc", "other/web"},
		{"web.other.svc.cluster.local", "other/web"},
		{"web.other.svc.", ""},
		{"*.shop.svc.cluster.local", ""},
		{"www.example.com", ""},
		{"", ""},
	} {
		ref, ok := serviceOfHost(tc.host, ns)
		got := ""
		if ok {
			got = ref.String()
		}
		if got != tc.want {
			t.Errorf("serviceOfHost(%q) = %q, want %q", tc.host, got, tc.want)
		}
	}
}

func TestRoute(t *testing.T) {
	base := func() ([]*corev1.Service, []*appsv1.Deployment) {
		return []*corev1.Service{
				service("web", map[string]string{"app": "web"}),
				service("web-canary", map[string]string{"app": "web-canary"}),
				service("headless", nil),
			}, []*appsv1.Deployment{
				deployment("web", 2, map[string]string{"app": "web", "version": "v1"}),
				deployment("web-canary", 1, map[string]string{"app": "web-canary"}),
			}
	}
	gatewayOnly := vs("ingress", time.Hour, []string{"web"}, "web-canary=100")
	gatewayOnly.Spec.Gateways = []string{"istio-system/public"}
	headerFirst := vs("web", time.Hour, []string{"web"}, "web-canary=100", "web=100")
	headerFirst.Spec.Http[0].Match = []*networking.HTTPMatchRequest{{Headers: map[string]*networking.StringMatch{
		"x-canary": {MatchType: &networking.StringMatch_Exact{Exact: "1"}},
	}}}
	prefixSlash := vs("web", time.Hour, []string{"web"}, "web=50 web-canary=50")
	prefixSlash.Spec.Http[0].Match = []*networking.HTTPMatchRequest{{Uri: &networking.StringMatch{MatchType: &networking.StringMatch_Prefix{Prefix: "/"}}}}

	for _, tc := range []struct {
		name  string
		vss   []*istionetworkingv1.VirtualService
		extra []*appsv1.Deployment
		svc   string
		want  string
	}{
		{name: "no VirtualService: the Service's own pods", svc: "web", want: "web via web=1.000"},
		{name: "weights split", vss: []*istionetworkingv1.VirtualService{vs("web", time.Hour, []string{"web"}, "web=80 web-canary=20")},
			svc: "web", want: "web via web=0.800, web-canary via web-canary=0.200"},
		{name: "zero weight gets nothing", vss: []*istionetworkingv1.VirtualService{vs("web", time.Hour, []string{"web"}, "web=100 web-canary=0")},
			svc: "web", want: "web via web=1.000"},
		{name: "relative weights", vss: []*istionetworkingv1.VirtualService{vs("web", time.Hour, []string{"web.shop.svc.cluster.local"}, "web=1 web-canary.shop.svc.cluster.local=3")},
			svc: "web", want: "web via web=0.250, web-canary via web-canary=0.750"},
		{name: "lone destination ignores its weight", vss: []*istionetworkingv1.VirtualService{vs("web", time.Hour, []string{"web"}, "web-canary=0")},
			svc: "web", want: "web-canary via web-canary=1.000"},
		{name: "gateway-only VirtualService does not apply to the mesh", vss: []*istionetworkingv1.VirtualService{gatewayOnly},
			svc: "web", want: "web via web=1.000"},
		{name: "header-matched route is skipped", vss: []*istionetworkingv1.VirtualService{headerFirst},
			svc: "web", want: "web via web=1.000"},
		{name: "prefix / matches everything", vss: []*istionetworkingv1.VirtualService{prefixSlash},
			svc: "web", want: "web via web=0.500, web-canary via web-canary=0.500"},
		{name: "the oldest VirtualService wins", vss: []*istionetworkingv1.VirtualService{
			vs("young", time.Minute, []string{"web"}, "web-canary=100"),
			vs("old", time.Hour, []string{"web"}, "web=100"),
		}, svc: "web", want: "web via web=1.000"},
		{name: "external destinations reach no workload", vss: []*istionetworkingv1.VirtualService{vs("web", time.Hour, []string{"web"}, "web=50 www.example.com=50")},
			svc: "web", want: "web via web=0.500"},
		{name: "a Service selecting two Deployments splits by replicas",
			extra: []*appsv1.Deployment{deployment("web-v2", 1, map[string]string{"app": "web", "version": "v2"})},
			svc:   "web", want: "web via web=0.667, web-v2 via web=0.333"},
		{name: "scaled to zero gets nothing", extra: []*appsv1.Deployment{deployment("web-old", 0, map[string]string{"app": "web"})},
			svc: "web", want: "web via web=1.000"},
		{name: "Service without selector", svc: "headless", want: ""},
		{name: "unknown Service", svc: "nope", want: ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			svcs, deps := base()
			w := newWorld(svcs, append(deps, tc.extra...), tc.vss)
			if got := render(w.route(Ref{ns, tc.svc})); got != tc.want {
				t.Errorf("route(%s) = %q, want %q", tc.svc, got, tc.want)
			}
		})
	}
}

func TestDescribe(t *testing.T) {
	d := deployment("web", 1, map[string]string{"app": "web", "version": "v1", "app.kubernetes.io/name": "shopweb"})
	d.Spec.Template.Spec.ServiceAccountName = "web-sa"
	got := describe(d)
	want := workload{Ref: Ref{ns, "web"}, app: "web", version: "v1", canonicalService: "shopweb", canonicalRevision: "v1",
		principal: "spiffe://cluster.local/ns/shop/sa/web-sa"}
	if got != want {
		t.Errorf("describe = %+v, want %+v", got, want)
	}
	bare := describe(deployment("api", 1, map[string]string{"run": "api"}))
	if bare.app != unknown || bare.version != unknown || bare.canonicalService != "api" || bare.canonicalRevision != "latest" ||
		bare.principal != "spiffe://cluster.local/ns/shop/sa/default" {
		t.Errorf("describe without labels = %+v", bare)
	}
}
