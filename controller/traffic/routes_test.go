package traffic

import (
	"fmt"
	"strings"
	"testing"

	networking "istio.io/api/networking/v1alpha3"
)

const ns = "shop"

var target = Target{Namespace: ns, Owner: "web", StableService: "web", CanaryService: "web-canary", Port: 80}

// d builds a destination from "host[:port][/subset]=weight"; "host" alone has weight 0 and no port.
func d(spec string) *networking.HTTPRouteDestination {
	out := &networking.HTTPRouteDestination{Destination: &networking.Destination{}}
	if h, w, ok := strings.Cut(spec, "="); ok {
		spec = h
		var n int32
		fmt.Sscan(w, &n)
		out.Weight = n
	}
	if h, s, ok := strings.Cut(spec, "/"); ok {
		spec = h
		out.Destination.Subset = s
	}
	if h, p, ok := strings.Cut(spec, ":"); ok {
		spec = h
		var n uint32
		fmt.Sscan(p, &n)
		out.Destination.Port = &networking.PortSelector{Number: n}
	}
	out.Destination.Host = spec
	return out
}

// r builds one HTTP route from destination specs.
func r(specs ...string) *networking.HTTPRoute {
	route := &networking.HTTPRoute{}
	for _, s := range specs {
		route.Route = append(route.Route, d(s))
	}
	return route
}

// show renders routes in the same notation, one route per element.
func show(routes []*networking.HTTPRoute) []string {
	var out []string
	for _, rt := range routes {
		var parts []string
		for _, x := range rt.GetRoute() {
			s := x.GetDestination().GetHost()
			if p := x.GetDestination().GetPort(); p != nil {
				s += fmt.Sprintf(":%d", p.GetNumber())
			}
			if x.GetDestination().GetSubset() != "" {
				s += "/" + x.GetDestination().GetSubset()
			}
			parts = append(parts, fmt.Sprintf("%s=%d", s, x.GetWeight()))
		}
		out = append(out, strings.Join(parts, " "))
	}
	return out
}

func TestHostNamesService(t *testing.T) {
	for _, tc := range []struct {
		host string
		want bool
	}{
		{"web", true},
		{"web.shop", true},
		{"web.shop.svc", true},
		{"web.shop.svc.cluster.local", true},
		{"web.shop.svc.corp.example", true},
		{"web.shop.svc.", false},
		{"web.other", false},
		{"web.other.svc.cluster.local", false},
		{"web-canary", false},
		{"webapp", false},
		{"web.shop.example.com", false},
		{"", false},
	} {
		if got := hostNamesService(tc.host, "web", ns); got != tc.want {
			t.Errorf("hostNamesService(%q) = %v, want %v", tc.host, got, tc.want)
		}
	}
}

func TestEffectiveWeights(t *testing.T) {
	for _, tc := range []struct {
		route *networking.HTTPRoute
		want  string
	}{
		{r("a"), "[100]"},
		{r("a=30"), "[100]"},
		{r("a=80", "b=20"), "[80 20]"},
		{r("a=1", "b=1"), "[50 50]"},
		{r("a=1", "b=1", "c=1"), "[34 33 33]"},
		{r("a=0", "b=0"), "[50 50]"},
		{r("a=3", "b=0"), "[100 0]"},
	} {
		if got := fmt.Sprint(effectiveWeights(tc.route.GetRoute())); got != tc.want {
			t.Errorf("effectiveWeights(%v) = %s, want %s", show([]*networking.HTTPRoute{tc.route}), got, tc.want)
		}
	}
}

func TestDistribute(t *testing.T) {
	for _, tc := range []struct {
		total  int
		shares []int
		want   string
	}{
		{100, []int{1, 1, 1}, "[34 33 33]"},
		{10, []int{0, 0}, "[5 5]"},
		{7, []int{2, 1}, "[5 2]"},
		{0, []int{5, 5}, "[0 0]"},
		{90, []int{90}, "[90]"},
		{1, []int{1, 1}, "[1 0]"},
	} {
		if got := fmt.Sprint(distribute(tc.total, tc.shares)); got != tc.want {
			t.Errorf("distribute(%d, %v) = %s, want %s", tc.total, tc.shares, got, tc.want)
		}
	}
}

func TestWithCanaryWeight(t *testing.T) {
	for _, tc := range []struct {
		name   string
		routes []*networking.HTTPRoute
		weight int
		want   []string
	}{
		{"lone destination with implicit weight", []*networking.HTTPRoute{r("web")}, 20,
			[]string{"web=80 web-canary=20"}},
		{"keeps the user's host form and port", []*networking.HTTPRoute{r("web.shop.svc.cluster.local:80=100")}, 10,
			[]string{"web.shop.svc.cluster.local:80=90 web-canary.shop.svc.cluster.local:80=10"}},
		{"drops the subset, which is defined for the stable host only", []*networking.HTTPRoute{r("web/v1")}, 30,
			[]string{"web/v1=70 web-canary=30"}},
		{"updates an existing canary destination", []*networking.HTTPRoute{r("web=80", "web-canary=20")}, 40,
			[]string{"web=60 web-canary=40"}},
		{"full canary", []*networking.HTTPRoute{r("web=50", "web-canary=50")}, 100,
			[]string{"web=0 web-canary=100"}},
		{"back from full canary", []*networking.HTTPRoute{r("web=0", "web-canary=100")}, 25,
			[]string{"web=75 web-canary=25"}},
		{"splits only the stable share of a shared route", []*networking.HTTPRoute{r("web=80", "legacy=20")}, 50,
			[]string{"web=40 web-canary=40 legacy=20"}},
		{"normalises relative weights first", []*networking.HTTPRoute{r("web=1", "legacy=1")}, 50,
			[]string{"web=25 web-canary=25 legacy=50"}},
		{"leaves other ports and other services alone",
			[]*networking.HTTPRoute{r("web:8080"), r("api")}, 20,
			[]string{"web:8080=0", "api=0"}},
		{"every route that routes the service", []*networking.HTTPRoute{r("web:80=100"), r("web")}, 20,
			[]string{"web:80=80 web-canary:80=20", "web=80 web-canary=20"}},
		{"two subsets of the stable host share one canary", []*networking.HTTPRoute{r("web/v1=50", "web/v2=50")}, 20,
			[]string{"web/v1=40 web-canary=20 web/v2=40"}},
		{"zero on a pristine route adds a silent canary", []*networking.HTTPRoute{r("web")}, 0,
			[]string{"web=100 web-canary=0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := show(tc.routes)
			got := withCanaryWeight(tc.routes, target, ns, tc.weight)
			if fmt.Sprint(show(got)) != fmt.Sprint(tc.want) {
				t.Errorf("got %q, want %q", show(got), tc.want)
			}
			if fmt.Sprint(show(tc.routes)) != fmt.Sprint(before) {
				t.Errorf("input modified: %q, was %q", show(tc.routes), before)
			}
			for i, rt := range got {
				if !routesService([]*networking.HTTPRoute{rt}, target, ns) {
					continue
				}
				sum := 0
				for _, x := range rt.GetRoute() {
					sum += int(x.GetWeight())
				}
				if sum != 100 {
					t.Errorf("route %d sums to %d", i, sum)
				}
			}
			if again := withCanaryWeight(got, target, ns, tc.weight); !sameRoutes(again, got) {
				t.Errorf("not idempotent: %q then %q", show(got), show(again))
			}
		})
	}
}

func TestCanaryWeightRoundTrip(t *testing.T) {
	for _, base := range [][]*networking.HTTPRoute{
		{r("web")},
		{r("web.shop.svc.cluster.local:80=100")},
		{r("web=80", "legacy=20")},
		{r("web=50", "legacy=50"), r("web")},
	} {
		if w, ok := canaryWeight(base, target, ns); ok || w != 0 {
			t.Errorf("pristine %q: weight %d, ok %v", show(base), w, ok)
		}
		routes := base
		for _, w := range []int{0, 5, 10, 33, 50, 99, 100, 60, 0} {
			routes = withCanaryWeight(routes, target, ns, w)
			if got, ok := canaryWeight(routes, target, ns); !ok || got != w {
				t.Errorf("%q at %d: read back %d (ok %v) from %q", show(base), w, got, ok, show(routes))
			}
		}
		if restored := withoutCanary(routes, target, ns); !sameRoutesIgnoringWeights(restored, base) {
			t.Errorf("withoutCanary(%q) = %q, want the shape of %q", show(routes), show(restored), show(base))
		}
	}
}

func TestCanaryWeightPrefersLargestShare(t *testing.T) {
	routes := []*networking.HTTPRoute{
		r("web=8", "web-canary=2", "legacy=90"), // 20% of a share of 10: imprecise
		r("web=70", "web-canary=30"),
	}
	if w, ok := canaryWeight(routes, target, ns); !ok || w != 30 {
		t.Errorf("canaryWeight = %d, %v; want 30, true", w, ok)
	}
}

func TestWithoutCanary(t *testing.T) {
	for _, tc := range []struct {
		name   string
		routes []*networking.HTTPRoute
		want   []string
	}{
		{"gives the weight back", []*networking.HTTPRoute{r("web=70", "web-canary=30")}, []string{"web=100"}},
		{"shared route", []*networking.HTTPRoute{r("web=40", "web-canary=40", "legacy=20")}, []string{"web=80 legacy=20"}},
		{"from full canary", []*networking.HTTPRoute{r("web=0", "web-canary=100")}, []string{"web=100"}},
		{"other canaries stay", []*networking.HTTPRoute{r("web=70", "web-canary=30", "api=0", "api-canary=0")},
			[]string{"web=100 api=0 api-canary=0"}},
		{"untouched route", []*networking.HTTPRoute{r("web")}, []string{"web=0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := show(withoutCanary(tc.routes, target, ns)); fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestOtherCanaryInFlight(t *testing.T) {
	orig := []*networking.HTTPRoute{r("web.shop.svc.cluster.local=50", "api=50")}
	for _, tc := range []struct {
		routes []*networking.HTTPRoute
		want   bool
	}{
		{[]*networking.HTTPRoute{r("web.shop.svc.cluster.local=100", "api=0")}, false},
		{[]*networking.HTTPRoute{r("web.shop.svc.cluster.local=50", "api=40", "api-canary=10")}, true},
		{[]*networking.HTTPRoute{r("web.shop.svc.cluster.local=25", "web-canary.shop.svc.cluster.local=25", "api=50")}, true},
		{[]*networking.HTTPRoute{r("web.shop.svc.cluster.local=50", "api=40", "legacy=10")}, false},       // a user's new destination
		{[]*networking.HTTPRoute{r("web.shop.svc.cluster.local=50", "api=40", "other-canary=10")}, false}, // no "other" beside it
	} {
		if got := otherCanaryInFlight(tc.routes, orig); got != tc.want {
			t.Errorf("otherCanaryInFlight(%q) = %v, want %v", show(tc.routes), got, tc.want)
		}
	}
	withCanary := []*networking.HTTPRoute{r("api=40", "api-canary=10", "web=50")}
	if otherCanaryInFlight(withCanary, withCanary) {
		t.Error("a canary destination the original already had is not another target's")
	}
}

func TestGeneratedRoutes(t *testing.T) {
	if got := show(generatedRoutes(target, 30)); fmt.Sprint(got) != "[web:80=70 web-canary:80=30]" {
		t.Errorf("generatedRoutes = %q", got)
	}
	noPort := target
	noPort.Port = 0
	if got := show(generatedRoutes(noPort, 0)); fmt.Sprint(got) != "[web=100 web-canary=0]" {
		t.Errorf("generatedRoutes without port = %q", got)
	}
}
