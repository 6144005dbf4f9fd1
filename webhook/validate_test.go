package webhook

import (
	"net/http"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"canarygate.io/canarygate/api/v1alpha1"
)

// adminPolicy applies to opted-in namespaces and names the break-glass group.
var adminPolicy = v1alpha1.CanaryPolicy{
	ObjectMeta: metav1.ObjectMeta{Name: "admins"},
	Spec:       v1alpha1.CanaryPolicySpec{BreakGlassGroups: []string{adminGroup}},
}

func TestValidateDeployment(t *testing.T) {
	stable := fleetDeployment(t)
	gitV2 := withImage(stable, newImage)
	stored := pending(t, stable, gitV2)
	strict := *adminPolicy.DeepCopy()
	strict.Spec.Bounds.AllowOptOut = ptr.To(false)
	generated := withImage(stable, newImage)
	generated.Labels[v1alpha1.GeneratedForLabel] = "frontend"

	cases := []struct {
		name     string
		policies []v1alpha1.CanaryPolicy
		req      request
		allowed  bool
		code     int32
		message  string
	}{
		{
			name:    "an unapproved template change is refused, naming the canary flow",
			req:     request{op: admissionv1.Update, old: stable, obj: gitV2},
			code:    http.StatusForbidden,
			message: "pod template changes in namespace shop go through a canary",
		},
		{
			name:    "the diverted update passes",
			req:     request{op: admissionv1.Update, fieldManager: fleetManager, old: stable, obj: stored},
			allowed: true,
		},
		{
			name:    "a re-applied Git state passes",
			req:     request{op: admissionv1.Update, fieldManager: fleetManager, old: stored, obj: stored},
			allowed: true,
		},
		{
			name: "canarygate's promotion passes",
			req: request{op: admissionv1.Update, user: testSA, old: stored,
				obj: withAnnotations(gitV2, v1alpha1.PromotedRevisionAnnotation, hashOf(t, gitV2))},
			allowed: true,
		},
		{
			name:    "someone else's promotion is refused",
			req:     request{op: admissionv1.Update, user: "mallory", old: stable, obj: withAnnotations(gitV2, v1alpha1.PromotedRevisionAnnotation, hashOf(t, gitV2))},
			code:    http.StatusForbidden,
			message: "go through a canary",
		},
		{
			name:     "break-glass set by its group lets a template change through",
			policies: []v1alpha1.CanaryPolicy{adminPolicy},
			req:      request{op: admissionv1.Update, user: "ops", groups: []string{adminGroup}, old: stable, obj: withAnnotations(gitV2, v1alpha1.BreakGlassAnnotation, "INC-1")},
			allowed:  true,
		},
		{
			name:     "break-glass set by anyone else is refused",
			policies: []v1alpha1.CanaryPolicy{adminPolicy},
			req:      request{op: admissionv1.Update, user: "dev", old: stable, obj: withAnnotations(stable, v1alpha1.BreakGlassAnnotation, "INC-1")},
			code:     http.StatusForbidden,
			message:  "only members of the break-glass groups platform-admins may set annotation canarygate.io/break-glass",
		},
		{
			name:    "break-glass set at CREATE by a non-member is refused",
			req:     request{op: admissionv1.Create, user: "dev", obj: withAnnotations(stable, v1alpha1.BreakGlassAnnotation, "x")},
			code:    http.StatusForbidden,
			message: "none configured",
		},
		{
			name:     "break-glass already set by an admin covers a later Git change",
			policies: []v1alpha1.CanaryPolicy{adminPolicy},
			req: request{op: admissionv1.Update, old: withAnnotations(stable, v1alpha1.BreakGlassAnnotation, "INC-1"),
				obj: withAnnotations(gitV2, v1alpha1.BreakGlassAnnotation, "INC-1")},
			allowed: true,
		},
		{
			name:     "removing break-glass is anyone's",
			policies: []v1alpha1.CanaryPolicy{adminPolicy},
			req:      request{op: admissionv1.Update, user: "dev", old: withAnnotations(stable, v1alpha1.BreakGlassAnnotation, "INC-1"), obj: stable},
			allowed:  true,
		},
		{
			name:    "opting out is anyone's where the policy allows it",
			req:     request{op: admissionv1.Update, user: "dev", old: stable, obj: withAnnotations(gitV2, v1alpha1.OptInKey, v1alpha1.OptOutDisabled)},
			allowed: true,
		},
		{
			name:     "opting out where the policy forbids it is refused",
			policies: []v1alpha1.CanaryPolicy{strict},
			req:      request{op: admissionv1.Update, user: "dev", old: stable, obj: withAnnotations(stable, v1alpha1.OptInKey, v1alpha1.OptOutDisabled)},
			code:     http.StatusForbidden,
			message:  "CanaryPolicy admins forbids opting Deployment shop/frontend out",
		},
		{
			name:     "the break-glass group may opt out where the policy forbids it",
			policies: []v1alpha1.CanaryPolicy{strict},
			req:      request{op: admissionv1.Update, groups: []string{adminGroup}, old: stable, obj: withAnnotations(stable, v1alpha1.OptInKey, v1alpha1.OptOutDisabled)},
			allowed:  true,
		},
		{
			name:    "inconsistent desired-* annotations are a bad request",
			req:     request{op: admissionv1.Update, old: stable, obj: withAnnotations(stored, v1alpha1.DesiredRevisionAnnotation, "0000000000000000")},
			code:    http.StatusBadRequest,
			message: "has revision",
		},
		{
			name:    "CREATE of a new Deployment passes",
			req:     request{op: admissionv1.Create, obj: stable},
			allowed: true,
		},
		{
			name:    "a generated Deployment is left to /validate-generated",
			req:     request{op: admissionv1.Update, user: testSA, old: withImage(generated, stableImage), obj: generated},
			allowed: true,
		},
		{
			name:    "a namespace that did not opt in passes",
			req:     request{op: admissionv1.Update, namespace: unmanagedNS, old: inNamespace(stable, unmanagedNS), obj: inNamespace(gitV2, unmanagedNS)},
			allowed: true,
		},
		{
			name:    "the status subresource passes",
			req:     request{op: admissionv1.Update, subResource: "status", old: stable, obj: gitV2},
			allowed: true,
		},
		{
			name: "UPDATE without the old object is a bad request",
			req:  request{op: admissionv1.Update, obj: gitV2},
			code: http.StatusBadRequest,
		},
		{
			name: "a wrong kind is a bad request",
			req:  request{op: admissionv1.Update, kind: metav1.GroupVersionKind{Group: "apps", Version: "v1", Kind: "StatefulSet"}, old: stable, obj: gitV2},
			code: http.StatusBadRequest,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newTestHandlers(newFakeLookup(tc.policies...))
			for _, dry := range []bool{false, true} {
				req := tc.req
				req.dryRun = dry
				resp := serve(t, h.validateDeployment, req.review(t))
				checkVerdict(t, resp, tc.allowed, tc.code, tc.message)
			}
		})
	}
}

func checkVerdict(t *testing.T, resp admissionv1.AdmissionResponse, allowed bool, code int32, message string) {
	t.Helper()
	if resp.Allowed != allowed {
		t.Fatalf("allowed = %v, want %v (%+v)", resp.Allowed, allowed, resp.Result)
	}
	if len(resp.Patch) > 0 {
		t.Fatalf("a validator patched: %s", resp.Patch)
	}
	if allowed {
		return
	}
	if resp.Result == nil || resp.Result.Code != code {
		t.Fatalf("result %+v, want code %d", resp.Result, code)
	}
	if !strings.Contains(resp.Result.Message, message) {
		t.Fatalf("message %q does not contain %q", resp.Result.Message, message)
	}
}

func TestValidateGenerated(t *testing.T) {
	svc := func(labels map[string]string) *corev1.Service {
		return &corev1.Service{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
			ObjectMeta: metav1.ObjectMeta{Name: "frontend-canary", Namespace: managedNS, Labels: labels},
			Spec:       corev1.ServiceSpec{Selector: map[string]string{"app": "frontend"}, Ports: []corev1.ServicePort{{Port: 80}}},
		}
	}
	generated := svc(map[string]string{v1alpha1.GeneratedForLabel: "frontend"})
	plain := svc(map[string]string{"app": "frontend"})
	edited := generated.DeepCopy()
	edited.Spec.Selector["version"] = "2"
	vs := []byte(`{"apiVersion":"networking.istio.io/v1","kind":"VirtualService","metadata":{"name":"frontend-canary","namespace":"shop","labels":{"canarygate.io/generated-for":"frontend"}},"spec":{"hosts":["frontend"]}}`)
	canaryDeploy := fleetDeployment(t)
	canaryDeploy.Labels[v1alpha1.GeneratedForLabel] = "frontend"

	cases := []struct {
		name    string
		req     request
		allowed bool
		code    int32
		message string
	}{
		{name: "canarygate creates", req: request{op: admissionv1.Create, kind: serviceKind, user: testSA, obj: generated}, allowed: true},
		{name: "canarygate deletes", req: request{op: admissionv1.Delete, kind: serviceKind, user: testSA, old: generated}, allowed: true},
		{
			name: "a user edit is refused", req: request{op: admissionv1.Update, kind: serviceKind, user: "dev", old: generated, obj: edited},
			code: http.StatusForbidden, message: `Service shop/frontend-canary is generated by canarygate for Deployment "frontend"`,
		},
		{
			name: "a user deletion is refused, judged by the old object", req: request{op: admissionv1.Delete, kind: serviceKind, user: "dev", old: generated},
			code: http.StatusForbidden, message: "only canarygate and",
		},
		{
			name: "a user may not create a lookalike", req: request{op: admissionv1.Create, kind: serviceKind, user: "dev", obj: generated},
			code: http.StatusForbidden, message: "generated by canarygate",
		},
		{
			name: "removing the label is an edit", req: request{op: admissionv1.Update, kind: serviceKind, user: "dev", old: generated, obj: plain},
			code: http.StatusForbidden, message: "generated by canarygate",
		},
		{
			name: "the break-glass group may edit", req: request{op: admissionv1.Update, kind: serviceKind, user: "ops", groups: []string{adminGroup}, old: generated, obj: edited},
			allowed: true,
		},
		{
			name: "the garbage collector may delete", req: request{op: admissionv1.Delete, kind: serviceKind, user: "system:serviceaccount:kube-system:generic-garbage-collector", old: generated},
			allowed: true,
		},
		{name: "other objects are not canarygate's business", req: request{op: admissionv1.Delete, kind: serviceKind, user: "dev", old: plain}, allowed: true},
		{
			name: "a generated VirtualService is guarded", req: request{op: admissionv1.Delete, kind: virtualServiceKind, user: "dev", old: vs},
			code: http.StatusForbidden, message: "VirtualService shop/frontend-canary",
		},
		{
			name: "a generated Deployment is guarded", req: request{op: admissionv1.Update, user: "dev", old: canaryDeploy, obj: withImage(canaryDeploy, newImage)},
			code: http.StatusForbidden, message: "Deployment shop/frontend-canary",
		},
		{name: "status writes pass", req: request{op: admissionv1.Update, subResource: "status", user: "dev", old: generated, obj: edited}, allowed: true},
		{name: "DELETE without the old object is a bad request", req: request{op: admissionv1.Delete, kind: serviceKind, user: "dev"}, code: http.StatusBadRequest},
		{
			name: "a wrong kind is a bad request", req: request{op: admissionv1.Create, kind: metav1.GroupVersionKind{Version: "v1", Kind: "Pod"}, obj: generated},
			code: http.StatusBadRequest,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newTestHandlers(newFakeLookup(adminPolicy))
			tc.req.name = "frontend-canary"
			checkVerdict(t, serve(t, h.validateGenerated, tc.req.review(t)), tc.allowed, tc.code, tc.message)
		})
	}
}

func TestValidateCanary(t *testing.T) {
	bounded := v1alpha1.CanaryPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "bounded"},
		Spec: v1alpha1.CanaryPolicySpec{Bounds: v1alpha1.PolicyBounds{
			MaxWeight: ptr.To(30), MinInterval: "30s",
		}},
	}
	canary := func(mod func(*v1alpha1.Canary)) *v1alpha1.Canary {
		c := &v1alpha1.Canary{
			TypeMeta:   metav1.TypeMeta{APIVersion: "canarygate.io/v1alpha1", Kind: "Canary"},
			ObjectMeta: metav1.ObjectMeta{Name: "frontend", Namespace: managedNS},
			Spec: v1alpha1.CanarySpec{
				TargetRef: v1alpha1.TargetRef{Name: "frontend"},
				Analysis:  &v1alpha1.CanaryAnalysis{Interval: "1m", MaxWeight: 30, StepWeight: 10},
			},
		}
		if mod != nil {
			mod(c)
		}
		return c
	}
	tooHeavy := canary(func(c *v1alpha1.Canary) { c.Spec.Analysis.MaxWeight = 50 })
	cases := []struct {
		name    string
		req     request
		allowed bool
		message string
	}{
		{name: "within bounds", req: request{op: admissionv1.Create, obj: canary(nil)}, allowed: true},
		{name: "maxWeight above the cap", req: request{op: admissionv1.Create, obj: tooHeavy}, message: "analysis.maxWeight 50 exceeds the cap 30 of CanaryPolicy bounded"},
		{
			name: "stepWeights above the cap", req: request{op: admissionv1.Create, obj: canary(func(c *v1alpha1.Canary) { c.Spec.Analysis.StepWeights = []int{10, 20, 40} })},
			message: "stepWeights entry 40 exceeds the cap 30",
		},
		{
			name: "interval below the minimum", req: request{op: admissionv1.Create, obj: canary(func(c *v1alpha1.Canary) { c.Spec.Analysis.Interval = "10s" })},
			message: "analysis.interval 10s is below the minimum 30s",
		},
		{
			name: "skipAnalysis where the policy forbids it", req: request{op: admissionv1.Create, obj: canary(func(c *v1alpha1.Canary) { c.Spec.SkipAnalysis = true })},
			message: "skipAnalysis is not allowed",
		},
		{
			name: "a second Canary for the same Deployment", req: request{op: admissionv1.Create, obj: canary(func(c *v1alpha1.Canary) { c.Name = "frontend-2" })},
			message: "Canary frontend already targets Deployment frontend",
		},
		{
			name: "a metadata-only update of a Canary the policy tightened against passes",
			req: request{op: admissionv1.Update, old: tooHeavy, obj: func() *v1alpha1.Canary {
				c := tooHeavy.DeepCopy()
				c.Annotations = map[string]string{"note": "x"}
				return c
			}()},
			allowed: true,
		},
		{
			name: "a spec update is checked", req: request{op: admissionv1.Update, old: canary(nil), obj: tooHeavy},
			message: "exceeds the cap",
		},
		{name: "no bounds where no policy applies", req: request{op: admissionv1.Create, namespace: unmanagedNS, obj: tooHeavy}, allowed: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			l := newFakeLookup(bounded)
			l.canaries[managedNS+"/frontend"] = []string{"frontend"}
			h := newTestHandlers(l)
			tc.req.kind = canaryKind
			checkVerdict(t, serve(t, h.validateCanarygate, tc.req.review(t)), tc.allowed, http.StatusForbidden, tc.message)
		})
	}
}

func TestValidateCanaryPolicy(t *testing.T) {
	pol := func(mod func(*v1alpha1.CanaryPolicySpec)) *v1alpha1.CanaryPolicy {
		p := &v1alpha1.CanaryPolicy{
			TypeMeta:   metav1.TypeMeta{APIVersion: "canarygate.io/v1alpha1", Kind: "CanaryPolicy"},
			ObjectMeta: metav1.ObjectMeta{Name: "p"},
			Spec: v1alpha1.CanaryPolicySpec{
				NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "a"}},
				Bounds:            v1alpha1.PolicyBounds{MaxWeight: ptr.To(50), MinInterval: "30s"},
				Defaults:          &v1alpha1.CanaryAnalysis{Interval: "1m", MaxWeight: 50, StepWeight: 10},
				StripMetadataKeys: []string{"objectset.rio.cattle.io/*"},
				BreakGlassGroups:  []string{adminGroup},
			},
		}
		if mod != nil {
			mod(&p.Spec)
		}
		return p
	}
	cases := []struct {
		name    string
		obj     *v1alpha1.CanaryPolicy
		message string
	}{
		{name: "valid", obj: pol(nil)},
		{
			name: "a selector that does not parse", message: "namespaceSelector",
			obj: pol(func(s *v1alpha1.CanaryPolicySpec) {
				s.NamespaceSelector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "team", Operator: "Near"}}}
			}),
		},
		{name: "a minInterval that does not parse", message: `bounds.minInterval "1d"`, obj: pol(func(s *v1alpha1.CanaryPolicySpec) { s.Bounds.MinInterval = "1d" })},
		{name: "an empty strip key", message: "stripMetadataKeys[1] is empty", obj: pol(func(s *v1alpha1.CanaryPolicySpec) { s.StripMetadataKeys = append(s.StripMetadataKeys, " ") })},
		{name: "a strip key matching canarygate's label", message: "matches canarygate's own label", obj: pol(func(s *v1alpha1.CanaryPolicySpec) { s.StripMetadataKeys = []string{"canarygate.io/*"} })},
		{name: "an empty group", message: "breakGlassGroups[0] is empty", obj: pol(func(s *v1alpha1.CanaryPolicySpec) { s.BreakGlassGroups = []string{""} })},
		{name: "defaults beyond its own bounds", message: "defaults: analysis.maxWeight 80 exceeds the cap 50", obj: pol(func(s *v1alpha1.CanaryPolicySpec) { s.Defaults.MaxWeight = 80 })},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newTestHandlers(newFakeLookup())
			resp := serve(t, h.validateCanarygate, request{op: admissionv1.Create, kind: policyKind, namespace: "-", obj: tc.obj}.review(t))
			checkVerdict(t, resp, tc.message == "", http.StatusForbidden, tc.message)
		})
	}
}

// A Deployment's template is hashed through its typed form, as the controller does: the same
// template spelled differently (a quantity as "0.5" instead of "500m") is the same revision.
func TestRevisionIgnoresSpelling(t *testing.T) {
	stable := fleetDeployment(t)
	raw := strings.Replace(string(encode(t, stable)), `"cpu":"500m"`, `"cpu":"0.5"`, 1)
	if raw == string(encode(t, stable)) {
		t.Fatal("fixture has no cpu limit of 500m")
	}
	h := newTestHandlers(newFakeLookup())
	resp := serve(t, h.validateDeployment, request{op: admissionv1.Update, old: stable, obj: []byte(raw)}.review(t))
	checkVerdict(t, resp, true, 0, "")
}
