package controller

import (
	"context"
	"fmt"
	"slices"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"canarygate.io/canarygate/api/v1alpha1"
)

// namespaceReconciler mirrors "managed" (the opt-in annotation or a selecting CanaryPolicy) into the
// label the webhook configurations select on, so that the webhooks never see other namespaces.
type namespaceReconciler struct{ *env }

func (r *namespaceReconciler) setup(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named("namespace-optin").
		For(&corev1.Namespace{}, builder.WithPredicates(predicate.Or(predicate.AnnotationChangedPredicate{}, predicate.LabelChangedPredicate{}))).
		Watches(&v1alpha1.CanaryPolicy{}, handler.EnqueueRequestsFromMapFunc(r.allNamespaces)).
		Complete(r)
}

func (r *namespaceReconciler) allNamespaces(ctx context.Context, _ client.Object) []reconcile.Request {
	var list corev1.NamespaceList
	if err := r.client.List(ctx, &list); err != nil {
		log.FromContext(ctx).Error(err, "listing Namespaces after a CanaryPolicy change")
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(list.Items))
	for _, ns := range list.Items {
		reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Name: ns.Name}})
	}
	return reqs
}

func (r *namespaceReconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	var ns corev1.Namespace
	if err := r.client.Get(ctx, req.NamespacedName, &ns); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if !ns.DeletionTimestamp.IsZero() {
		return reconcile.Result{}, nil
	}
	eff, err := r.effective(ctx, &ns)
	if err != nil {
		log.FromContext(ctx).Error(err, "resolving CanaryPolicies")
	}
	has := ns.Labels[v1alpha1.OptInKey] == v1alpha1.OptInEnabled
	if eff.Managed == has {
		return reconcile.Result{}, nil
	}
	// A merge patch with the resourceVersion: the label follows what this reconcile saw.
	var patch string
	if eff.Managed {
		patch = fmt.Sprintf(`{"metadata":{"resourceVersion":%q,"labels":{%q:%q}}}`, ns.ResourceVersion, v1alpha1.OptInKey, v1alpha1.OptInEnabled)
	} else {
		patch = fmt.Sprintf(`{"metadata":{"resourceVersion":%q,"labels":{%q:null}}}`, ns.ResourceVersion, v1alpha1.OptInKey)
	}
	if err := r.client.Patch(ctx, &ns, client.RawPatch(types.MergePatchType, []byte(patch))); err != nil {
		if apierrors.IsConflict(err) {
			// The cache was behind; the newer Namespace is on its way and will be reconciled.
			return reconcile.Result{RequeueAfter: time.Second}, nil
		}
		return reconcile.Result{}, fmt.Errorf("labeling Namespace %s: %w", ns.Name, err)
	}
	log.FromContext(ctx).Info("namespace opt-in label mirrored", "managed", eff.Managed)
	return reconcile.Result{}, nil
}

// autoCanaryReconciler creates a Canary for every managed Deployment that no Canary targets, and
// deletes the idle ones it created once their Deployment is no longer managed. It never changes an
// existing Canary and never deletes one it did not create: users who keep theirs in Git own it.
type autoCanaryReconciler struct{ *env }

func (r *autoCanaryReconciler) setup(mgr ctrl.Manager) error {
	notGenerated := predicate.NewPredicateFuncs(func(o client.Object) bool {
		_, gen := o.GetLabels()[v1alpha1.GeneratedForLabel]
		return !gen
	})
	return ctrl.NewControllerManagedBy(mgr).
		Named("canary-autocreate").
		For(&appsv1.Deployment{}, builder.WithPredicates(notGenerated,
			predicate.Or(predicate.AnnotationChangedPredicate{}, predicate.LabelChangedPredicate{}))).
		Watches(&v1alpha1.Canary{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			c := o.(*v1alpha1.Canary)
			return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: c.Namespace, Name: c.Spec.TargetRef.Name}}}
		}), builder.WithPredicates(predicate.Funcs{
			// A deleted Canary can leave a Deployment without one, and a Canary of ours that
			// becomes idle may be due for deletion (its Deployment stopped being managed mid-flight).
			CreateFunc: func(event.CreateEvent) bool { return false },
			UpdateFunc: func(e event.UpdateEvent) bool {
				before, ok1 := e.ObjectOld.(*v1alpha1.Canary)
				after, ok2 := e.ObjectNew.(*v1alpha1.Canary)
				return ok1 && ok2 && createdByUs(after) && idle(after) && !idle(before)
			},
		})).
		Watches(&corev1.Namespace{}, handler.EnqueueRequestsFromMapFunc(r.deploymentsIn),
			builder.WithPredicates(predicate.Or(predicate.AnnotationChangedPredicate{}, predicate.LabelChangedPredicate{}))).
		Watches(&v1alpha1.CanaryPolicy{}, handler.EnqueueRequestsFromMapFunc(r.deploymentsIn)).
		Complete(r)
}

// deploymentsIn maps a Namespace to its Deployments, and a CanaryPolicy to every Deployment.
func (r *autoCanaryReconciler) deploymentsIn(ctx context.Context, o client.Object) []reconcile.Request {
	var opts []client.ListOption
	if ns, ok := o.(*corev1.Namespace); ok {
		opts = append(opts, client.InNamespace(ns.Name))
	}
	var list appsv1.DeploymentList
	if err := r.client.List(ctx, &list, opts...); err != nil {
		log.FromContext(ctx).Error(err, "listing Deployments")
		return nil
	}
	var reqs []reconcile.Request
	for i := range list.Items {
		if !generated(&list.Items[i]) {
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])})
		}
	}
	return reqs
}

func (r *autoCanaryReconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	var d appsv1.Deployment
	if err := r.client.Get(ctx, req.NamespacedName, &d); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if generated(&d) || !d.DeletionTimestamp.IsZero() {
		return reconcile.Result{}, nil
	}
	var ns corev1.Namespace
	if err := r.client.Get(ctx, types.NamespacedName{Name: d.Namespace}, &ns); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if !ns.DeletionTimestamp.IsZero() {
		return reconcile.Result{}, nil
	}
	eff, err := r.effective(ctx, &ns)
	if err != nil {
		log.FromContext(ctx).Error(err, "resolving CanaryPolicies")
	}
	var canaries v1alpha1.CanaryList
	if err := r.client.List(ctx, &canaries, client.InNamespace(d.Namespace), client.MatchingFields{targetIndex: d.Name}); err != nil {
		return reconcile.Result{}, fmt.Errorf("listing Canaries: %w", err)
	}
	if !eff.DeploymentManaged(d.Annotations) {
		return r.deleteOurs(ctx, canaries.Items)
	}
	if len(canaries.Items) > 0 {
		return reconcile.Result{}, nil
	}

	var services corev1.ServiceList
	if err := r.client.List(ctx, &services, client.InNamespace(d.Namespace)); err != nil {
		return reconcile.Result{}, fmt.Errorf("listing Services: %w", err)
	}
	c := newCanary(&d, services.Items)
	if err := r.client.Create(ctx, c); err != nil {
		if apierrors.IsAlreadyExists(err) {
			// Usually a Canary applied together with its Deployment (kept in Git) that the cache has
			// not shown yet; its watch event brings us back. Otherwise it is a user's Canary of that
			// name for another Deployment, which we never override.
			log.FromContext(ctx).V(1).Info("a Canary named like the Deployment already exists; none created", "canary", c.Name)
			return reconcile.Result{}, nil
		}
		return reconcile.Result{}, fmt.Errorf("creating Canary %s: %w", c.Name, err)
	}
	log.FromContext(ctx).Info("Canary created", "canary", c.Name, "service", c.Spec.Service.Name)
	return reconcile.Result{}, nil
}

// deleteOurs deletes the idle Canaries that canarygate created for a Deployment that is no longer
// managed (opted out where the policy allows it, or its namespace no longer managed). A Canary with a
// release in flight is left to finish it (becoming idle wakes this reconciler again): cutting it short
// here would be an abort nobody asked for, and the release ends on its own, by promotion, rollback or
// withdrawal. A Canary users created is theirs and is never deleted.
func (r *autoCanaryReconciler) deleteOurs(ctx context.Context, canaries []v1alpha1.Canary) (reconcile.Result, error) {
	logger := log.FromContext(ctx)
	for i := range canaries {
		c := &canaries[i]
		if !createdByUs(c) || !c.DeletionTimestamp.IsZero() {
			continue
		}
		if !idle(c) {
			logger.Info("the Deployment is no longer managed; its Canary is deleted once its release ends", "canary", c.Name, "phase", c.Status.Phase)
			continue
		}
		// The preconditions make sure the Canary did not start a release since the cache saw it.
		uid, rv := c.UID, c.ResourceVersion
		err := r.client.Delete(ctx, c, client.Preconditions{UID: &uid, ResourceVersion: &rv})
		switch {
		case apierrors.IsNotFound(err):
		case apierrors.IsConflict(err):
			return reconcile.Result{RequeueAfter: time.Second}, nil
		case err != nil:
			return reconcile.Result{}, fmt.Errorf("deleting Canary %s: %w", c.Name, err)
		default:
			logger.Info("the Deployment is no longer managed; its Canary was deleted", "canary", c.Name)
		}
	}
	return reconcile.Result{}, nil
}

// createdByUs reports whether canarygate created the Canary (and may therefore delete it).
func createdByUs(c *v1alpha1.Canary) bool {
	return c.Labels[v1alpha1.CreatedByLabel] == v1alpha1.CreatedByController
}

// idle reports whether a Canary has no release in flight: no canary revision, no routes to restore,
// and a phase that starts nothing by itself.
func idle(c *v1alpha1.Canary) bool {
	switch c.Status.Phase {
	case "", v1alpha1.PhaseInitialized, v1alpha1.PhaseSucceeded, v1alpha1.PhaseFailed:
		return c.Status.CanaryRevision == "" && !slices.Contains(c.Finalizers, routesFinalizer)
	}
	return false
}

// newCanary is the Canary canarygate creates for a Deployment: its Service is the one that selects
// the Deployment's pods when exactly one does (else the Deployment's name), with that Service's
// first port; the analysis is left to the policy and flag defaults. The Deployment owns it, so it
// goes away with the Deployment.
func newCanary(d *appsv1.Deployment, services []corev1.Service) *v1alpha1.Canary {
	svc := v1alpha1.CanaryService{Name: d.Name}
	var candidates []*corev1.Service
	for _, s := range servicesSelecting(services, labels.Set(d.Spec.Template.Labels)) {
		if _, gen := s.Labels[v1alpha1.GeneratedForLabel]; !gen {
			candidates = append(candidates, s)
		}
	}
	if len(candidates) == 1 {
		svc.Name = candidates[0].Name
		if len(candidates[0].Spec.Ports) > 0 {
			svc.Port = candidates[0].Spec.Ports[0].Port
		}
	}
	return &v1alpha1.Canary{
		ObjectMeta: metav1.ObjectMeta{
			Name:      d.Name,
			Namespace: d.Namespace,
			Labels:    map[string]string{v1alpha1.CreatedByLabel: v1alpha1.CreatedByController},
			// Not a controller reference and no blockOwnerDeletion: deleting the Deployment simply
			// collects its Canary.
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "apps/v1", Kind: "Deployment", Name: d.Name, UID: d.UID,
			}},
		},
		Spec: v1alpha1.CanarySpec{
			TargetRef: v1alpha1.TargetRef{APIVersion: "apps/v1", Kind: "Deployment", Name: d.Name},
			Service:   svc,
			Provider:  "istio",
		},
	}
}
