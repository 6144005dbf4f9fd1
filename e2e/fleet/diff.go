package fleet

import (
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/jsonmergepatch"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
	"k8s.io/client-go/kubernetes/scheme"
)

// drift is what separates a live object from its manifest.
type drift struct {
	// patch would restore the declared fields; "{}" when nothing differs.
	patch []byte
	// patchType is a strategic merge patch for kinds of the Kubernetes scheme, a JSON merge patch
	// for the rest (custom resources), as Helm and Fleet's vendored Argo CD diff choose.
	patchType types.PatchType
	// changes are "path: live → desired" lines for people, sorted.
	changes []string
}

// diff compares the fields desired sets with live, the way Fleet's status check does: the
// manifest is both the last-applied and the desired state of a three-way diff, so fields only the
// live object has (status, defaults, other controllers' metadata) never count.
func diff(desired, live *unstructured.Unstructured) (drift, error) {
	d := normalized(desired)
	l := normalized(live)

	meta, typed, err := patchMetaFor(desired)
	if err != nil {
		return drift{}, err
	}
	dj, err := json.Marshal(d)
	if err != nil {
		return drift{}, fmt.Errorf("encoding %s: %w", refOf(desired), err)
	}
	var out drift
	var patchedLive map[string]any
	if typed {
		lj, err := json.Marshal(l)
		if err != nil {
			return drift{}, fmt.Errorf("encoding live %s: %w", refOf(live), err)
		}
		out.patchType = types.StrategicMergePatchType
		out.patch, err = strategicpatch.CreateThreeWayMergePatch(dj, dj, lj, meta, true)
		if err != nil {
			return drift{}, fmt.Errorf("diffing %s: %w", refOf(desired), err)
		}
		patchedLive = l
	} else {
		// Without a schema, lists are atomic; drop what only the live object has first, so that
		// server-populated fields inside declared structures do not count (Argo CD's
		// RemoveMapFields, which Fleet vendors).
		pruned, _ := pruneTo(d, l).(map[string]any)
		pj, err := json.Marshal(pruned)
		if err != nil {
			return drift{}, fmt.Errorf("encoding live %s: %w", refOf(live), err)
		}
		out.patchType = types.MergePatchType
		out.patch, err = jsonmergepatch.CreateThreeWayJSONMergePatch(dj, dj, pj)
		if err != nil {
			return drift{}, fmt.Errorf("diffing %s: %w", refOf(desired), err)
		}
		patchedLive = pruned
	}
	var p map[string]any
	if err := json.Unmarshal(out.patch, &p); err != nil {
		return drift{}, fmt.Errorf("reading the patch for %s: %w", refOf(desired), err)
	}
	describe("", p, patchedLive, meta, &out.changes)
	sort.Strings(out.changes)
	return out, nil
}

// normalized drops what Fleet never compares: status, and metadata the server owns or fills in.
func normalized(u *unstructured.Unstructured) map[string]any {
	c := u.DeepCopy().Object
	delete(c, "status")
	for _, f := range []string{"creationTimestamp", "resourceVersion", "uid", "generation", "managedFields", "selfLink"} {
		unstructured.RemoveNestedField(c, "metadata", f)
	}
	return c
}

// patchMetaFor returns the strategic-merge metadata for kinds the Kubernetes scheme knows.
func patchMetaFor(u *unstructured.Unstructured) (strategicpatch.LookupPatchMeta, bool, error) {
	obj, err := scheme.Scheme.New(u.GroupVersionKind())
	if runtime.IsNotRegisteredError(err) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("looking up %s: %w", u.GroupVersionKind(), err)
	}
	meta, err := strategicpatch.NewPatchMetaFromStruct(obj)
	if err != nil {
		return nil, false, fmt.Errorf("patch metadata for %s: %w", u.GroupVersionKind(), err)
	}
	return meta, true, nil
}

// pruneTo keeps of live only what desired also has: map keys recursively, list elements by index.
func pruneTo(desired, live any) any {
	switch d := desired.(type) {
	case map[string]any:
		l, ok := live.(map[string]any)
		if !ok {
			return live
		}
		out := make(map[string]any, len(d))
		for k, dv := range d {
			if lv, ok := l[k]; ok {
				out[k] = pruneTo(dv, lv)
			}
		}
		return out
	case []any:
		l, ok := live.([]any)
		if !ok {
			return live
		}
		// Extra live elements stay, so that a list that grew shows up as a difference.
		out := make([]any, len(l))
		for i, lv := range l {
			if i < len(d) {
				out[i] = pruneTo(d[i], lv)
			} else {
				out[i] = lv
			}
		}
		return out
	default:
		return live
	}
}

// describe turns a patch into "path: live → desired" lines, skipping strategic-merge directives
// and values the live object already has.
func describe(path string, patch map[string]any, live any, meta strategicpatch.LookupPatchMeta, out *[]string) {
	liveMap, _ := live.(map[string]any)
	for k, pv := range patch {
		if strings.HasPrefix(k, "$") {
			continue
		}
		p := joinPath(path, k)
		lv, present := liveMap[k]
		switch v := pv.(type) {
		case map[string]any:
			if len(v) == 0 {
				break
			}
			var sub strategicpatch.LookupPatchMeta
			if meta != nil {
				sub, _, _ = meta.LookupPatchMetadataForStruct(k)
			}
			describe(p, v, lv, sub, out)
			continue
		case []any:
			if describeList(p, k, v, lv, meta, out) {
				continue
			}
		}
		if present && reflect.DeepEqual(pv, lv) {
			continue
		}
		*out = append(*out, fmt.Sprintf("%s: %s → %s", p, shortValue(lv, present, "<absent>"), shortValue(pv, pv != nil, "<removed>")))
	}
}

// describeList recurses into a strategic-merge list by its merge key; it returns false when the
// list is replaced as a whole and must be shown as one value.
func describeList(path, key string, patch []any, live any, meta strategicpatch.LookupPatchMeta, out *[]string) bool {
	if meta == nil {
		return false
	}
	sub, pm, err := meta.LookupPatchMetadataForSlice(key)
	mergeKey := pm.GetPatchMergeKey()
	if err != nil || mergeKey == "" {
		return false
	}
	liveList, _ := live.([]any)
	for _, e := range patch {
		elem, ok := e.(map[string]any)
		if !ok {
			return false
		}
		if _, directive := elem["$patch"]; directive {
			continue
		}
		id := elem[mergeKey]
		var liveElem any
		for _, le := range liveList {
			if m, ok := le.(map[string]any); ok && reflect.DeepEqual(m[mergeKey], id) {
				liveElem = m
				break
			}
		}
		p := fmt.Sprintf("%s[%s=%v]", path, mergeKey, id)
		if liveElem == nil {
			*out = append(*out, fmt.Sprintf("%s: <absent> → %s", p, shortValue(elem, true, "")))
			continue
		}
		describe(p, elem, liveElem, sub, out)
	}
	return true
}

func joinPath(path, key string) string {
	if strings.ContainsAny(key, "./ ") {
		return fmt.Sprintf("%s[%q]", path, key)
	}
	if path == "" {
		return key
	}
	return path + "." + key
}

// shortValue renders a value as JSON, cut to keep report lines readable.
func shortValue(v any, present bool, absent string) string {
	if !present {
		return absent
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprintf("%v", v)
	}
	const limit = 72
	if s := string(b); len(s) > limit {
		return s[:limit] + "…"
	}
	return string(b)
}
