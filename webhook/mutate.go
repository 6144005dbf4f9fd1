package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"

	"github.com/tidwall/gjson"
	"gomodules.xyz/jsonpatch/v2"
	admissionv1 "k8s.io/api/admission/v1"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
	kjson "sigs.k8s.io/json"

	"canarygate.io/canarygate/api/v1alpha1"
	"canarygate.io/canarygate/revision"
)

// mutateDeployment diverts pod-template changes of managed Deployments into a pending revision,
// and strips GitOps ownership metadata from the Deployments canarygate generates.
func (h *handlers) mutateDeployment(ctx context.Context, req admission.Request) admission.Response {
	if !isDeployment(req) {
		return wrongKind(req, "apps/v1 Deployments")
	}
	// scale and status never change the template.
	if req.SubResource != "" || !isWrite(req.Operation) {
		return admission.Allowed("")
	}
	obj, err := decodeView(req.Object.Raw, "object")
	if err != nil {
		return badRequest("%v", err)
	}
	if obj.generatedFor() {
		return h.stripGenerated(ctx, req, obj)
	}
	// CREATE passes: the first version is the stable one.
	if req.Operation == admissionv1.Create {
		return admission.Allowed("")
	}
	old, err := decodeView(req.OldObject.Raw, "old object")
	if err != nil {
		return badRequest("%v", err)
	}
	eff, resp := h.effective(ctx, req.Namespace)
	if resp != nil {
		return *resp
	}
	if !eff.DeploymentManaged(obj.Metadata.Annotations) {
		return admission.Allowed("")
	}
	return h.divert(req, old, obj)
}

// divert decides an UPDATE of a managed Deployment; see the package documentation.
func (h *handlers) divert(req admission.Request, old, obj *objectView) admission.Response {
	// The validator decides whether this requester may set break-glass.
	if _, ok := obj.annotation(v1alpha1.BreakGlassAnnotation); ok {
		return admission.Allowed("break-glass: the template change is not diverted")
	}
	same, newRev, err := h.memo.sameTemplate(old.Spec.Template, obj.Spec.Template)
	if unseen := (*unseenChangeError)(nil); errors.As(err, &unseen) {
		return admission.Denied(unseen.Error())
	}
	if err != nil {
		return badRequest("%v", err)
	}
	if !same {
		if req.UserInfo.Username == h.serviceAccount && obj.Metadata.Annotations[v1alpha1.PromotedRevisionAnnotation] == newRev.hash {
			return admission.Allowed("promotion of revision " + newRev.hash)
		}
		return h.divertPatch(req, old, obj, newRev)
	}
	if pendingChanged(old, obj) {
		// The request writes the pending revision itself: it must be one the controller can use.
		if err := h.checkPending(obj); err != nil {
			return badRequest("%v", err)
		}
		return admission.Allowed("")
	}
	if hasPending(obj) && h.gitOps[fieldManager(req.Options.Raw)] {
		// Git states the stable template again (a revert): nothing is pending any more.
		return clearPending(obj)
	}
	// Scaling by update, a label edit, an HPA: an unrelated update never cancels a pending canary.
	return admission.Allowed("")
}

var pendingKeys = [...]string{v1alpha1.DesiredRevisionAnnotation, v1alpha1.DesiredTemplateAnnotation}

func hasPending(v *objectView) bool {
	for _, k := range pendingKeys {
		if _, ok := v.annotation(k); ok {
			return true
		}
	}
	return false
}

// pendingChanged reports whether the request sets, changes or removes a desired-* annotation.
func pendingChanged(old, obj *objectView) bool {
	for _, k := range pendingKeys {
		o, oldOK := old.annotation(k)
		n, newOK := obj.annotation(k)
		if oldOK != newOK || o != n {
			return true
		}
	}
	return false
}

// checkPending verifies that the desired-* annotations are both absent, or a pod template and
// its revision.
func (h *handlers) checkPending(v *objectView) error {
	rev, revOK := v.annotation(v1alpha1.DesiredRevisionAnnotation)
	tmpl, tmplOK := v.annotation(v1alpha1.DesiredTemplateAnnotation)
	switch {
	case !revOK && !tmplOK:
		return nil
	case !revOK || !tmplOK:
		return fmt.Errorf("canarygate: %s and %s are set together or not at all",
			v1alpha1.DesiredRevisionAnnotation, v1alpha1.DesiredTemplateAnnotation)
	}
	hash, err := h.memo.desiredRevision(tmpl)
	if err != nil {
		return fmt.Errorf("canarygate: annotation %s: %w", v1alpha1.DesiredTemplateAnnotation, err)
	}
	if hash != rev {
		return fmt.Errorf("canarygate: annotation %s is %q but the template in %s has revision %q",
			v1alpha1.DesiredRevisionAnnotation, rev, v1alpha1.DesiredTemplateAnnotation, hash)
	}
	return nil
}

// divertPatch puts the old (stable) template back and records the new one as the pending
// revision. Only the template is diverted: every other change of the update stays.
func (h *handlers) divertPatch(req admission.Request, old, obj *objectView, newRev *templateRevision) admission.Response {
	ops, err := h.memo.templatePatch(old.Spec.Template, obj.Spec.Template)
	if err != nil {
		return badRequest("canarygate: diffing pod templates: %v", err)
	}
	want := map[string]string{
		v1alpha1.DesiredRevisionAnnotation: newRev.hash,
		v1alpha1.DesiredTemplateAnnotation: newRev.desired,
	}
	ops = setMetadata(ops, obj, "annotations", pendingKeys[:], want)
	keep, err := keepManagedFields(req, want)
	if err != nil {
		return badRequest("%v", err)
	}
	if keep != nil {
		ops = append(ops, *keep)
	}
	resp := admission.Patched("", ops...)
	resp.Warnings = []string{fmt.Sprintf(
		"canarygate: the pod template change is held as revision %s and will be rolled out through a canary", newRev.hash)}
	return resp
}

// keepManagedFields returns the operation that puts the stored object's managedFields back when,
// once diverted, the update changes nothing else. The API server records a plain update's field
// manager (a Helm rollback by fleet, say) in managedFields before admission, so without this a
// drift correction that re-states the pending revision would still write a new resourceVersion,
// and the next server-side apply another one: the loop a GitOps agent must never start. Status is
// ignored: the API server resets it from the stored object on every update of the main resource.
func keepManagedFields(req admission.Request, pending map[string]string) (*jsonpatch.Operation, error) {
	oldFields := gjson.GetBytes(req.OldObject.Raw, "metadata.managedFields")
	newFields := gjson.GetBytes(req.Object.Raw, "metadata.managedFields")
	if oldFields.Raw == newFields.Raw || !oldFields.IsArray() || !newFields.IsArray() {
		return nil, nil
	}
	var old, obj map[string]any
	if err := json.Unmarshal(req.OldObject.Raw, &old); err != nil {
		return nil, fmt.Errorf("the request's old object is not valid JSON: %w", err)
	}
	if err := json.Unmarshal(req.Object.Raw, &obj); err != nil {
		return nil, fmt.Errorf("the request's object is not valid JSON: %w", err)
	}
	oldMeta, _ := old["metadata"].(map[string]any)
	objMeta, _ := obj["metadata"].(map[string]any)
	oldSpec, _ := old["spec"].(map[string]any)
	objSpec, _ := obj["spec"].(map[string]any)
	if oldMeta == nil || objMeta == nil || oldSpec == nil || objSpec == nil {
		return nil, nil
	}
	// The object as it will be once diverted: the stable template and the pending revision.
	objSpec["template"] = oldSpec["template"]
	annotations, _ := objMeta["annotations"].(map[string]any)
	if annotations == nil {
		annotations = map[string]any{}
		objMeta["annotations"] = annotations
	}
	for k, v := range pending {
		annotations[k] = v
	}
	for _, o := range []map[string]any{old, obj} {
		delete(o["metadata"].(map[string]any), "managedFields")
		delete(o, "status")
	}
	if !reflect.DeepEqual(old, obj) {
		return nil, nil
	}
	op := jsonpatch.NewOperation("replace", "/metadata/managedFields", json.RawMessage(oldFields.Raw))
	return &op, nil
}

// setMetadata appends the operations that make obj's metadata.<field> ("labels" or "annotations")
// hold want, for the keys in order (a fixed order gives a deterministic patch).
func setMetadata(ops []jsonpatch.Operation, obj *objectView, field string, keys []string, want map[string]string) []jsonpatch.Operation {
	have := obj.Metadata.Annotations
	if field == "labels" {
		have = obj.Metadata.Labels
	}
	switch {
	case !obj.Metadata.Present:
		return append(ops, jsonpatch.NewOperation("add", "/metadata", map[string]any{field: want}))
	case have == nil:
		return append(ops, jsonpatch.NewOperation("add", "/metadata/"+field, want))
	}
	for _, k := range keys {
		v, ok := want[k]
		if !ok {
			continue
		}
		switch cur, exists := have[k]; {
		case !exists:
			ops = append(ops, jsonpatch.NewOperation("add", metadataPath(field, k), v))
		case cur != v:
			ops = append(ops, jsonpatch.NewOperation("replace", metadataPath(field, k), v))
		}
	}
	return ops
}

// clearPending removes the pending revision.
func clearPending(obj *objectView) admission.Response {
	var ops []jsonpatch.Operation
	for _, k := range pendingKeys {
		if _, ok := obj.annotation(k); ok {
			ops = append(ops, jsonpatch.NewOperation("remove", metadataPath("annotations", k), nil))
		}
	}
	return admission.Patched("Git states the stable template again: pending revision cleared", ops...)
}

var pointerEscaper = strings.NewReplacer("~", "~0", "/", "~1")

// metadataPath is the JSON pointer of key in metadata.<field>.
func metadataPath(field, key string) string {
	return "/metadata/" + field + "/" + pointerEscaper.Replace(key)
}

// templateMeta is the metadata of a Deployment's pod template.
type templateMeta struct {
	Metadata struct {
		Labels      map[string]string `json:"labels"`
		Annotations map[string]string `json:"annotations"`
	} `json:"metadata"`
}

// stripGenerated removes every ownership key from a generated object's metadata and, for a
// Deployment, its pod template's: a second line of defence behind the controller, so that nothing
// that copies metadata makes a GitOps agent adopt a generated object.
func (h *handlers) stripGenerated(ctx context.Context, req admission.Request, obj *objectView) admission.Response {
	eff, resp := h.effective(ctx, req.Namespace)
	if resp != nil {
		return *resp
	}
	ops := removeKeys(nil, "/metadata/labels/", eff.StripKeys, obj.Metadata.Labels)
	ops = removeKeys(ops, "/metadata/annotations/", eff.StripKeys, obj.Metadata.Annotations)
	if len(obj.Spec.Template) > 0 && string(obj.Spec.Template) != "null" {
		var tm templateMeta
		if err := kjson.UnmarshalCaseSensitivePreserveInts(obj.Spec.Template, &tm); err != nil {
			return badRequest("the request's object has an invalid spec.template: %v", err)
		}
		ops = removeKeys(ops, "/spec/template/metadata/labels/", eff.StripKeys, tm.Metadata.Labels)
		ops = removeKeys(ops, "/spec/template/metadata/annotations/", eff.StripKeys, tm.Metadata.Annotations)
	}
	if len(ops) == 0 {
		return admission.Allowed("")
	}
	return admission.Patched("GitOps ownership metadata stripped from a generated object", ops...)
}

func removeKeys(ops []jsonpatch.Operation, prefix string, patterns []string, m map[string]string) []jsonpatch.Operation {
	for _, k := range revision.OwnershipKeysIn(patterns, m) {
		ops = append(ops, jsonpatch.NewOperation("remove", prefix+pointerEscaper.Replace(k), nil))
	}
	return ops
}
