package controller

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	promconfig "github.com/prometheus/common/config"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	"canarygate.io/canarygate/api/v1alpha1"
	"canarygate.io/canarygate/controller/analysis"
	"canarygate.io/canarygate/controller/canary"
	"canarygate.io/canarygate/controller/expectations"
	"canarygate.io/canarygate/controller/traffic"
	"canarygate.io/canarygate/revision"
)

// routesFinalizer keeps a Canary that is deleted mid-flight until its routes are restored: a user
// VirtualService must not keep sending a share of traffic to a deleted canary Service. It is set
// only while user routes carry the canary: generated routes, like the canary Deployment and
// Service, are owned by the Canary and go with it.
const routesFinalizer = "canarygate.io/routes"

// immediately is the requeue of a phase that needs no waiting; it leaves the cache time to catch up
// with the status just written.
const immediately = 200 * time.Millisecond

// canaryReconciler runs the release: it gathers facts from the cache, lets canary.Decide choose,
// performs the actions and writes the status only when it changed.
type canaryReconciler struct {
	*env
	opts      Options
	recorder  recorder.EventRecorder
	providers *providerCache
	// writes remembers this controller's own Canary writes: a cached Canary that does not show the
	// last one is stale, and deciding on it would repeat the last step.
	writes expectations.Writes
}

func (r *canaryReconciler) setup(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named("canary").
		// Status writes are the controller's own: only spec and annotation (action) changes wake it.
		For(&v1alpha1.Canary{}, builder.WithPredicates(predicate.Or(predicate.GenerationChangedPredicate{}, predicate.AnnotationChangedPredicate{}))).
		Watches(&appsv1.Deployment{}, handler.EnqueueRequestsFromMapFunc(r.canariesFor)).
		Watches(r.opts.Router.RouteObject(), handler.EnqueueRequestsFromMapFunc(r.inFlightCanariesIn)).
		WithOptions(controller.Options{MaxConcurrentReconciles: r.opts.MaxConcurrentReconciles}).
		Complete(r)
}

// canariesFor maps a generated Deployment to the Canary that controls it, and a Git-owned one to
// the Canaries that target it.
func (r *canaryReconciler) canariesFor(ctx context.Context, o client.Object) []reconcile.Request {
	if ref := metav1.GetControllerOf(o); ref != nil && ref.Kind == "Canary" && ref.APIVersion == v1alpha1.GroupVersion.String() {
		return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: o.GetNamespace(), Name: ref.Name}}}
	}
	if _, gen := o.GetLabels()[v1alpha1.GeneratedForLabel]; gen {
		return nil
	}
	var list v1alpha1.CanaryList
	if err := r.client.List(ctx, &list, client.InNamespace(o.GetNamespace()), client.MatchingFields{targetIndex: o.GetName()}); err != nil {
		log.FromContext(ctx).Error(err, "listing Canaries for a Deployment")
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(list.Items))
	for i := range list.Items {
		reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])})
	}
	return reqs
}

// inFlightCanariesIn maps a changed route to the Canaries of its namespace whose release is
// running: if the route no longer carries a Canary's weight, its reconcile sets it back.
func (r *canaryReconciler) inFlightCanariesIn(ctx context.Context, o client.Object) []reconcile.Request {
	var list v1alpha1.CanaryList
	if err := r.client.List(ctx, &list, client.InNamespace(o.GetNamespace())); err != nil {
		log.FromContext(ctx).Error(err, "listing Canaries for a route")
		return nil
	}
	var reqs []reconcile.Request
	for i := range list.Items {
		if canary.RoutesCanary(list.Items[i].Status.Phase) {
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])})
		}
	}
	return reqs
}

// facts is what one reconcile observed, kept for the actions.
type facts struct {
	target   *appsv1.Deployment // nil when missing
	desired  *corev1.PodTemplateSpec
	plan     *workloadPlan
	route    traffic.Target
	settings resolved
}

func (r *canaryReconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	logger := log.FromContext(ctx)
	var c v1alpha1.Canary
	if err := r.client.Get(ctx, req.NamespacedName, &c); err != nil {
		if apierrors.IsNotFound(err) {
			forgetCanary(req.Namespace, req.Name)
			r.writes.Forget(req.NamespacedName)
		}
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if err := r.writes.Check(req.NamespacedName, &c); err != nil {
		return reconcile.Result{RequeueAfter: immediately}, nil
	}
	x := r.routeOf(&c)
	if !c.DeletionTimestamp.IsZero() {
		return r.retry(ctx, r.release(ctx, &c, x.route))
	}

	in, x, err := r.observe(ctx, &c, x)
	if err != nil {
		return r.retry(ctx, err)
	}
	d := canary.Decide(in)
	if d.Round != nil {
		res := r.evaluate(ctx, &c, in, x, d.Round)
		in.Round = &res
		d = canary.Decide(in)
	}

	inFlight := d.Status.Phase == v1alpha1.PhaseProgressing || d.Status.Phase == v1alpha1.PhasePromoting || d.Status.Phase == v1alpha1.PhaseFinalising
	if inFlight && !slices.Contains(c.Finalizers, routesFinalizer) {
		user, err := r.opts.Router.UserRouted(ctx, x.route)
		if err != nil {
			return r.retry(ctx, fmt.Errorf("reading routes: %w", err))
		}
		if user {
			if err := r.patchMeta(ctx, &c, append(slices.Clone(c.Finalizers), routesFinalizer), false); err != nil {
				return r.retry(ctx, err)
			}
		}
	}
	for _, a := range d.Actions {
		if err := r.execute(ctx, &c, a, x); err != nil {
			err = fmt.Errorf("%s: %w", a.Kind, err)
			if !apierrors.IsConflict(err) && !apierrors.IsAlreadyExists(err) && !errors.Is(err, expectations.ErrBehind) {
				r.recorder.Eventf(&c, nil, corev1.EventTypeWarning, "ActionFailed", "Reconcile", "%v", err)
			}
			return r.retry(ctx, err)
		}
	}
	r.emit(ctx, &c, x, d.Events)

	before := c.Status.Phase
	if !equality.Semantic.DeepEqual(c.Status, d.Status) {
		c.Status = d.Status
		rv := c.ResourceVersion
		if err := r.client.Status().Update(ctx, &c); err != nil {
			if apierrors.IsNotFound(err) {
				// The Canary went away while this reconcile ran; its deletion is queued.
				return reconcile.Result{}, nil
			}
			return r.retry(ctx, fmt.Errorf("writing status: %w", err))
		}
		r.writes.Updated(req.NamespacedName, rv)
		if before != c.Status.Phase {
			logger.Info("phase changed", "from", before, "to", c.Status.Phase, "revision", c.Status.CanaryRevision, "message", c.Status.Message)
			countFinished(before, c.Status.Phase)
		}
	}
	recordStatus(&c)

	finalizers := c.Finalizers
	if !inFlight && slices.Contains(finalizers, routesFinalizer) {
		finalizers = slices.DeleteFunc(slices.Clone(finalizers), func(f string) bool { return f == routesFinalizer })
	}
	if d.ActionDone || len(finalizers) != len(c.Finalizers) {
		if err := r.patchMeta(ctx, &c, finalizers, d.ActionDone); err != nil {
			return r.retry(ctx, err)
		}
	}

	if d.Requeue {
		return reconcile.Result{RequeueAfter: immediately, Priority: ptr.To(scheduledPriority)}, nil
	}
	if d.RequeueAfter == 0 {
		return reconcile.Result{}, nil
	}
	return reconcile.Result{RequeueAfter: remaining(d.RequeueAfter, in.Now, time.Now()), Priority: ptr.To(scheduledPriority)}, nil
}

// remaining is how long to wait from now for what the machine scheduled after (counted from
// decided, the time it decided at): the reconcile's own writes and queries must not push every
// analysis round back by their duration. It is never zero, which would mean no requeue at all.
func remaining(after time.Duration, decided, now time.Time) time.Duration {
	return max(after-now.Sub(decided), time.Millisecond)
}

// scheduledPriority puts the Canaries whose own schedule comes due (an analysis round, the next
// phase) ahead of those woken by watch events in controller-runtime's priority queue: when a
// thousand Deployments roll out at once their status updates flood the queue, and a round due
// now must not wait behind them.
const scheduledPriority = 10

// retry turns a cache behind this controller's own write into an immediate requeue, a conflict or
// an already-existing object (the cache was behind another writer) into a quiet short requeue;
// other errors go to the rate-limited queue.
func (r *canaryReconciler) retry(ctx context.Context, err error) (reconcile.Result, error) {
	switch {
	case errors.Is(err, expectations.ErrBehind):
		return reconcile.Result{RequeueAfter: immediately}, nil
	case apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err):
		log.FromContext(ctx).V(1).Info("conflict; retrying with fresher objects", "error", err.Error())
		return reconcile.Result{RequeueAfter: time.Second}, nil
	}
	return reconcile.Result{}, err
}

func (r *canaryReconciler) routeOf(c *v1alpha1.Canary) *facts {
	owner := c.Spec.TargetRef.Name
	svc := c.Spec.Service.Name
	if svc == "" {
		svc = owner
	}
	ref := controllerRef(c)
	return &facts{route: traffic.Target{
		Namespace: c.Namespace, Owner: owner, StableService: svc,
		CanaryService: v1alpha1.GeneratedName(owner), Port: c.Spec.Service.Port, OwnerRef: &ref,
	}}
}

// observe reads everything Decide needs from the cache.
func (r *canaryReconciler) observe(ctx context.Context, c *v1alpha1.Canary, x *facts) (canary.Input, *facts, error) {
	var ns corev1.Namespace
	if err := r.client.Get(ctx, types.NamespacedName{Name: c.Namespace}, &ns); err != nil {
		return canary.Input{}, nil, fmt.Errorf("reading Namespace: %w", err)
	}
	eff, err := r.effective(ctx, &ns)
	if err != nil {
		log.FromContext(ctx).Error(err, "resolving CanaryPolicies")
	}
	x.settings = resolveSettings(c, eff, &r.opts)
	in := canary.Input{
		Now:        time.Now(),
		Generation: c.Generation,
		Suspend:    c.Spec.Suspend,
		Action:     c.Annotations[v1alpha1.ActionAnnotation],
		Status:     *c.Status.DeepCopy(),
		Settings:   x.settings.Settings,
	}

	var target appsv1.Deployment
	if err := r.client.Get(ctx, types.NamespacedName{Namespace: c.Namespace, Name: c.Spec.TargetRef.Name}, &target); err != nil {
		if !apierrors.IsNotFound(err) {
			return canary.Input{}, nil, fmt.Errorf("reading the target Deployment: %w", err)
		}
		in.TargetMissing = true
		return in, x, nil
	}
	x.target = &target
	stable, err := revision.Hash(&target.Spec.Template)
	if err != nil {
		return canary.Input{}, nil, fmt.Errorf("hashing the Deployment's template: %w", err)
	}
	in.StableRevision = stable
	in.TargetRolledOut, in.TargetMessage = rolloutState(&target)
	in.Pending = target.Annotations[v1alpha1.DesiredRevisionAnnotation]

	if in.Pending != "" && in.Pending != stable {
		x.desired, err = decodeDesired(target.Annotations)
		if err != nil {
			in.PendingError = err.Error()
		} else {
			var services corev1.ServiceList
			if err := r.client.List(ctx, &services, client.InNamespace(c.Namespace)); err != nil {
				return canary.Input{}, nil, fmt.Errorf("listing Services: %w", err)
			}
			x.plan, err = planCanary(planInput{
				Canary: c, Target: &target, Desired: x.desired, Revision: in.Pending,
				StableService: x.route.StableService, Services: services.Items, StripKeys: eff.StripKeys,
				ProgressDeadlineSeconds: int32(x.settings.ProgressDeadline / time.Second),
			})
			if err != nil {
				in.Blocked = err.Error()
			}
		}
	}

	var cd appsv1.Deployment
	err = r.client.Get(ctx, types.NamespacedName{Namespace: c.Namespace, Name: v1alpha1.GeneratedName(target.Name)}, &cd)
	switch {
	case err == nil && metav1.IsControlledBy(&cd, c):
		ready, msg := rolledOut(&cd)
		in.Canary = canary.Workload{Exists: true, Revision: cd.Annotations[v1alpha1.RevisionAnnotation], Ready: ready, Failed: deadlineExceeded(&cd), Message: msg}
	case err != nil && !apierrors.IsNotFound(err):
		return canary.Input{}, nil, fmt.Errorf("reading the canary Deployment: %w", err)
	}
	if canary.RoutesCanary(c.Status.Phase) {
		w, err := r.opts.Router.Weight(ctx, x.route)
		if err != nil {
			return canary.Input{}, nil, fmt.Errorf("reading the canary's routes: %w", err)
		}
		in.RouteWeight = &w
	}
	return in, x, nil
}

// decodeDesired decodes the pending template and checks it against its revision, so a hand-edited
// annotation can never be promoted under another revision's name.
func decodeDesired(ann map[string]string) (*corev1.PodTemplateSpec, error) {
	raw, ok := ann[v1alpha1.DesiredTemplateAnnotation]
	if !ok {
		return nil, fmt.Errorf("annotation %s is set but %s is missing", v1alpha1.DesiredRevisionAnnotation, v1alpha1.DesiredTemplateAnnotation)
	}
	tmpl, err := revision.Decode(raw)
	if err != nil {
		return nil, err
	}
	h, err := revision.Hash(tmpl)
	if err != nil {
		return nil, err
	}
	if want := ann[v1alpha1.DesiredRevisionAnnotation]; h != want {
		return nil, fmt.Errorf("the desired template hashes to %s, not to the desired revision %s", h, want)
	}
	return tmpl, nil
}

// evaluate runs the checks of one round, in the order RoundRequest documents.
func (r *canaryReconciler) evaluate(ctx context.Context, c *v1alpha1.Canary, in canary.Input, x *facts, req *canary.RoundRequest) canary.RoundResult {
	hooks := x.settings.Analysis.Webhooks
	payload := analysis.NewPayload(c, c.Status.Phase)
	if payload.Checksum == "" {
		payload.Checksum = in.Pending
	}
	if req.Kind == canary.RoundConfirmRollout {
		if err := analysis.CallHooks(ctx, hooks, v1alpha1.HookConfirmRollout, payload); err != nil {
			return canary.RoundResult{Outcome: canary.OutcomeHold, Message: err.Error()}
		}
		return canary.RoundResult{Outcome: canary.OutcomePass}
	}

	start := time.Now()
	defer func() { analysisDuration.WithLabelValues(c.Namespace, c.Name).Observe(time.Since(start).Seconds()) }()
	if req.Rollback {
		hook, yes, errs := analysis.RollbackRequested(ctx, hooks, payload)
		if errs != nil {
			log.FromContext(ctx).V(1).Info("rollback hooks did not ask for a rollback", "errors", errs.Error())
		}
		if yes {
			return canary.RoundResult{Outcome: canary.OutcomeRollback, Message: "webhook " + hook}
		}
	}
	if req.PreRollout {
		if err := analysis.CallHooks(ctx, hooks, v1alpha1.HookPreRollout, payload); err != nil {
			return canary.RoundResult{Outcome: canary.OutcomeFail, Message: err.Error()}
		}
	}
	if req.Metrics {
		var results []analysis.MetricResult
		if metrics := x.settings.Analysis.Metrics; len(metrics) > 0 {
			p, err := r.providers.get(x.settings.MetricsServer)
			if err != nil {
				return canary.RoundResult{Outcome: canary.OutcomeFail, Message: err.Error()}
			}
			// A metric without an interval queries over analysis.DefaultMetricInterval, as in Flagger.
			vars := analysis.Vars{
				Namespace: c.Namespace, Name: c.Name, Target: x.route.CanaryService, Service: x.route.StableService,
			}
			results = analysis.RunMetrics(ctx, p, metrics, vars, x.settings.Analysis.NoData).Results
		}
		results = append(results, analysis.RolloutHookResults(ctx, hooks, payload)...)
		switch round := analysis.Round(results); round.Verdict {
		case analysis.Fail:
			return canary.RoundResult{Outcome: canary.OutcomeFail, Message: round.Message}
		case analysis.Wait:
			return canary.RoundResult{Outcome: canary.OutcomeWait, Message: round.Message}
		}
	}
	if req.Gate != "" {
		if err := analysis.CallHooks(ctx, hooks, req.Gate, payload); err != nil {
			return canary.RoundResult{Outcome: canary.OutcomeHold, Message: err.Error()}
		}
	}
	return canary.RoundResult{Outcome: canary.OutcomePass}
}

func (r *canaryReconciler) execute(ctx context.Context, c *v1alpha1.Canary, a canary.Action, x *facts) error {
	switch a.Kind {
	case canary.ActEnsureCanary:
		if x.plan == nil || x.plan.Deployment.Annotations[v1alpha1.RevisionAnnotation] != a.Revision {
			return fmt.Errorf("no canary workload can be built for revision %s", a.Revision)
		}
		return r.ensureWorkload(ctx, c, x.plan)
	case canary.ActSetWeight:
		return r.opts.Router.SetWeight(ctx, x.route, a.Weight)
	case canary.ActFinalize:
		return r.opts.Router.Finalize(ctx, x.route)
	case canary.ActDeleteGenerated:
		return r.deleteGenerated(ctx, c, x.route.CanaryService)
	case canary.ActPromote:
		return r.promote(ctx, x.target, x.desired, a.Revision)
	case canary.ActCallHooks:
		payload := analysis.NewPayload(c, c.Status.Phase)
		if err := analysis.CallHooks(ctx, x.settings.Analysis.Webhooks, a.Hook, payload); err != nil {
			// Post-rollout hooks report; they cannot undo a promotion.
			r.recorder.Eventf(c, nil, corev1.EventTypeWarning, "WebhookFailed", "Webhook", "%s hook: %v", a.Hook, err)
		}
		return nil
	}
	return fmt.Errorf("unknown action %q", a.Kind)
}

// ensureWorkload creates or updates the canary Deployment and Service; it writes nothing when the
// cached objects already run the planned revision.
func (r *canaryReconciler) ensureWorkload(ctx context.Context, c *v1alpha1.Canary, p *workloadPlan) error {
	want := p.Deployment
	var cur appsv1.Deployment
	err := r.client.Get(ctx, client.ObjectKeyFromObject(want), &cur)
	switch {
	case apierrors.IsNotFound(err):
		if err := r.client.Create(ctx, want.DeepCopy()); err != nil {
			return fmt.Errorf("creating Deployment %s: %w", want.Name, err)
		}
	case err != nil:
		return err
	case !metav1.IsControlledBy(&cur, c):
		return fmt.Errorf("deployment %s exists and is not controlled by Canary %s", want.Name, c.Name)
	case !equality.Semantic.DeepEqual(cur.Spec.Selector, want.Spec.Selector):
		// A selector is immutable: replace the Deployment.
		if err := r.client.Delete(ctx, &cur, client.Preconditions{UID: &cur.UID}); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("replacing Deployment %s: %w", want.Name, err)
		}
		return fmt.Errorf("deployment %s is being replaced for a new selector", want.Name)
	case cur.Annotations[v1alpha1.RevisionAnnotation] != want.Annotations[v1alpha1.RevisionAnnotation] ||
		*cur.Spec.Replicas != *want.Spec.Replicas ||
		!equality.Semantic.DeepEqual(cur.Spec.ProgressDeadlineSeconds, want.Spec.ProgressDeadlineSeconds):
		cur.Labels, cur.Annotations = want.Labels, want.Annotations
		cur.Spec.Replicas, cur.Spec.Template = want.Spec.Replicas, want.Spec.Template
		cur.Spec.Strategy, cur.Spec.MinReadySeconds = want.Spec.Strategy, want.Spec.MinReadySeconds
		cur.Spec.ProgressDeadlineSeconds = want.Spec.ProgressDeadlineSeconds
		if err := r.client.Update(ctx, &cur); err != nil {
			return fmt.Errorf("updating Deployment %s: %w", want.Name, err)
		}
	}

	wantSvc := p.Service
	var svc corev1.Service
	err = r.client.Get(ctx, client.ObjectKeyFromObject(wantSvc), &svc)
	switch {
	case apierrors.IsNotFound(err):
		if err := r.client.Create(ctx, wantSvc.DeepCopy()); err != nil {
			return fmt.Errorf("creating Service %s: %w", wantSvc.Name, err)
		}
	case err != nil:
		return err
	case !metav1.IsControlledBy(&svc, c):
		return fmt.Errorf("service %s exists and is not controlled by Canary %s", wantSvc.Name, c.Name)
	case !equality.Semantic.DeepEqual(svc.Spec.Selector, wantSvc.Spec.Selector) || !equality.Semantic.DeepEqual(svc.Spec.Ports, wantSvc.Spec.Ports):
		svc.Spec.Selector, svc.Spec.Ports = wantSvc.Spec.Selector, wantSvc.Spec.Ports
		if err := r.client.Update(ctx, &svc); err != nil {
			return fmt.Errorf("updating Service %s: %w", wantSvc.Name, err)
		}
	}
	return nil
}

// deleteGenerated deletes the canary Deployment and Service this Canary controls.
func (r *canaryReconciler) deleteGenerated(ctx context.Context, c *v1alpha1.Canary, name string) error {
	key := types.NamespacedName{Namespace: c.Namespace, Name: name}
	for _, o := range []client.Object{&appsv1.Deployment{}, &corev1.Service{}} {
		if err := r.client.Get(ctx, key, o); err != nil {
			if apierrors.IsNotFound(err) {
				continue
			}
			return err
		}
		if !metav1.IsControlledBy(o, c) {
			continue
		}
		uid := o.GetUID()
		if err := r.client.Delete(ctx, o, client.Preconditions{UID: &uid}, client.PropagationPolicy(metav1.DeletePropagationBackground)); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("deleting %s: %w", name, err)
		}
	}
	return nil
}

// promote writes the desired template, exactly as Git gave it, into the Git-owned Deployment with
// the approval annotation, in one Update carrying the cached resourceVersion.
func (r *canaryReconciler) promote(ctx context.Context, target *appsv1.Deployment, desired *corev1.PodTemplateSpec, rev string) error {
	if target == nil || desired == nil || target.Annotations[v1alpha1.DesiredRevisionAnnotation] != rev {
		return fmt.Errorf("revision %s is no longer pending on the Deployment", rev)
	}
	d := target.DeepCopy()
	d.Spec.Template = *desired.DeepCopy()
	d.Annotations[v1alpha1.PromotedRevisionAnnotation] = rev
	delete(d.Annotations, v1alpha1.DesiredRevisionAnnotation)
	delete(d.Annotations, v1alpha1.DesiredTemplateAnnotation)
	if err := r.client.Update(ctx, d); err != nil {
		return fmt.Errorf("writing revision %s into Deployment %s: %w", rev, d.Name, err)
	}
	return nil
}

// emit records the events on the Canary (and the Deployment) and sends them to event webhooks.
func (r *canaryReconciler) emit(ctx context.Context, c *v1alpha1.Canary, x *facts, events []canary.Event) {
	eventHooks := analysis.HooksOfType(x.settings.Analysis.Webhooks, v1alpha1.HookEvent)
	for _, e := range events {
		typ := corev1.EventTypeNormal
		if e.Warning {
			typ = corev1.EventTypeWarning
		}
		if e.NotifyOnly {
			log.FromContext(ctx).Info(e.Message, "reason", e.Reason)
		} else {
			r.recorder.Eventf(c, nil, typ, e.Reason, "Canary", "%s", e.Message)
		}
		if e.OnTarget && !e.NotifyOnly && x.target != nil {
			r.recorder.Eventf(x.target, c, typ, e.Reason, "Canary", "%s", e.Message)
		}
		for _, h := range eventHooks {
			if err := analysis.CallEventWebhook(ctx, h, analysis.NewPayload(c, c.Status.Phase), e.Message, typ); err != nil {
				log.FromContext(ctx).Info("event webhook failed", "hook", h.Name, "error", err.Error())
			}
		}
	}
}

// patchMeta sets the finalizers and, when removeAction, drops the action annotation, in one merge
// patch guarded by the resourceVersion.
func (r *canaryReconciler) patchMeta(ctx context.Context, c *v1alpha1.Canary, finalizers []string, removeAction bool) error {
	orig := c.DeepCopy()
	c.Finalizers = finalizers
	if removeAction {
		delete(c.Annotations, v1alpha1.ActionAnnotation)
	}
	if err := r.client.Patch(ctx, c, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})); err != nil {
		return fmt.Errorf("patching Canary metadata: %w", err)
	}
	r.writes.Updated(client.ObjectKeyFromObject(c), orig.ResourceVersion)
	return nil
}

// release restores the routes of a Canary deleted mid-flight, then lets it go.
func (r *canaryReconciler) release(ctx context.Context, c *v1alpha1.Canary, route traffic.Target) error {
	if !slices.Contains(c.Finalizers, routesFinalizer) {
		return nil
	}
	if err := r.opts.Router.Finalize(ctx, route); err != nil {
		return fmt.Errorf("restoring routes of deleted Canary: %w", err)
	}
	rest := slices.DeleteFunc(slices.Clone(c.Finalizers), func(f string) bool { return f == routesFinalizer })
	if err := r.patchMeta(ctx, c, rest, false); err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	forgetCanary(c.Namespace, c.Name)
	return nil
}

func countFinished(from, to v1alpha1.CanaryPhase) {
	switch {
	case to == v1alpha1.PhaseSucceeded:
		finishedTotal.WithLabelValues("succeeded").Inc()
	case to == v1alpha1.PhaseFailed && from != v1alpha1.PhaseFailed:
		finishedTotal.WithLabelValues("failed").Inc()
	case to == v1alpha1.PhaseInitialized && from != "":
		finishedTotal.WithLabelValues("withdrawn").Inc()
	}
}

// providerCache keeps one Prometheus client per address.
type providerCache struct {
	mu  sync.Mutex
	cfg promconfig.HTTPClientConfig
	m   map[string]analysis.MetricProvider
}

func newProviderCache(cfg promconfig.HTTPClientConfig) *providerCache {
	return &providerCache{cfg: cfg, m: map[string]analysis.MetricProvider{}}
}

func (p *providerCache) get(address string) (analysis.MetricProvider, error) {
	if address == "" {
		return nil, errors.New("no Prometheus address: set spec.metricsServer, the CanaryPolicy's metricsServer or the controller's flag")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if mp, ok := p.m[address]; ok {
		return mp, nil
	}
	mp, err := analysis.NewPrometheus(address, p.cfg)
	if err != nil {
		return nil, fmt.Errorf("prometheus %s: %w", address, err)
	}
	p.m[address] = mp
	return mp, nil
}
