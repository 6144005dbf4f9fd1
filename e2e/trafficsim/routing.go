package trafficsim

import (
	"slices"
	"strings"

	networking "istio.io/api/networking/v1alpha3"
	istionetworkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// This file decides where the mesh sends a Service's requests. It is written independently of
// canarygate's router on purpose: the simulator is the referee, so it must not share the code it
// judges.

// Ref names a namespaced object.
type Ref struct{ Namespace, Name string }

func (r Ref) String() string { return r.Namespace + "/" + r.Name }

// workload is a Deployment as Istio's telemetry describes it: every field is a label value.
type workload struct {
	Ref
	app, version, canonicalService, canonicalRevision, principal string
}

// share is the part of a Service's requests that one workload serves after routing.
type share struct {
	service  Ref // the Service the mesh routed to (destination_service_*)
	workload workload
	fraction float64
}

// world is a read-only snapshot of the objects routing depends on.
type world struct {
	services    map[Ref]*corev1.Service
	deployments map[string][]*appsv1.Deployment // by namespace
	// virtualServices by the Service their hosts name; in the order Istio would prefer them.
	virtualServices map[Ref][]*istionetworkingv1.VirtualService
}

func newWorld(services []*corev1.Service, deployments []*appsv1.Deployment, vss []*istionetworkingv1.VirtualService) *world {
	w := &world{
		services:        map[Ref]*corev1.Service{},
		deployments:     map[string][]*appsv1.Deployment{},
		virtualServices: map[Ref][]*istionetworkingv1.VirtualService{},
	}
	for _, s := range services {
		w.services[Ref{s.Namespace, s.Name}] = s
	}
	for _, d := range deployments {
		w.deployments[d.Namespace] = append(w.deployments[d.Namespace], d)
	}
	// When several VirtualServices claim one host, Istio's sidecars use the oldest.
	sorted := slices.Clone(vss)
	slices.SortStableFunc(sorted, func(a, b *istionetworkingv1.VirtualService) int {
		if c := a.CreationTimestamp.Compare(b.CreationTimestamp.Time); c != 0 {
			return c
		}
		return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	for _, vs := range sorted {
		if !appliesToMesh(vs) {
			continue
		}
		seen := map[Ref]bool{}
		for _, h := range vs.Spec.GetHosts() {
			if ref, ok := serviceOfHost(h, vs.Namespace); ok && !seen[ref] {
				seen[ref] = true
				w.virtualServices[ref] = append(w.virtualServices[ref], vs)
			}
		}
	}
	return w
}

// appliesToMesh: a VirtualService without gateways, or listing "mesh", configures the sidecars.
func appliesToMesh(vs *istionetworkingv1.VirtualService) bool {
	gws := vs.Spec.GetGateways()
	return len(gws) == 0 || slices.Contains(gws, "mesh")
}

// serviceOfHost resolves a host as Istio does for a config in namespace ns: a short name is a
// Service of ns, name.namespace[.svc[.<cluster domain>]] a Service of that namespace. Anything else
// (external names, wildcards) is no Service.
func serviceOfHost(host, ns string) (Ref, bool) {
	if host == "" || strings.Contains(host, "*") {
		return Ref{}, false
	}
	parts := strings.Split(host, ".")
	switch {
	case len(parts) == 1:
		return Ref{ns, parts[0]}, true
	case len(parts) == 2, len(parts) >= 3 && parts[2] == "svc" && (len(parts) == 3 || parts[3] != ""):
		return Ref{parts[1], parts[0]}, true
	}
	return Ref{}, false
}

// route returns where the mesh sends requests addressed to Service svc; nil when they reach no
// workload (no such Service, no route that matches plain requests, no pods).
func (w *world) route(svc Ref) []share {
	if _, ok := w.services[svc]; !ok {
		return nil
	}
	vss := w.virtualServices[svc]
	if len(vss) == 0 {
		return w.serve(svc, 1)
	}
	vs := vss[0]
	r := defaultRoute(vs.Spec.GetHttp())
	if r == nil {
		return nil // Istio answers 404 (NR) without reaching any workload
	}
	dests := r.GetRoute()
	weights := make([]float64, len(dests))
	total := 0.0
	for i, d := range dests {
		weights[i] = float64(max(d.GetWeight(), 0))
		if len(dests) == 1 {
			weights[i] = 1 // a lone destination receives everything, whatever its weight
		}
		total += weights[i]
	}
	var out []share
	for i, d := range dests {
		if total == 0 || weights[i] == 0 {
			continue
		}
		ref, ok := serviceOfHost(d.GetDestination().GetHost(), vs.Namespace)
		if !ok {
			continue
		}
		out = append(out, w.serve(ref, weights[i]/total)...)
	}
	return out
}

// defaultRoute is the HTTP route a request without particular headers or path takes: the first one
// with no match condition, or matching every path.
func defaultRoute(routes []*networking.HTTPRoute) *networking.HTTPRoute {
	for _, r := range routes {
		if len(r.GetMatch()) == 0 {
			return r
		}
		for _, m := range r.GetMatch() {
			if matchesEverything(m) {
				return r
			}
		}
	}
	return nil
}

func matchesEverything(m *networking.HTTPMatchRequest) bool {
	prefix := m.GetUri().GetPrefix()
	return (m.GetUri() == nil || prefix == "/") &&
		m.GetScheme() == nil && m.GetMethod() == nil && m.GetAuthority() == nil &&
		len(m.GetHeaders()) == 0 && len(m.GetQueryParams()) == 0 && len(m.GetWithoutHeaders()) == 0 &&
		m.GetPort() == 0 && len(m.GetSourceLabels()) == 0 && len(m.GetGateways()) == 0 && m.GetSourceNamespace() == "" &&
		m.GetStatPrefix() == ""
}

// serve spreads fraction of the requests over the pods the Service selects: each Deployment whose
// pod template matches the selector gets a part proportional to its replicas, as a round-robin over
// endpoints would give it.
func (w *world) serve(svc Ref, fraction float64) []share {
	s, ok := w.services[svc]
	if !ok || len(s.Spec.Selector) == 0 {
		return nil
	}
	sel := labels.SelectorFromSet(s.Spec.Selector)
	var matched []*appsv1.Deployment
	var total int32
	for _, d := range w.deployments[svc.Namespace] {
		if sel.Matches(labels.Set(d.Spec.Template.Labels)) && replicas(d) > 0 {
			matched = append(matched, d)
			total += replicas(d)
		}
	}
	out := make([]share, 0, len(matched))
	for _, d := range matched {
		out = append(out, share{service: svc, workload: describe(d), fraction: fraction * float64(replicas(d)) / float64(total)})
	}
	return out
}

// describe derives the workload labels Istio's telemetry reports for a Deployment's pods.
func describe(d *appsv1.Deployment) workload {
	l := d.Spec.Template.Labels
	first := func(fallback string, keys ...string) string {
		for _, k := range keys {
			if v := l[k]; v != "" {
				return v
			}
		}
		return fallback
	}
	sa := d.Spec.Template.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	return workload{
		Ref:               Ref{d.Namespace, d.Name},
		app:               first(unknown, "app"),
		version:           first(unknown, "version"),
		canonicalService:  first(d.Name, "service.istio.io/canonical-name", "app.kubernetes.io/name", "app"),
		canonicalRevision: first("latest", "service.istio.io/canonical-revision", "app.kubernetes.io/version", "version"),
		principal:         "spiffe://cluster.local/ns/" + d.Namespace + "/sa/" + sa,
	}
}

// replicas defaults to 1 as the API server does.
func replicas(d *appsv1.Deployment) int32 {
	if d.Spec.Replicas == nil {
		return 1
	}
	return *d.Spec.Replicas
}

const unknown = "unknown"
