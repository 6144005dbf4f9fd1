package webhook

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
	kjson "sigs.k8s.io/json"

	"canarygate.io/canarygate/api/v1alpha1"
	"canarygate.io/canarygate/policy"
	"canarygate.io/canarygate/revision"
)

// validateDeployment guards managed Deployments: unapproved template changes, the opt-out and
// break-glass annotations, and the pending-revision annotations.
func (h *handlers) validateDeployment(ctx context.Context, req admission.Request) admission.Response {
	if !isDeployment(req) {
		return wrongKind(req, "apps/v1 Deployments")
	}
	if req.SubResource != "" || !isWrite(req.Operation) {
		return admission.Allowed("")
	}
	obj, err := decodeView(req.Object.Raw, "object")
	if err != nil {
		return badRequest("%v", err)
	}
	old := &objectView{}
	if req.Operation == admissionv1.Update {
		if old, err = decodeView(req.OldObject.Raw, "old object"); err != nil {
			return badRequest("%v", err)
		}
	}
	// Generated Deployments are /validate-generated's.
	if obj.generatedFor() || old.generatedFor() {
		return admission.Allowed("")
	}
	eff, resp := h.effective(ctx, req.Namespace)
	if resp != nil {
		return *resp
	}
	if !eff.Managed {
		return admission.Allowed("")
	}
	privileged := policy.InGroups(req.UserInfo.Groups, eff.BreakGlassGroups)
	name := req.Namespace + "/" + obj.Metadata.Name
	if obj.Metadata.Annotations[v1alpha1.OptInKey] == v1alpha1.OptOutDisabled &&
		old.Metadata.Annotations[v1alpha1.OptInKey] != v1alpha1.OptOutDisabled &&
		!eff.AllowOptOut && !privileged {
		return admission.Denied(fmt.Sprintf("canarygate: CanaryPolicy %s forbids opting Deployment %s out of canaries "+
			"(annotation %s: %s); only members of %s may", strings.Join(eff.Policies, ", "), name,
			v1alpha1.OptInKey, v1alpha1.OptOutDisabled, groupList(eff.BreakGlassGroups)))
	}
	if v, ok := obj.annotation(v1alpha1.BreakGlassAnnotation); ok && !privileged {
		if ov, had := old.annotation(v1alpha1.BreakGlassAnnotation); !had || ov != v {
			return admission.Denied(fmt.Sprintf("canarygate: only members of %s may set annotation %s on Deployment %s",
				groupList(eff.BreakGlassGroups), v1alpha1.BreakGlassAnnotation, name))
		}
	}
	if pendingChanged(old, obj) {
		if err := h.checkPending(obj); err != nil {
			return badRequest("%v", err)
		}
	}
	if req.Operation != admissionv1.Update || !eff.DeploymentManaged(obj.Metadata.Annotations) {
		return admission.Allowed("")
	}
	same, newRev, err := h.memo.sameTemplate(old.Spec.Template, obj.Spec.Template)
	// Only privileged requesters can have set it: see above, here or on an earlier update.
	_, breakGlass := obj.annotation(v1alpha1.BreakGlassAnnotation)
	if unseen := (*unseenChangeError)(nil); errors.As(err, &unseen) {
		if breakGlass {
			return admission.Allowed("break-glass")
		}
		return admission.Denied(unseen.Error())
	}
	if err != nil {
		return badRequest("%v", err)
	}
	if same {
		return admission.Allowed("")
	}
	if req.UserInfo.Username == h.serviceAccount && obj.Metadata.Annotations[v1alpha1.PromotedRevisionAnnotation] == newRev.hash {
		return admission.Allowed("promotion of revision " + newRev.hash)
	}
	if breakGlass {
		return admission.Allowed("break-glass")
	}
	return admission.Denied(fmt.Sprintf("canarygate: pod template changes in namespace %s go through a canary; "+
		"the mutating webhook did not divert this one (was it skipped or undone by another webhook?). "+
		"Deployment %s keeps its stable template; retry the change, or ask a member of %s to set annotation %s",
		req.Namespace, name, groupList(eff.BreakGlassGroups), v1alpha1.BreakGlassAnnotation))
}

func groupList(groups []string) string {
	if len(groups) == 0 {
		return "the break-glass groups (none configured)"
	}
	return "the break-glass groups " + strings.Join(groups, ", ")
}

// kubeControllers are the identities of kube-controller-manager (with and without
// --use-service-account-credentials) that must keep working on generated objects: the garbage
// collector and the namespace controller delete them with their owner or namespace, and the
// Deployment controller writes the revision annotation of the canary Deployment.
var kubeControllers = map[string]bool{
	"system:kube-controller-manager":                              true,
	"system:serviceaccount:kube-system:generic-garbage-collector": true,
	"system:serviceaccount:kube-system:namespace-controller":      true,
	"system:serviceaccount:kube-system:deployment-controller":     true,
}

// validateGenerated keeps generated objects canarygate's: only its ServiceAccount, the
// Kubernetes controllers above and the break-glass groups may create, change or delete them.
func (h *handlers) validateGenerated(ctx context.Context, req admission.Request) admission.Response {
	if !isDeployment(req) && !isKind(req, "", "Service") && !isKind(req, "networking.istio.io", "VirtualService") {
		return wrongKind(req, "Deployments, Services and VirtualServices")
	}
	if req.SubResource != "" {
		// Status belongs to the objects' own controllers.
		return admission.Allowed("")
	}
	var obj, old *objectView
	var err error
	switch req.Operation {
	case admissionv1.Create, admissionv1.Update:
		if obj, err = decodeView(req.Object.Raw, "object"); err != nil {
			return badRequest("%v", err)
		}
	}
	switch req.Operation {
	case admissionv1.Update, admissionv1.Delete:
		if old, err = decodeView(req.OldObject.Raw, "old object"); err != nil {
			return badRequest("%v", err)
		}
	case admissionv1.Connect:
		return admission.Allowed("")
	}
	// Adding or removing the label is an edit of a generated object too.
	if !obj.generatedFor() && !old.generatedFor() {
		return admission.Allowed("")
	}
	if req.UserInfo.Username == h.serviceAccount || kubeControllers[req.UserInfo.Username] {
		return admission.Allowed("")
	}
	eff, resp := h.effective(ctx, req.Namespace)
	if resp != nil {
		return *resp
	}
	if policy.InGroups(req.UserInfo.Groups, eff.BreakGlassGroups) {
		return admission.Allowed("break-glass")
	}
	target, name := "", req.Name
	for _, v := range []*objectView{obj, old} {
		if v.generatedFor() {
			target = v.Metadata.Labels[v1alpha1.GeneratedForLabel]
			if name == "" {
				name = v.Metadata.Name
			}
			break
		}
	}
	return admission.Denied(fmt.Sprintf("canarygate: %s %s/%s is generated by canarygate for Deployment %q (label %s); "+
		"only canarygate and %s may create, change or delete it",
		req.Kind.Kind, req.Namespace, name, target, v1alpha1.GeneratedForLabel, groupList(eff.BreakGlassGroups)))
}

// validateCanarygate checks Canaries against their namespace's policy bounds and CanaryPolicies
// for what their schema cannot express.
func (h *handlers) validateCanarygate(ctx context.Context, req admission.Request) admission.Response {
	canary, pol := isKind(req, v1alpha1.GroupVersion.Group, "Canary"), isKind(req, v1alpha1.GroupVersion.Group, "CanaryPolicy")
	if !canary && !pol {
		return wrongKind(req, "Canaries and CanaryPolicies")
	}
	if req.SubResource != "" || !isWrite(req.Operation) {
		return admission.Allowed("")
	}
	if canary {
		return h.validateCanary(ctx, req)
	}
	return validatePolicy(req)
}

func (h *handlers) validateCanary(ctx context.Context, req admission.Request) admission.Response {
	var obj, old v1alpha1.Canary
	if err := decodeTyped(req.Object.Raw, "object", &obj); err != nil {
		return badRequest("%v", err)
	}
	if req.Operation == admissionv1.Update {
		if err := decodeTyped(req.OldObject.Raw, "old object", &old); err != nil {
			return badRequest("%v", err)
		}
		// Metadata-only updates (the controller clearing an action, a finalizer leaving) never
		// fail on a policy that tightened after the Canary was admitted.
		if obj.DeletionTimestamp != nil || equality.Semantic.DeepEqual(old.Spec, obj.Spec) {
			return admission.Allowed("")
		}
	}
	eff, resp := h.effective(ctx, req.Namespace)
	if resp != nil {
		return *resp
	}
	problems := canaryProblems(&obj.Spec, eff)
	if req.Operation == admissionv1.Create || old.Spec.TargetRef.Name != obj.Spec.TargetRef.Name {
		names, err := h.lookup.CanariesTargeting(ctx, req.Namespace, obj.Spec.TargetRef.Name)
		if err != nil {
			return admission.Errored(http.StatusInternalServerError, fmt.Errorf("canarygate cannot list Canaries, retry: %w", err))
		}
		for _, n := range names {
			if n != obj.Name {
				problems = append(problems, fmt.Sprintf("Canary %s already targets Deployment %s", n, obj.Spec.TargetRef.Name))
			}
		}
	}
	if len(problems) == 0 {
		return admission.Allowed("")
	}
	return admission.Denied(fmt.Sprintf("canarygate: Canary %s/%s: %s", req.Namespace, obj.Name, strings.Join(problems, "; ")))
}

// canaryProblems lists where a Canary spec exceeds its namespace's policy bounds.
func canaryProblems(spec *v1alpha1.CanarySpec, eff policy.Effective) []string {
	var problems []string
	by := ""
	if len(eff.Policies) > 0 {
		by = " of CanaryPolicy " + strings.Join(eff.Policies, ", ")
	}
	if a := spec.Analysis; a != nil {
		if limit := eff.MaxWeight; limit != nil {
			if a.MaxWeight > *limit {
				problems = append(problems, fmt.Sprintf("analysis.maxWeight %d exceeds the cap %d%s", a.MaxWeight, *limit, by))
			}
			if a.StepWeight > *limit {
				problems = append(problems, fmt.Sprintf("analysis.stepWeight %d exceeds the cap %d%s", a.StepWeight, *limit, by))
			}
			for _, w := range a.StepWeights {
				if w > *limit {
					problems = append(problems, fmt.Sprintf("analysis.stepWeights entry %d exceeds the cap %d%s", w, *limit, by))
					break
				}
			}
		}
		if a.Interval != "" && eff.MinInterval > 0 {
			d, err := time.ParseDuration(a.Interval)
			switch {
			case err != nil:
				problems = append(problems, fmt.Sprintf("analysis.interval %q is not a duration", a.Interval))
			case d < eff.MinInterval:
				problems = append(problems, fmt.Sprintf("analysis.interval %s is below the minimum %s%s", a.Interval, eff.MinInterval, by))
			}
		}
	}
	if spec.SkipAnalysis && !eff.AllowSkipAnalysis {
		problems = append(problems, "skipAnalysis is not allowed"+by)
	}
	return problems
}

func validatePolicy(req admission.Request) admission.Response {
	var obj, old v1alpha1.CanaryPolicy
	if err := decodeTyped(req.Object.Raw, "object", &obj); err != nil {
		return badRequest("%v", err)
	}
	if req.Operation == admissionv1.Update {
		if err := decodeTyped(req.OldObject.Raw, "old object", &old); err != nil {
			return badRequest("%v", err)
		}
		if obj.DeletionTimestamp != nil || equality.Semantic.DeepEqual(old.Spec, obj.Spec) {
			return admission.Allowed("")
		}
	}
	problems := policyProblems(&obj.Spec)
	if len(problems) == 0 {
		return admission.Allowed("")
	}
	return admission.Denied(fmt.Sprintf("canarygate: CanaryPolicy %s: %s", obj.Name, strings.Join(problems, "; ")))
}

// policyProblems lists what a CanaryPolicy's schema cannot catch.
func policyProblems(spec *v1alpha1.CanaryPolicySpec) []string {
	var problems []string
	if spec.NamespaceSelector != nil {
		if _, err := metav1.LabelSelectorAsSelector(spec.NamespaceSelector); err != nil {
			problems = append(problems, fmt.Sprintf("namespaceSelector: %v", err))
		}
	}
	var minInterval time.Duration
	if s := spec.Bounds.MinInterval; s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			problems = append(problems, fmt.Sprintf("bounds.minInterval %q is not a duration", s))
		}
		minInterval = d
	}
	for i, k := range spec.StripMetadataKeys {
		switch {
		case strings.TrimSpace(k) == "":
			problems = append(problems, fmt.Sprintf("stripMetadataKeys[%d] is empty", i))
		case revision.Match(k, v1alpha1.GeneratedForLabel, "x"):
			// It would strip the label that marks generated objects, and with it their protection.
			problems = append(problems, fmt.Sprintf("stripMetadataKeys[%d] %q matches canarygate's own label %s", i, k, v1alpha1.GeneratedForLabel))
		}
	}
	for i, g := range spec.BreakGlassGroups {
		if strings.TrimSpace(g) == "" {
			problems = append(problems, fmt.Sprintf("breakGlassGroups[%d] is empty", i))
		}
	}
	if d := spec.Defaults; d != nil {
		eff := policy.Effective{MaxWeight: spec.Bounds.MaxWeight, MinInterval: minInterval, AllowSkipAnalysis: true}
		for _, p := range canaryProblems(&v1alpha1.CanarySpec{Analysis: d}, eff) {
			problems = append(problems, "defaults: "+p)
		}
	}
	return problems
}

// decodeTyped decodes a canarygate object case-sensitively, like the API server.
func decodeTyped(raw []byte, what string, into any) error {
	if len(raw) == 0 {
		return fmt.Errorf("the request carries no %s", what)
	}
	if err := kjson.UnmarshalCaseSensitivePreserveInts(raw, into); err != nil {
		return fmt.Errorf("the request's %s is not valid: %w", what, err)
	}
	return nil
}
