// Package traffic shifts request weight between the stable and the canary workload. The Router
// interface keeps the state machine independent of the mesh: Istio now, Gateway API HTTPRoute next.
package traffic

import (
	"context"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Target identifies the routes of one canary.
type Target struct {
	// Namespace of the Deployment, its Services and the routes.
	Namespace string
	// Owner is the Deployment's name: generated routes are named GeneratedName(Owner) and labeled
	// canarygate.io/generated-for: Owner.
	Owner string
	// StableService routes to the Git-owned Deployment's pods (the Canary's service.name).
	StableService string
	// CanaryService routes to the canary pods (<owner>-canary).
	CanaryService string
	// Port is the Service port traffic is sent to; 0 means the route does not name a port.
	Port int32
	// OwnerRef, when set, is put on generated routes, so that they go away with their owner (the
	// Canary) even when nobody finalizes them.
	OwnerRef *metav1.OwnerReference
}

// Router sets and reads the canary's share of traffic.
type Router interface {
	// SetWeight routes canaryWeight percent (0–100) to the canary and the rest to the stable
	// workload, creating a generated route where no user route exists. Weights always sum to 100.
	SetWeight(ctx context.Context, t Target, canaryWeight int) error
	// Weight reads the canary weight now in effect (0 where nothing routes to the canary), so
	// that routes changed by someone else mid-flight can be set back.
	Weight(ctx context.Context, t Target) (int, error)
	// RouteObject is the kind of object that carries the routes (a VirtualService for Istio):
	// the controller watches it to notice routes changed by someone else.
	RouteObject() client.Object
	// Finalize routes everything to stable: user routes are restored exactly as they were before
	// the canary, generated routes are deleted. It is idempotent.
	Finalize(ctx context.Context, t Target) error
	// UserRouted reports whether the canary's traffic goes, or would go, through routes that
	// canarygate did not generate: only those need Finalize when the owner goes away, since
	// generated routes carry Target.OwnerRef.
	UserRouted(ctx context.Context, t Target) (bool, error)
}
