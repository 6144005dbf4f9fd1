// Package revision is the pure decision code shared by the webhook and the controller: the
// version-independent hash of a pod template, and the stripping of GitOps ownership metadata.
package revision

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"

	corev1 "k8s.io/api/core/v1"
)

// Hash returns the revision of a pod template: the first 16 hex digits of the SHA-256 of its
// canonical JSON. See Canonical for why it is stable across library and Go versions.
func Hash(tmpl *corev1.PodTemplateSpec) (string, error) {
	canon, err := Canonical(tmpl)
	if err != nil {
		return "", err
	}
	return HashCanonical(canon), nil
}

// HashCanonical hashes JSON that Canonical produced.
func HashCanonical(canon []byte) string {
	sum := sha256.Sum256(canon)
	return hex.EncodeToString(sum[:8])
}

// Canonical renders a pod template as canonical JSON: object keys sorted, and every null, empty
// string, false-free empty object and empty array dropped. The result depends only on the
// template's values, never on the order of struct fields or on fields a newer library version adds
// but leaves unset, so upgrading canarygate or client libraries never invents a new revision. It is
// CanonicalJSON of json.Marshal(tmpl), so a caller that needs that encoding too can encode once.
func Canonical(tmpl *corev1.PodTemplateSpec) ([]byte, error) {
	raw, err := json.Marshal(tmpl)
	if err != nil {
		return nil, fmt.Errorf("encoding pod template: %w", err)
	}
	return CanonicalJSON(raw)
}

// CanonicalJSON canonicalises any JSON document the way Canonical does: its first JSON value
// decoded with numbers kept as written, every empty value dropped from objects (array elements
// keep their positions), and encoded again with sorted keys and without HTML escaping, exactly as
// encoding/json encodes a map[string]any.
func CanonicalJSON(raw []byte) ([]byte, error) {
	canon, err := canonicalJSON(raw)
	if err != nil {
		return nil, fmt.Errorf("decoding pod template: %w", err)
	}
	return canon, nil
}

// Decode parses a pod template from JSON (the desired-template annotation).
func Decode(raw string) (*corev1.PodTemplateSpec, error) {
	var tmpl corev1.PodTemplateSpec
	dec := json.NewDecoder(bytes.NewReader([]byte(raw)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&tmpl); err != nil {
		return nil, fmt.Errorf("desired template is not a valid pod template: %w", err)
	}
	return &tmpl, nil
}
