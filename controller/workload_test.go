package controller

import (
	"k8s.io/apimachinery/pkg/api/equality"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"canarygate.io/canarygate/api/v1alpha1"
	"canarygate.io/canarygate/policy"
	"canarygate.io/canarygate/revision"
)

func svc(name string, selector map[string]string, ports ...int32) corev1.Service {
	s := corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop"}, Spec: corev1.ServiceSpec{Selector: selector, Type: corev1.ServiceTypeNodePort}}
	for _, p := range ports {
		s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{Name: "http", Port: p, TargetPort: intstr.FromInt32(8080), NodePort: 30080, Protocol: corev1.ProtocolTCP})
	}
	return s
}

func targetDeployment() *appsv1.Deployment {
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop", Labels: map[string]string{
			"app": "web", "objectset.rio.cattle.io/hash": "abc", "app.kubernetes.io/managed-by": "Helm",
		}},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](3),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web", "tier": "front"}}},
		},
	}
}

func desiredTemplate() *corev1.PodTemplateSpec {
	return &corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{
			Labels:      map[string]string{"app": "web", "tier": "front", "version": "v2", "meta.helm.sh/release-name": "x"},
			Annotations: map[string]string{"meta.helm.sh/release-namespace": "shop", "prometheus.io/scrape": "true"},
		},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "web:v2"}}},
	}
}

func planFor(services ...corev1.Service) (*workloadPlan, error) {
	c := &v1alpha1.Canary{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop", UID: "c-uid"}}
	return planCanary(planInput{
		Canary: c, Target: targetDeployment(), Desired: desiredTemplate(), Revision: "r2",
		StableService: "web", Services: services, StripKeys: revision.DefaultOwnershipKeys, ProgressDeadlineSeconds: 600,
	})
}

func TestPlanCanary(t *testing.T) {
	p, err := planFor(svc("web", map[string]string{"app": "web"}, 80), svc("front", map[string]string{"tier": "front"}, 80), svc("other", map[string]string{"app": "db"}, 5432))
	if err != nil {
		t.Fatal(err)
	}
	pods := p.Deployment.Spec.Template.Labels
	want := map[string]string{"app": "web-canary", "tier": "front-canary", "version": "v2", v1alpha1.GeneratedForLabel: "web"}
	if !labels.Equals(pods, want) {
		t.Errorf("pod labels = %v, want %v", pods, want)
	}
	if a := p.Deployment.Spec.Template.Annotations; len(a) != 1 || a["prometheus.io/scrape"] != "true" {
		t.Errorf("pod annotations = %v, want only prometheus.io/scrape", a)
	}
	if l := p.Deployment.Labels; !labels.Equals(l, map[string]string{"app": "web", v1alpha1.GeneratedForLabel: "web"}) {
		t.Errorf("object labels = %v: ownership keys must be stripped", l)
	}
	if *p.Deployment.Spec.Replicas != 3 || p.Deployment.Name != "web-canary" || p.Deployment.Annotations[v1alpha1.RevisionAnnotation] != "r2" {
		t.Errorf("deployment = %s replicas %d revision %q", p.Deployment.Name, *p.Deployment.Spec.Replicas, p.Deployment.Annotations[v1alpha1.RevisionAnnotation])
	}
	sel, _ := metav1.LabelSelectorAsSelector(p.Deployment.Spec.Selector)
	if !sel.Matches(labels.Set(pods)) {
		t.Errorf("canary selector %s does not select its pods", sel)
	}
	if !labels.SelectorFromSet(p.Service.Spec.Selector).Matches(labels.Set(pods)) {
		t.Errorf("canary Service selector %v does not select the canary pods", p.Service.Spec.Selector)
	}
	if labels.SelectorFromSet(p.Service.Spec.Selector).Matches(labels.Set(targetDeployment().Spec.Template.Labels)) {
		t.Error("canary Service selects the stable pods")
	}
	if ports := p.Service.Spec.Ports; len(ports) != 1 || ports[0].Port != 80 || ports[0].NodePort != 0 || p.Service.Spec.Type != corev1.ServiceTypeClusterIP {
		t.Errorf("canary Service ports = %+v type %s", ports, p.Service.Spec.Type)
	}
	if ref := metav1.GetControllerOf(p.Deployment); ref == nil || ref.Kind != "Canary" || ref.UID != "c-uid" {
		t.Errorf("controller ref = %+v", ref)
	}
}

func TestPlanCanaryRefusesUnsafeLabels(t *testing.T) {
	long := strings.Repeat("w", 60)
	for name, tc := range map[string]struct {
		services []corev1.Service
		want     string
	}{
		"no stable service": {services: nil, want: "service web does not exist"},
		// "version" is only on the canary pods: no rewrite can hide them from this Service.
		"service selecting only new labels": {
			services: []corev1.Service{svc("web", map[string]string{"app": "web"}, 80), svc("v2", map[string]string{"version": "v2"}, 80)},
			want:     "service v2",
		},
		"foreign service named like the canary": {
			services: []corev1.Service{svc("web", map[string]string{"app": "web"}, 80), svc("web-canary", map[string]string{"x": "y"}, 80)},
			want:     "not generated by canarygate",
		},
		"label value too long for the suffix": {
			services: []corev1.Service{svc("web", map[string]string{"app": "web"}, 80), svc("t", map[string]string{"tier": "front"}, 80)},
			want:     "",
		},
	} {
		t.Run(name, func(t *testing.T) {
			if tc.want == "" {
				// Exercise the label-length check with a long value.
				c := &v1alpha1.Canary{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop"}}
				d := desiredTemplate()
				d.Labels["tier"] = long
				tgt := targetDeployment()
				tgt.Spec.Template.Labels["tier"] = long
				tc.services[1].Spec.Selector = map[string]string{"tier": long}
				_, err := planCanary(planInput{Canary: c, Target: tgt, Desired: d, Revision: "r2", StableService: "web", Services: tc.services})
				if err == nil || !strings.Contains(err.Error(), "cannot be changed") {
					t.Fatalf("err = %v, want a label-length refusal", err)
				}
				return
			}
			_, err := planFor(tc.services...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.want)
			}
		})
	}
}

func TestNewCanary(t *testing.T) {
	d := targetDeployment()
	d.UID = "d-uid"
	one := newCanary(d, []corev1.Service{svc("frontend", map[string]string{"app": "web"}, 8080), svc("db", map[string]string{"app": "db"}, 5432)})
	if one.Spec.Service.Name != "frontend" || one.Spec.Service.Port != 8080 || one.Spec.TargetRef.Name != "web" || one.Spec.Analysis != nil {
		t.Errorf("spec = %+v", one.Spec)
	}
	if one.Labels[v1alpha1.CreatedByLabel] != v1alpha1.CreatedByController || one.OwnerReferences[0].UID != "d-uid" {
		t.Errorf("metadata = %+v", one.ObjectMeta)
	}
	two := newCanary(d, []corev1.Service{svc("a", map[string]string{"app": "web"}, 80), svc("b", map[string]string{"tier": "front"}, 80)})
	if two.Spec.Service.Name != "web" || two.Spec.Service.Port != 0 {
		t.Errorf("with two selecting Services the Deployment's name applies: %+v", two.Spec.Service)
	}
}

func TestResolveSettings(t *testing.T) {
	opts := &Options{DefaultAnalysis: DefaultAnalysis(), DefaultProgressDeadline: 10 * time.Minute, MetricsServer: "http://flag"}
	cap30 := 30
	for name, tc := range map[string]struct {
		c    v1alpha1.CanarySpec
		eff  policy.Effective
		want func(resolved) string
	}{
		"flag defaults": {
			want: func(r resolved) string {
				if r.Interval != time.Minute || r.Threshold != 5 || r.MaxWeight != 50 || r.StepWeight != 10 || len(r.Analysis.Metrics) != 2 ||
					r.MetricsServer != "http://flag" || r.ProgressDeadline != 10*time.Minute || r.Analysis.NoData != v1alpha1.NoDataFail {
					return "not the flag defaults"
				}
				return ""
			},
		},
		"policy defaults and bounds": {
			eff: policy.Effective{Defaults: &v1alpha1.CanaryAnalysis{Interval: "2s", StepWeight: 20}, MinInterval: 10 * time.Second, MaxWeight: &cap30, MetricsServer: "http://policy"},
			want: func(r resolved) string {
				if r.Interval != 10*time.Second || r.StepWeight != 20 || r.MaxWeight != 30 || r.MetricsServer != "http://policy" ||
					len(r.Analysis.Metrics) == 0 || !equality.Semantic.DeepEqual(r.Analysis.Metrics, DefaultAnalysis().Metrics) {
					return "policy not applied"
				}
				return ""
			},
		},
		"canary wins; stepWeights set the max; skip needs the policy": {
			c: v1alpha1.CanarySpec{
				MetricsServer: "http://canary", SkipAnalysis: true, ProgressDeadlineSeconds: ptr.To[int32](30),
				Analysis: &v1alpha1.CanaryAnalysis{Interval: "5s", StepWeights: []int{5, 25, 80}, Webhooks: []v1alpha1.CanaryWebhook{{Name: "t"}, {Name: "g", Type: v1alpha1.HookConfirmPromotion}}},
			},
			eff: policy.Effective{Defaults: &v1alpha1.CanaryAnalysis{Interval: "1m"}, AllowSkipAnalysis: false},
			want: func(r resolved) string {
				if r.Interval != 5*time.Second || r.MaxWeight != 80 || r.MetricsServer != "http://canary" || r.SkipAnalysis ||
					r.ProgressDeadline != 30*time.Second || !r.Hooks[v1alpha1.HookRollout] || !r.Hooks[v1alpha1.HookConfirmPromotion] {
					return "canary settings not applied"
				}
				return ""
			},
		},
	} {
		t.Run(name, func(t *testing.T) {
			c := &v1alpha1.Canary{Spec: tc.c}
			r := resolveSettings(c, tc.eff, opts)
			if msg := tc.want(r); msg != "" {
				t.Errorf("%s: %+v", msg, r)
			}
		})
	}
}
