package webhook

import (
	"bytes"
	"encoding/json"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	kjson "sigs.k8s.io/json"

	"canarygate.io/canarygate/api/v1alpha1"
	"canarygate.io/canarygate/revision"
)

// objectView is the part of an admitted object the handlers read. Decoding only this (the pod
// template stays raw bytes) keeps a request to one pass over the object's JSON; the template is
// decoded into its typed form only when its revision is needed.
type objectView struct {
	Metadata struct {
		Name              string            `json:"name"`
		Namespace         string            `json:"namespace"`
		Labels            map[string]string `json:"labels"`
		Annotations       map[string]string `json:"annotations"`
		DeletionTimestamp *json.RawMessage  `json:"deletionTimestamp"`
	} `json:"metadata"`
	Spec struct {
		Template json.RawMessage `json:"template"`
	} `json:"spec"`
}

// decodeView parses an admitted object. what names it in errors ("object", "old object").
func decodeView(raw []byte, what string) (*objectView, error) {
	if len(raw) == 0 {
		return nil, fmt.Errorf("the request carries no %s", what)
	}
	var v objectView
	// Case-sensitive, like the API server's own decoder: "Metadata" is not "metadata".
	if err := kjson.UnmarshalCaseSensitivePreserveInts(raw, &v); err != nil {
		return nil, fmt.Errorf("the request's %s is not a valid Kubernetes object: %w", what, err)
	}
	return &v, nil
}

func (v *objectView) annotation(key string) (string, bool) {
	val, ok := v.Metadata.Annotations[key]
	return val, ok
}

// generatedFor reports whether the object is one canarygate generated.
func (v *objectView) generatedFor() bool {
	if v == nil {
		return false
	}
	_, ok := v.Metadata.Labels[v1alpha1.GeneratedForLabel]
	return ok
}

// templateRevision is a pod template's revision and canonical JSON.
type templateRevision struct {
	hash  string
	canon []byte
}

// revisionOf computes the revision of a Deployment's raw spec.template exactly as the controller
// does on typed objects (revision.Hash): through the typed PodTemplateSpec, so that both sides
// agree whatever field order or quantity spelling the JSON uses.
func revisionOf(raw json.RawMessage, what string) (templateRevision, error) {
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return templateRevision{}, fmt.Errorf("the request's %s has no spec.template", what)
	}
	var tmpl corev1.PodTemplateSpec
	if err := kjson.UnmarshalCaseSensitivePreserveInts(raw, &tmpl); err != nil {
		return templateRevision{}, fmt.Errorf("the request's %s has an invalid spec.template: %w", what, err)
	}
	canon, err := revision.Canonical(&tmpl)
	if err != nil {
		return templateRevision{}, fmt.Errorf("the request's %s: %w", what, err)
	}
	return templateRevision{hash: revision.HashCanonical(canon), canon: canon}, nil
}

// sameTemplate reports whether two raw templates have the same revision, and returns both
// revisions when it had to compute them. The API server encodes old and new object with the same
// encoder, so identical templates are identical bytes and most updates need no hashing at all.
func sameTemplate(oldRaw, newRaw json.RawMessage) (same bool, oldRev, newRev *templateRevision, err error) {
	if bytes.Equal(oldRaw, newRaw) && len(newRaw) > 0 {
		return true, nil, nil, nil
	}
	o, err := revisionOf(oldRaw, "old object")
	if err != nil {
		return false, nil, nil, err
	}
	n, err := revisionOf(newRaw, "object")
	if err != nil {
		return false, nil, nil, err
	}
	return o.hash == n.hash, &o, &n, nil
}

// requestOptions is the part of the request's Create/Update/PatchOptions the handlers read.
type requestOptions struct {
	FieldManager string `json:"fieldManager"`
}

// fieldManager returns the request's field manager, or "" when it set none.
func fieldManager(raw []byte) string {
	if len(raw) == 0 {
		return ""
	}
	var o requestOptions
	// Options the API server sends are well formed; anything else simply names no manager.
	if err := json.Unmarshal(raw, &o); err != nil {
		return ""
	}
	return o.FieldManager
}
