package webhook

import (
	"context"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"canarygate.io/canarygate/api/v1alpha1"
)

// mutateNamespace keeps the opt-in label on a Namespace that stays managed. The label is what
// every other webhook's namespaceSelector matches, and an update that replaces the Namespace with
// its manifest (Fleet's correctDrift.force, Argo CD's Replace=true, kubectl replace) drops it when
// Git does not declare it. Until the controller put it back, the API server would not send
// canarygate a Deployment replaced right after, and its template would roll out unmeasured. The
// webhook is only sent Namespaces whose old or new object carries the label, and fails open: when
// canarygate is down, removing the label still works as the emergency switch the README describes.
var optInLabelKeys = []string{v1alpha1.OptInKey}

func (h *handlers) mutateNamespace(ctx context.Context, req admission.Request) admission.Response {
	if req.Kind.Group != "" || req.Kind.Kind != "Namespace" {
		return wrongKind(req, "v1 Namespaces")
	}
	if req.Operation != admissionv1.Update || req.SubResource != "" {
		return admission.Allowed("")
	}
	obj, err := decodeView(req.Object.Raw, "object")
	if err != nil {
		return badRequest("%v", err)
	}
	if obj.Metadata.Labels[v1alpha1.OptInKey] == v1alpha1.OptInEnabled {
		return admission.Allowed("")
	}
	name := obj.Metadata.Name
	if name == "" {
		name = req.Name
	}
	// The namespace as the update would store it: that is what must stay managed.
	eff, resp := h.resolve(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: obj.Metadata.Labels, Annotations: obj.Metadata.Annotations}})
	if resp != nil {
		return *resp
	}
	if !eff.Managed {
		return admission.Allowed("the namespace is no longer managed: the opt-in label goes")
	}
	ops := setMetadata(nil, obj, "labels", optInLabelKeys, map[string]string{v1alpha1.OptInKey: v1alpha1.OptInEnabled})
	return admission.Patched("canarygate: the opt-in label stays while the namespace is managed", ops...)
}
