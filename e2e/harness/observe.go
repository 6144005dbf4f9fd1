package harness

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	istionetworkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"canarygate.io/canarygate/api/v1alpha1"
)

// WaitFor polls cond every 200ms until it reports true, returns an error, or timeout passes. The
// error names what was awaited and cond's last message.
func WaitFor(ctx context.Context, timeout time.Duration, what string, cond func(context.Context) (bool, string, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last string
	for {
		ok, msg, err := cond(ctx)
		if err != nil && ctx.Err() == nil {
			return fmt.Errorf("waiting for %s: %w", what, err)
		}
		if ok {
			return nil
		}
		if msg != "" {
			last = msg
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting %s for %s: last seen: %s", timeout, what, last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Canary reads a Canary; nil without error when it does not exist.
func (h *Harness) Canary(ctx context.Context, namespace, name string) (*v1alpha1.Canary, error) {
	var c v1alpha1.Canary
	if err := h.Client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, &c); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		return nil, err
	}
	return &c, nil
}

// DescribeCanary is a one-line summary of a Canary's status for messages.
func DescribeCanary(c *v1alpha1.Canary) string {
	if c == nil {
		return "no Canary"
	}
	s := c.Status
	return fmt.Sprintf("phase=%q weight=%d failedChecks=%d iterations=%d canaryRevision=%q message=%q",
		s.Phase, s.CanaryWeight, s.FailedChecks, s.Iterations, s.CanaryRevision, s.Message)
}

// WaitCanary waits until the Canary exists and cond holds for it.
func (h *Harness) WaitCanary(ctx context.Context, namespace, name string, timeout time.Duration, what string, cond func(*v1alpha1.Canary) bool) (*v1alpha1.Canary, error) {
	var got *v1alpha1.Canary
	err := WaitFor(ctx, timeout, fmt.Sprintf("Canary %s/%s: %s", namespace, name, what), func(ctx context.Context) (bool, string, error) {
		c, err := h.Canary(ctx, namespace, name)
		if err != nil {
			return false, err.Error(), nil
		}
		got = c
		return c != nil && cond(c), DescribeCanary(c), nil
	})
	return got, err
}

// WaitPhase waits until the Canary is in phase.
func (h *Harness) WaitPhase(ctx context.Context, namespace, name string, phase v1alpha1.CanaryPhase, timeout time.Duration) (*v1alpha1.Canary, error) {
	return h.WaitCanary(ctx, namespace, name, timeout, "phase "+string(phase), func(c *v1alpha1.Canary) bool { return c.Status.Phase == phase })
}

// CanaryWeight is the share, in percent, of the first HTTP route of vs that goes to the Service
// canaryService (short name or any longer form of it), and whether the route names it at all. It
// reads the route as the mesh would, independently of canarygate's router code.
func CanaryWeight(vs *istionetworkingv1.VirtualService, canaryService string) (weight int, ok bool) {
	if vs == nil || len(vs.Spec.Http) == 0 {
		return 0, false
	}
	dests := vs.Spec.Http[0].Route
	total := 0
	for _, d := range dests {
		total += int(d.Weight)
	}
	for _, d := range dests {
		if d.Destination == nil || strings.SplitN(d.Destination.Host, ".", 2)[0] != canaryService {
			continue
		}
		ok = true
		switch {
		case total == 0 && len(dests) == 1:
			weight += 100
		case total > 0:
			weight += int(d.Weight) * 100 / total
		}
	}
	return weight, ok
}

// Recording follows one Canary and the VirtualService that routes its traffic through watches, so
// that every written phase and weight is seen, however brief.
type Recording struct {
	mu      sync.Mutex
	phases  []v1alpha1.CanaryPhase // consecutive duplicates removed
	weights []int                  // canary weights in the VirtualService, consecutive duplicates removed
	errs    []error
	stop    context.CancelFunc
	done    sync.WaitGroup
}

// Record starts recording the Canary namespace/name and the canary weight of VirtualService vsName
// (generated or user) towards Service canaryService. Stop it with Stop.
func (h *Harness) Record(ctx context.Context, namespace, canary, vsName, canaryService string) (*Recording, error) {
	ctx, cancel := context.WithCancel(ctx)
	r := &Recording{stop: cancel}
	canaryWatch, err := h.Client.Watch(ctx, &v1alpha1.CanaryList{}, client.InNamespace(namespace))
	if err != nil {
		cancel()
		return nil, err
	}
	vsWatch, err := h.Client.Watch(ctx, &istionetworkingv1.VirtualServiceList{}, client.InNamespace(namespace))
	if err != nil {
		canaryWatch.Stop()
		cancel()
		return nil, err
	}
	r.done.Add(2)
	go r.follow(ctx, canaryWatch, func(ev watch.Event) {
		c, ok := ev.Object.(*v1alpha1.Canary)
		if !ok || c.Name != canary || ev.Type == watch.Deleted || c.Status.Phase == "" {
			return
		}
		r.mu.Lock()
		if n := len(r.phases); n == 0 || r.phases[n-1] != c.Status.Phase {
			r.phases = append(r.phases, c.Status.Phase)
		}
		r.mu.Unlock()
	})
	go r.follow(ctx, vsWatch, func(ev watch.Event) {
		vs, ok := ev.Object.(*istionetworkingv1.VirtualService)
		if !ok || vs.Name != vsName {
			return
		}
		w, named := CanaryWeight(vs, canaryService)
		if ev.Type == watch.Deleted || !named {
			w = 0
		}
		r.mu.Lock()
		if n := len(r.weights); n == 0 || r.weights[n-1] != w {
			r.weights = append(r.weights, w)
		}
		r.mu.Unlock()
	})
	return r, nil
}

func (r *Recording) follow(ctx context.Context, w watch.Interface, record func(watch.Event)) {
	defer r.done.Done()
	FollowWatch(ctx, w, record, func(err error) {
		r.mu.Lock()
		r.errs = append(r.errs, err)
		r.mu.Unlock()
	})
}

// FollowWatch calls record for every event of w until ctx ends, and fail for a watch error event
// or a watch that ends before ctx does (the recording is then incomplete). It stops w on return.
func FollowWatch(ctx context.Context, w watch.Interface, record func(watch.Event), fail func(error)) {
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-w.ResultChan():
			if !ok {
				if ctx.Err() == nil {
					fail(fmt.Errorf("a watch ended early: the recording is incomplete"))
				}
				return
			}
			if ev.Type == watch.Error {
				fail(fmt.Errorf("watch error: %v", ev.Object))
				continue
			}
			record(ev)
		}
	}
}

// Stop ends the recording; the results stay readable.
func (r *Recording) Stop() {
	r.stop()
	r.done.Wait()
}

// Phases are the phases seen, in order, without consecutive repeats.
func (r *Recording) Phases() []v1alpha1.CanaryPhase {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.phases)
}

// Weights are the canary weights the VirtualService carried, in order, without consecutive
// repeats; 0 also stands for "no canary destination" and "no VirtualService".
func (r *Recording) Weights() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.weights)
}

// Err reports a watch that failed: the recording may then have missed changes.
func (r *Recording) Err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.errs) == 0 {
		return nil
	}
	return fmt.Errorf("recording incomplete: %v", r.errs)
}
