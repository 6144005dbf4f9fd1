package webhook

import (
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/tidwall/gjson"
	"gomodules.xyz/jsonpatch/v2"

	"canarygate.io/canarygate/internal/fuzzcorpus"
)

// checkTemplatePatch fails unless templatePatch, which diffs only what differs, finds exactly the
// operations jsonpatch.CreatePatch finds on the whole templates (in any order: CreatePatch walks
// maps).
func checkTemplatePatch(t *testing.T, oldRaw, newRaw []byte) {
	t.Helper()
	want, wantErr := jsonpatch.CreatePatch(newRaw, oldRaw)
	got, err := newMemo().templatePatch(oldRaw, newRaw)
	if (err != nil) != (wantErr != nil) {
		t.Fatalf("templatePatch(%s, %s): error %v, CreatePatch error %v", oldRaw, newRaw, err, wantErr)
	}
	for i := range want {
		want[i].Path = "/spec/template" + want[i].Path
	}
	byPath := func(a, b jsonpatch.Operation) int { return strings.Compare(a.Path, b.Path) }
	slices.SortFunc(got, byPath)
	slices.SortFunc(want, byPath)
	if len(got) != len(want) || (len(got) > 0 && !reflect.DeepEqual(got, want)) {
		t.Fatalf("templatePatch(%s, %s)\n got %+v\nwant %+v", oldRaw, newRaw, got, want)
	}
}

// templatePairs are old and new templates: realistic changes of the Fleet-applied Deployment's,
// and the cases where leaving out what two templates share could change the diff.
func templatePairs(t testing.TB) [][2]string {
	stable := fleetDeployment(t)
	tmpl := func(raw []byte) string { return gjson.GetBytes(raw, "spec.template").Raw }
	base := tmpl(encode(t, stable))
	edited := func(edit func(map[string]any)) string {
		var m map[string]any
		if err := json.Unmarshal([]byte(base), &m); err != nil {
			t.Fatal(err)
		}
		edit(m)
		// encoding/json writes the keys sorted: another order than the API server's.
		raw, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return string(raw)
	}
	podSpec := func(m map[string]any) map[string]any { return m["spec"].(map[string]any) }
	container := func(m map[string]any) map[string]any { return podSpec(m)["containers"].([]any)[0].(map[string]any) }
	pairs := [][2]string{
		{base, base},
		{base, tmpl(encode(t, withImage(stable, newImage)))},
		{base, edited(func(map[string]any) {})},
		{base, edited(func(m map[string]any) { container(m)["env"] = []any{map[string]any{"name": "A", "value": "1"}} })},
		{base, edited(func(m map[string]any) { delete(container(m), "resources") })},
		{base, edited(func(m map[string]any) {
			podSpec(m)["containers"] = append(podSpec(m)["containers"].([]any), map[string]any{"name": "sidecar", "image": "envoy"})
		})},
		{base, edited(func(m map[string]any) { podSpec(m)["containers"] = []any{} })},
		{base, edited(func(m map[string]any) { podSpec(m)["containers"] = "not an array" })},
		{base, edited(func(m map[string]any) { m["metadata"].(map[string]any)["labels"] = map[string]any{"app": "other"} })},
		{base, edited(func(m map[string]any) { delete(m, "metadata") })},
		{base, edited(func(m map[string]any) { m["metadata"] = nil })},
		{`{"a":[1,{"b":2},3,[4]],"c":{"d":{"e":1,"f":2}}}`, `{"c":{"d":{"f":2,"e":2}},"a":[1,{"b":3},3,[5],6]}`},
		{`{"a":[1,2,3]}`, `{"a":[1]}`},
		{`{"a":[null,1]}`, `{"a":[null,2]}`},
		{`{"a":{"b":1}}`, `{"a":[1]}`},
		{`{"a":{}}`, `{"a":{"b":null}}`},
		{`{"a":1.0}`, `{"a":1}`},
		{`{"a":"x"}`, `{"a":"\u0078"}`},
		{` { "a" : 1 , "b" : [ 1 , 2 ] } `, `{"a":1,"b":[1,3]}`},
		// Keys CreatePatch's decoder reads otherwise than their text: escapes, repetitions.
		{`{"a\u0062":{"c":1},"x":1}`, `{"ab":{"c":2},"x":1}`},
		{`{"a\"b":{"c":1}}`, `{"a\"b":{"c":2}}`},
		{`{"a":{"c":1},"a":{"c":2}}`, `{"a":{"c":2}}`},
		{`{"a":{"c":1}}`, `{"a":{"c":3},"a":{"c":1}}`},
		{`{"é":{"c":1}}`, `{"é":{"c":2}}`},
		{"{\"\xff\":1,\"\xfe\":2}", "{\"\xfe\":1}"},
		{`{"a/b~c":{"d":1}}`, `{"a/b~c":{"d":2}}`},
	}
	return append(pairs, corpusPairs(t)...)
}

// corpusPairs are the old and new templates of FuzzMutate's corpus.
func corpusPairs(t testing.TB) [][2]string {
	files, err := fuzzcorpus.Read("testdata/fuzz/FuzzMutate/*")
	if err != nil {
		t.Fatal(err)
	}
	var pairs [][2]string
	for _, args := range files {
		if len(args) != 5 {
			t.Fatalf("%d arguments in a FuzzMutate corpus file, want 5", len(args))
		}
		old, obj := gjson.Get(args[3], "spec.template"), gjson.Get(args[4], "spec.template")
		if old.Exists() && obj.Exists() {
			pairs = append(pairs, [2]string{old.Raw, obj.Raw})
		}
	}
	return pairs
}

func TestTemplatePatchMatchesCreatePatch(t *testing.T) {
	for _, p := range templatePairs(t) {
		checkTemplatePatch(t, []byte(p[0]), []byte(p[1]))
		checkTemplatePatch(t, []byte(p[1]), []byte(p[0]))
	}
}

func FuzzTemplatePatch(f *testing.F) {
	for _, p := range templatePairs(f) {
		f.Add([]byte(p[0]), []byte(p[1]))
	}
	f.Fuzz(func(t *testing.T, oldRaw, newRaw []byte) {
		// The handlers diff only templates that decoded as pod templates: valid JSON.
		if !json.Valid(oldRaw) || !json.Valid(newRaw) {
			t.Skip()
		}
		checkTemplatePatch(t, oldRaw, newRaw)
	})
}
