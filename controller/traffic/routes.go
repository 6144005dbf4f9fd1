package traffic

import (
	"strings"

	"google.golang.org/protobuf/proto"
	networking "istio.io/api/networking/v1alpha3"
)

// This file holds the pure route arithmetic of the Istio router: which destinations belong to a
// target, how the canary's share is carved out of the stable share, and how it is given back.
//
// Weight semantics follow Istio: a route with one destination sends it everything whatever its
// weight; otherwise a destination receives weight/sum(weights). canarygate always writes routes
// whose weights sum to 100. A route that shares the stable destination with other destinations
// (say stable 80, legacy 20) keeps the other destinations' weights; only the stable share S is
// split: canary round(S·w/100), stable the rest. Setting the same weight again yields the same
// route, so reconciles are idempotent and weights never drift.

// hostNamesService reports whether a destination host, seen from a route in namespace ns, names
// the Service svc: the short name, svc.ns, svc.ns.svc or svc.ns.svc.<cluster domain>.
func hostNamesService(host, svc, ns string) bool {
	if svc == "" {
		return false
	}
	switch host {
	case svc, svc + "." + ns, svc + "." + ns + ".svc":
		return true
	}
	return strings.HasPrefix(host, svc+"."+ns+".svc.") && len(host) > len(svc+"."+ns+".svc.")
}

// canaryHost writes the canary Service's host in the same form as the stable host the user chose,
// so a route that uses FQDNs gets an FQDN and a short-name route a short name.
func canaryHost(stableHost string, t Target) string {
	return t.CanaryService + strings.TrimPrefix(stableHost, t.StableService)
}

// portKey is the destination's port number; 0 when the destination names none.
func portKey(d *networking.Destination) uint32 {
	if d.GetPort() == nil {
		return 0
	}
	return d.GetPort().GetNumber()
}

// portMatches lets a destination without a port, or a target without a port, match any port.
func portMatches(d *networking.Destination, t Target) bool {
	p := portKey(d)
	return p == 0 || t.Port == 0 || p == uint32(t.Port)
}

func isStable(d *networking.Destination, t Target, ns string) bool {
	return d != nil && hostNamesService(d.GetHost(), t.StableService, ns) && portMatches(d, t)
}

func isCanary(d *networking.Destination, t Target, ns string) bool {
	return d != nil && hostNamesService(d.GetHost(), t.CanaryService, ns) && portMatches(d, t)
}

// routesService reports whether any HTTP route of a VirtualService in namespace ns sends traffic
// to the target's stable Service.
func routesService(routes []*networking.HTTPRoute, t Target, ns string) bool {
	for _, r := range routes {
		for _, d := range r.GetRoute() {
			if isStable(d.GetDestination(), t, ns) {
				return true
			}
		}
	}
	return false
}

// hasCanary reports whether any HTTP route sends (or could send) traffic to the target's canary.
func hasCanary(routes []*networking.HTTPRoute, t Target, ns string) bool {
	for _, r := range routes {
		for _, d := range r.GetRoute() {
			if isCanary(d.GetDestination(), t, ns) {
				return true
			}
		}
	}
	return false
}

// effectiveWeights returns the route's weights as Istio applies them, scaled to sum to 100: a lone
// destination gets 100, relative weights are normalised (largest remainder), and a route whose
// weights are all zero is split evenly.
func effectiveWeights(dests []*networking.HTTPRouteDestination) []int {
	w := make([]int, len(dests))
	if len(dests) == 1 {
		w[0] = 100
		return w
	}
	sum := 0
	for i, d := range dests {
		w[i] = int(max(d.GetWeight(), 0))
		sum += w[i]
	}
	if sum == 100 || len(dests) == 0 {
		return w
	}
	if sum == 0 {
		for i := range w {
			w[i] = 1
		}
	}
	return distribute(100, w)
}

// distribute splits total into integer parts proportional to shares (largest remainder, ties to the
// earlier index). With all shares zero the parts are equal. The parts always sum to total.
func distribute(total int, shares []int) []int {
	out := make([]int, len(shares))
	if len(shares) == 0 {
		return out
	}
	sum := 0
	for _, s := range shares {
		sum += s
	}
	if sum == 0 {
		shares = make([]int, len(shares))
		for i := range shares {
			shares[i] = 1
		}
		sum = len(shares)
	}
	given := 0
	rem := make([]int, len(shares))
	for i, s := range shares {
		out[i] = total * s / sum
		rem[i] = total * s % sum
		given += out[i]
	}
	for given < total {
		best := 0
		for i := range rem {
			if rem[i] > rem[best] {
				best = i
			}
		}
		out[best]++
		rem[best] = -1
		given++
	}
	return out
}

// group collects, within one route, the target's stable and canary destinations that use one port.
type group struct {
	stable, canary []int // indexes into the route's destinations
}

func groupsOf(dests []*networking.HTTPRouteDestination, t Target, ns string) (map[uint32]*group, []uint32) {
	groups := map[uint32]*group{}
	var order []uint32
	get := func(p uint32) *group {
		g, ok := groups[p]
		if !ok {
			g = &group{}
			groups[p] = g
			order = append(order, p)
		}
		return g
	}
	for i, d := range dests {
		switch dst := d.GetDestination(); {
		case isStable(dst, t, ns):
			g := get(portKey(dst))
			g.stable = append(g.stable, i)
		case isCanary(dst, t, ns):
			g := get(portKey(dst))
			g.canary = append(g.canary, i)
		}
	}
	return groups, order
}

// withCanaryWeight returns a copy of routes in which every route that sends traffic to the stable
// Service gives the canary w percent of the stable share. A canary destination is added right
// after the first stable destination of each port where none exists yet: same host form, same
// port and the same header manipulation as the stable destination, but no subset, because subsets
// are defined per host by DestinationRules and the canary Service already selects exactly the
// canary pods. Routes that do not touch the target are returned unchanged.
func withCanaryWeight(routes []*networking.HTTPRoute, t Target, ns string, w int) []*networking.HTTPRoute {
	out := make([]*networking.HTTPRoute, len(routes))
	for i, r := range routes {
		out[i] = proto.Clone(r).(*networking.HTTPRoute)
		dests := out[i].GetRoute()
		groups, order := groupsOf(dests, t, ns)
		if len(order) == 0 || !anyStable(groups) {
			continue
		}
		eff := effectiveWeights(dests)
		for j, d := range dests {
			d.Weight = int32(eff[j])
		}
		var added []*networking.HTTPRouteDestination
		addAfter := map[int]*networking.HTTPRouteDestination{}
		for _, p := range order {
			g := groups[p]
			if len(g.stable) == 0 {
				continue // a stray canary destination on a port the stable Service is not routed on
			}
			share := 0
			stableShares := make([]int, len(g.stable))
			for k, j := range g.stable {
				share += eff[j]
				stableShares[k] = eff[j]
			}
			for _, j := range g.canary {
				share += eff[j]
			}
			canary := (share*w + 50) / 100
			for k, v := range distribute(share-canary, stableShares) {
				dests[g.stable[k]].Weight = int32(v)
			}
			if len(g.canary) == 0 {
				first := dests[g.stable[0]]
				d := &networking.HTTPRouteDestination{
					Destination: &networking.Destination{Host: canaryHost(first.GetDestination().GetHost(), t)},
					Weight:      int32(canary),
				}
				if p := first.GetDestination().GetPort(); p != nil {
					d.Destination.Port = proto.Clone(p).(*networking.PortSelector)
				}
				if h := first.GetHeaders(); h != nil {
					d.Headers = proto.Clone(h).(*networking.Headers)
				}
				addAfter[g.stable[0]] = d
				added = append(added, d)
				continue
			}
			// Duplicates can only come from a hand edit; the first canary destination carries the weight.
			for k, j := range g.canary {
				if k == 0 {
					dests[j].Weight = int32(canary)
				} else {
					dests[j].Weight = 0
				}
			}
		}
		if len(added) == 0 {
			continue
		}
		merged := make([]*networking.HTTPRouteDestination, 0, len(dests)+len(added))
		for j, d := range dests {
			merged = append(merged, d)
			if a, ok := addAfter[j]; ok {
				merged = append(merged, a)
			}
		}
		out[i].Route = merged
	}
	return out
}

func anyStable(groups map[uint32]*group) bool {
	for _, g := range groups {
		if len(g.stable) > 0 {
			return true
		}
	}
	return false
}

// canaryWeight reads the canary's percentage of the stable share back from routes. When several
// routes carry the canary, the one with the largest share (the most precise) wins. ok is false when
// no route has a canary destination for the target.
func canaryWeight(routes []*networking.HTTPRoute, t Target, ns string) (w int, ok bool) {
	bestShare := -1
	for _, r := range routes {
		dests := r.GetRoute()
		groups, order := groupsOf(dests, t, ns)
		eff := effectiveWeights(dests)
		for _, p := range order {
			g := groups[p]
			if len(g.canary) == 0 {
				continue
			}
			share, canary := 0, 0
			for _, j := range g.stable {
				share += eff[j]
			}
			for _, j := range g.canary {
				share += eff[j]
				canary += eff[j]
			}
			ok = true
			if share > bestShare {
				bestShare = share
				w = 0
				if share > 0 {
					w = (canary*100 + share/2) / share
				}
			}
		}
	}
	return w, ok
}

// withoutCanary returns a copy of routes with the target's canary destinations removed and their
// weight given back to the stable destinations of the same port, so the routes keep summing to 100.
func withoutCanary(routes []*networking.HTTPRoute, t Target, ns string) []*networking.HTTPRoute {
	out := make([]*networking.HTTPRoute, len(routes))
	for i, r := range routes {
		out[i] = proto.Clone(r).(*networking.HTTPRoute)
		dests := out[i].GetRoute()
		groups, order := groupsOf(dests, t, ns)
		drop := map[int]bool{}
		for _, p := range order {
			g := groups[p]
			if len(g.canary) == 0 {
				continue
			}
			eff := effectiveWeights(dests)
			back := 0
			for _, j := range g.canary {
				back += eff[j]
				drop[j] = true
			}
			if len(g.stable) == 0 {
				continue // nothing to give the weight back to; Istio normalises the rest
			}
			shares := make([]int, len(g.stable))
			sum := 0
			for k, j := range g.stable {
				shares[k] = eff[j]
				sum += eff[j]
			}
			for k, v := range distribute(sum+back, shares) {
				dests[g.stable[k]].Weight = int32(v)
			}
		}
		if len(drop) == 0 {
			continue
		}
		kept := make([]*networking.HTTPRouteDestination, 0, len(dests)-len(drop))
		for j, d := range dests {
			if !drop[j] {
				kept = append(kept, d)
			}
		}
		out[i].Route = kept
	}
	return out
}

// sameRoutes compares HTTP routes field by field.
func sameRoutes(a, b []*networking.HTTPRoute) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !proto.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

// sameRoutesIgnoringWeights compares HTTP routes with every destination weight disregarded: it
// tells whether anyone but canarygate changed a route while a canary was in flight.
func sameRoutesIgnoringWeights(a, b []*networking.HTTPRoute) bool {
	return sameRoutes(zeroWeights(a), zeroWeights(b))
}

func zeroWeights(routes []*networking.HTTPRoute) []*networking.HTTPRoute {
	out := make([]*networking.HTTPRoute, len(routes))
	for i, r := range routes {
		out[i] = proto.Clone(r).(*networking.HTTPRoute)
		for _, d := range out[i].GetRoute() {
			d.Weight = 0
		}
	}
	return out
}

// otherCanaryInFlight reports whether routes still carry a canary that the original routes did
// not: a destination <service>-canary, absent from the original, next to a destination <service>
// in the same form (canarygate's naming, DESIGN.md "Names"). That is another target's canary in a
// VirtualService shared by several; a destination a user added is not mistaken for one.
func otherCanaryInFlight(routes, original []*networking.HTTPRoute) bool {
	orig := map[string]bool{}
	for _, r := range original {
		for _, d := range r.GetRoute() {
			orig[d.GetDestination().GetHost()] = true
		}
	}
	for _, r := range routes {
		hosts := map[string]bool{}
		for _, d := range r.GetRoute() {
			hosts[d.GetDestination().GetHost()] = true
		}
		for h := range hosts {
			name, rest, _ := strings.Cut(h, ".")
			stable, ok := strings.CutSuffix(name, "-canary")
			if ok && !orig[h] && hosts[joinHost(stable, rest)] {
				return true
			}
		}
	}
	return false
}

func joinHost(name, rest string) string {
	if rest == "" {
		return name
	}
	return name + "." + rest
}

// generatedRoutes is the single HTTP route of a generated VirtualService.
func generatedRoutes(t Target, w int) []*networking.HTTPRoute {
	dest := func(host string) *networking.Destination {
		d := &networking.Destination{Host: host}
		if t.Port != 0 {
			d.Port = &networking.PortSelector{Number: uint32(t.Port)}
		}
		return d
	}
	return []*networking.HTTPRoute{{
		Route: []*networking.HTTPRouteDestination{
			{Destination: dest(t.StableService), Weight: int32(100 - w)},
			{Destination: dest(t.CanaryService), Weight: int32(w)},
		},
	}}
}
