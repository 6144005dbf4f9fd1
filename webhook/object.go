package webhook

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/tidwall/gjson"
	"gomodules.xyz/jsonpatch/v2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/lru"
	kjson "sigs.k8s.io/json"

	"canarygate.io/canarygate/api/v1alpha1"
	"canarygate.io/canarygate/revision"
)

// objectView is the part of an admitted object the handlers read: its name, labels and
// annotations, and its pod template as raw JSON. Only these are extracted; the rest of the object
// (managedFields, status) is skipped without being decoded, and the template is decoded into its
// typed form only when its revision is needed.
type objectView struct {
	Metadata struct {
		// Present is false when the object has no metadata object at all (absent or null): only
		// a malformed request, but a patch must still apply to it.
		Present     bool
		Name        string
		Labels      map[string]string
		Annotations map[string]string
	}
	Spec struct {
		Template []byte
	}
}

// decodeView parses an admitted object. what names it in errors ("object", "old object").
func decodeView(raw []byte, what string) (*objectView, error) {
	if len(raw) == 0 {
		return nil, fmt.Errorf("the request carries no %s", what)
	}
	if !gjson.ValidBytes(raw) {
		return nil, fmt.Errorf("the request's %s is not valid JSON", what)
	}
	if first := bytes.TrimLeft(raw, " \t\r\n"); first[0] != '{' {
		return nil, fmt.Errorf("the request's %s is not a JSON object", what)
	}
	var v objectView
	// Keys are matched case-sensitively, like the API server's own decoder does. GetBytes copies
	// only what it returns, not the object.
	meta := gjson.GetBytes(raw, "metadata")
	if meta.Exists() && meta.Type != gjson.Null {
		if !meta.IsObject() {
			return nil, fmt.Errorf("the request's %s has a metadata that is not an object", what)
		}
		v.Metadata.Present = true
		name := meta.Get("name")
		if name.Exists() && name.Type != gjson.String && name.Type != gjson.Null {
			return nil, fmt.Errorf("the request's %s has a metadata.name that is not a string", what)
		}
		v.Metadata.Name = name.Str
		var err error
		if v.Metadata.Labels, err = stringMap(meta.Get("labels")); err != nil {
			return nil, fmt.Errorf("the request's %s has invalid metadata.labels: %w", what, err)
		}
		if v.Metadata.Annotations, err = stringMap(meta.Get("annotations")); err != nil {
			return nil, fmt.Errorf("the request's %s has invalid metadata.annotations: %w", what, err)
		}
	}
	if tmpl := gjson.GetBytes(raw, "spec.template"); tmpl.Exists() {
		v.Spec.Template = []byte(tmpl.Raw)
	}
	return &v, nil
}

// stringMap decodes a JSON object of strings; absent and null are a nil map.
func stringMap(r gjson.Result) (map[string]string, error) {
	if !r.Exists() || r.Type == gjson.Null {
		return nil, nil
	}
	if !r.IsObject() {
		return nil, errors.New("not an object")
	}
	m := map[string]string{}
	var err error
	r.ForEach(func(k, val gjson.Result) bool {
		if val.Type != gjson.String {
			err = fmt.Errorf("the value of %q is not a string", k.Str)
			return false
		}
		m[k.Str] = val.Str
		return true
	})
	return m, err
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

// templateRevision is a pod template's revision and the JSON recorded as desired-template.
type templateRevision struct {
	hash string
	// desired is the typed template's JSON, not the pruned canonical form the hash is taken of:
	// pruning empty objects is harmless for a hash but would lose meaning in the template itself
	// (an empty downwardAPI volume source would come back as an emptyDir). Encoding the typed
	// value keeps it independent of the request's key order and white space.
	desired string
	// unknown lists the fields of the template that canarygate's Kubernetes API library does not
	// know (a newer API server), which the typed template, its hash and desired leave out; raw is
	// then the canonical form of the template as sent, unknown fields included.
	unknown []string
	raw     string
}

// revisionOf computes the revision of a Deployment's raw spec.template exactly as the controller
// does on typed objects (revision.Hash): through the typed PodTemplateSpec, so that both sides
// agree whatever field order or quantity spelling the JSON uses.
func revisionOf(raw []byte, what string) (templateRevision, error) {
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return templateRevision{}, fmt.Errorf("the request's %s has no spec.template", what)
	}
	var tmpl corev1.PodTemplateSpec
	strict, err := kjson.UnmarshalStrict(raw, &tmpl, kjson.DisallowUnknownFields)
	if err != nil {
		return templateRevision{}, fmt.Errorf("the request's %s has an invalid spec.template: %w", what, err)
	}
	desired, err := json.Marshal(&tmpl)
	if err != nil {
		return templateRevision{}, fmt.Errorf("the request's %s: encoding spec.template: %w", what, err)
	}
	// revision.Canonical is CanonicalJSON of exactly this encoding: encode the template once.
	canon, err := revision.CanonicalJSON(desired)
	if err != nil {
		return templateRevision{}, fmt.Errorf("the request's %s: %w", what, err)
	}
	r := templateRevision{hash: revision.HashCanonical(canon), desired: string(desired)}
	if len(strict) > 0 {
		for _, e := range strict {
			// sigs.k8s.io/json words them `unknown field "spec.x"`, relative to the template.
			field := strings.TrimSuffix(strings.TrimPrefix(e.Error(), `unknown field "`), `"`)
			r.unknown = append(r.unknown, "spec.template."+field)
		}
		rawCanon, err := revision.CanonicalJSON(raw)
		if err != nil {
			return templateRevision{}, fmt.Errorf("the request's %s: %w", what, err)
		}
		r.raw = string(rawCanon)
	}
	return r, nil
}

// unseenChangeError refuses a template change that involves fields canarygate's API library does
// not know: it could neither hold them (the desired template would lose them, and the promotion
// write with it) nor tell whether they changed, and letting such a change through would roll it
// out unmeasured.
type unseenChangeError struct{ fields []string }

func (e *unseenChangeError) Error() string {
	const show = 5
	fields := e.fields
	more := ""
	if len(fields) > show {
		fields, more = fields[:show], fmt.Sprintf(" and %d more", len(e.fields)-show)
	}
	return fmt.Sprintf("canarygate: this pod template change involves fields that this canarygate version does not know "+
		"(%s%s; the API server is newer than canarygate's Kubernetes library), so it can neither hold the change "+
		"for a canary nor roll it out measured. Upgrade canarygate, or ask a break-glass group member to set annotation %s",
		strings.Join(fields, ", "), more, v1alpha1.BreakGlassAnnotation)
}

// memo remembers the results of the pure, costly steps by their input. The same templates come
// back again and again (every update of a Deployment carries its stable template, a GitOps agent
// re-applies the same state, the validator sees what the mutator produced), so a small bounded
// cache turns most requests into lookups. It holds results only, never decisions.
type memo struct {
	revisions *lru.Cache // raw spec.template -> templateRevision
	desired   *lru.Cache // desired-template annotation value -> its revision
	patches   *lru.Cache // old and new raw spec.template -> template patch operations
}

// memoSize bounds each cache: a few thousand templates of a few KB each.
const memoSize = 2048

func newMemo() *memo {
	return &memo{revisions: lru.New(memoSize), desired: lru.New(memoSize), patches: lru.New(memoSize)}
}

func (m *memo) revision(raw []byte, what string) (templateRevision, error) {
	// One copy of the template for the lookup and the entry: the cache keys are interfaces.
	key := string(raw)
	if r, ok := m.revisions.Get(key); ok {
		return r.(templateRevision), nil
	}
	r, err := revisionOf(raw, what)
	if err != nil {
		return r, err
	}
	m.revisions.Add(key, r)
	// What the mutator records as desired-template: the validator checks it next.
	m.desired.Add(r.desired, r.hash)
	return r, nil
}

// sameTemplate reports whether two raw templates have the same revision, and returns the new
// one's when it had to compute it. The API server encodes old and new object with the same
// encoder, so identical templates are identical bytes and most updates need no hashing at all.
// Where either template has fields unknown to canarygate, only templates equal as sent (in
// canonical form) are the same; any other change is refused with an *unseenChangeError.
func (m *memo) sameTemplate(oldRaw, newRaw []byte) (bool, *templateRevision, error) {
	if len(newRaw) > 0 && bytes.Equal(oldRaw, newRaw) {
		return true, nil, nil
	}
	o, err := m.revision(oldRaw, "old object")
	if err != nil {
		return false, nil, err
	}
	n, err := m.revision(newRaw, "object")
	if err != nil {
		return false, nil, err
	}
	if len(o.unknown) == 0 && len(n.unknown) == 0 {
		return o.hash == n.hash, &n, nil
	}
	if o.raw == n.raw {
		return true, &n, nil
	}
	fields := slices.Concat(o.unknown, n.unknown)
	slices.Sort(fields)
	return false, &n, &unseenChangeError{fields: slices.Compact(fields)}
}

// templatePatch is the minimal JSON patch that turns the new template back into the old one.
func (m *memo) templatePatch(oldRaw, newRaw []byte) ([]jsonpatch.Operation, error) {
	key := string(oldRaw) + "\x00" + string(newRaw)
	if ops, ok := m.patches.Get(key); ok {
		return ops.([]jsonpatch.Operation), nil
	}
	// Diffing only the two templates keeps the patch minimal and avoids decoding the rest, and
	// diffing only what differs within them avoids decoding the unchanged bulk of the templates.
	from, to := withoutCommon(newRaw, oldRaw)
	ops, err := jsonpatch.CreatePatch(from, to)
	if err != nil {
		return nil, err
	}
	for i := range ops {
		ops[i].Path = "/spec/template" + ops[i].Path
	}
	// Callers append to the result: cap it so that they never write into the cached array.
	ops = ops[:len(ops):len(ops)]
	m.patches.Add(key, ops)
	return ops, nil
}

// withoutCommon returns the JSON values a and b without what they share, where leaving it out
// changes none of the operations jsonpatch.CreatePatch finds between them: equal values yield
// none. Members with identical text in two objects are dropped from both; elements with identical
// text at the same index of two arrays become null in both (CreatePatch sees two nulls, and the
// other elements keep their indexes). Everything else is kept whole, so that the values of add and
// replace operations are the originals.
func withoutCommon(a, b []byte) ([]byte, []byte) {
	var w commonWriter
	w.values(gjson.ParseBytes(a), gjson.ParseBytes(b))
	return w.a, w.b
}

// commonWriter writes the two sides of withoutCommon.
type commonWriter struct {
	a, b []byte
	// members holds the members of the objects being compared, innermost last: one slice for
	// all levels.
	members []jsonMember
}

func (w *commonWriter) values(a, b gjson.Result) {
	switch {
	case a.IsObject() && b.IsObject():
		base := len(w.members)
		defer func() { w.members = w.members[:base] }()
		am, aok := w.objectMembers(a)
		bm, bok := w.objectMembers(b)
		if !aok || !bok {
			break
		}
		w.a, w.b = append(w.a, '{'), append(w.b, '{')
		// Both sorted by key: one merge pairs the shared keys.
		for len(am) > 0 || len(bm) > 0 {
			switch {
			case len(bm) == 0 || len(am) > 0 && am[0].key < bm[0].key:
				w.a = append(appendKey(w.a, am[0].key), am[0].raw...)
				am = am[1:]
			case len(am) == 0 || bm[0].key < am[0].key:
				w.b = append(appendKey(w.b, bm[0].key), bm[0].raw...)
				bm = bm[1:]
			default:
				if am[0].raw != bm[0].raw {
					w.a, w.b = appendKey(w.a, am[0].key), appendKey(w.b, bm[0].key)
					w.values(gjson.Parse(am[0].raw), gjson.Parse(bm[0].raw))
				}
				am, bm = am[1:], bm[1:]
			}
		}
		w.a, w.b = append(w.a, '}'), append(w.b, '}')
		return
	case a.IsArray() && b.IsArray():
		ae, be := a.Array(), b.Array()
		w.a, w.b = append(w.a, '['), append(w.b, '[')
		for i := range max(len(ae), len(be)) {
			switch {
			case i >= len(be):
				w.a = append(appendComma(w.a), ae[i].Raw...)
			case i >= len(ae):
				w.b = append(appendComma(w.b), be[i].Raw...)
			case ae[i].Raw == be[i].Raw:
				w.a, w.b = append(appendComma(w.a), "null"...), append(appendComma(w.b), "null"...)
			default:
				w.a, w.b = appendComma(w.a), appendComma(w.b)
				w.values(ae[i], be[i])
			}
		}
		w.a, w.b = append(w.a, ']'), append(w.b, ']')
		return
	}
	w.a, w.b = append(w.a, a.Raw...), append(w.b, b.Raw...)
}

// jsonMember is an object member: its key, and its value's text (smaller than a gjson.Result to
// sort, and parsed again only when it is compared).
type jsonMember struct {
	key, raw string
}

// objectMembers appends an object's members to w.members and returns them sorted by key, of a
// repeated key only the last as for the decoder. It returns false when a key is written with
// escapes or non-ASCII bytes: CreatePatch's decoder could read such a key otherwise than gjson
// does, and appendKey could not write it back.
func (w *commonWriter) objectMembers(obj gjson.Result) ([]jsonMember, bool) {
	base := len(w.members)
	ok := true
	obj.ForEach(func(k, v gjson.Result) bool {
		for i := 0; i < len(k.Raw) && ok; i++ {
			ok = k.Raw[i] != '\\' && k.Raw[i] < utf8.RuneSelf
		}
		w.members = append(w.members, jsonMember{key: k.Str, raw: v.Raw})
		return ok
	})
	ms := w.members[base:]
	slices.SortStableFunc(ms, func(a, b jsonMember) int { return strings.Compare(a.key, b.key) })
	last := ms[:0]
	for i, m := range ms {
		if i+1 == len(ms) || ms[i+1].key != m.key {
			last = append(last, m)
		}
	}
	w.members = w.members[:base+len(last)]
	return last, ok
}

// appendKey appends a plain key (see objectMembers) after a comma if the object has a member.
func appendKey(dst []byte, k string) []byte {
	dst = appendComma(dst)
	dst = append(dst, '"')
	dst = append(dst, k...)
	return append(dst, '"', ':')
}

// appendComma separates a member or element from the one before, if any.
func appendComma(dst []byte) []byte {
	if last := dst[len(dst)-1]; last != '{' && last != '[' {
		return append(dst, ',')
	}
	return dst
}

// desiredRevision returns the revision of a desired-template annotation value, which must decode
// as a pod template.
func (m *memo) desiredRevision(tmpl string) (string, error) {
	if h, ok := m.desired.Get(tmpl); ok {
		return h.(string), nil
	}
	decoded, err := revision.Decode(tmpl)
	if err != nil {
		return "", err
	}
	h, err := revision.Hash(decoded)
	if err != nil {
		return "", err
	}
	m.desired.Add(tmpl, h)
	return h, nil
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
