package revision

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"canarygate.io/canarygate/internal/fuzzcorpus"
)

// referenceCanonicalJSON is the definition of the canonical form, the implementation every
// revision hash ever stored was computed with. CanonicalJSON must produce exactly its bytes, and
// fail exactly when it fails, for every input: never change it.
func referenceCanonicalJSON(raw []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var doc any
	if err := dec.Decode(&doc); err != nil {
		return nil, err
	}
	doc, _ = referencePrune(doc)
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(doc); err != nil {
		return nil, err
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), nil
}

func referencePrune(v any) (any, bool) {
	switch t := v.(type) {
	case nil:
		return nil, true
	case string:
		return t, t == ""
	case map[string]any:
		for k, child := range t {
			pruned, empty := referencePrune(child)
			if empty {
				delete(t, k)
				continue
			}
			t[k] = pruned
		}
		return t, len(t) == 0
	case []any:
		for i, child := range t {
			t[i], _ = referencePrune(child)
		}
		return t, len(t) == 0
	default:
		return t, false
	}
}

// checkCanonical fails unless CanonicalJSON and the reference agree on raw, and, when raw is a
// pod template, Canonical and the reference agree on its typed form.
func checkCanonical(t *testing.T, raw []byte) {
	t.Helper()
	want, wantErr := referenceCanonicalJSON(raw)
	got, err := CanonicalJSON(raw)
	switch {
	case (err != nil) != (wantErr != nil):
		t.Fatalf("CanonicalJSON(%q): error %v, reference error %v", clip(raw), err, wantErr)
	case !bytes.Equal(got, want):
		t.Fatalf("CanonicalJSON(%q)\n got %q\nwant %q", clip(raw), clip(got), clip(want))
	}
	var tmpl corev1.PodTemplateSpec
	if json.Unmarshal(raw, &tmpl) != nil {
		return
	}
	marshalled, err := json.Marshal(&tmpl)
	if err != nil {
		t.Fatal(err)
	}
	want, err = referenceCanonicalJSON(marshalled)
	if err != nil {
		t.Fatal(err)
	}
	if got := mustCanonical(t, &tmpl); got != string(want) {
		t.Fatalf("Canonical of %q\n got %q\nwant %q", clip(raw), clip([]byte(got)), clip(want))
	}
}

// clip shortens a document for a failure message.
func clip(b []byte) []byte {
	if len(b) > 300 {
		return append(b[:300:300], "..."...)
	}
	return b
}

// canonicalCases are inputs where a hand-written encoder could easily part from encoding/json.
func canonicalCases() []string {
	cases := []string{
		// Empties, nested and in arrays.
		`{"a":null,"b":{},"c":[],"d":{"e":{"f":null}},"g":""}`,
		`{"a":[{},{"b":""},{"c":1},null,"",[],[[]],[{}]]}`,
		`[]`, `{}`, `null`, `""`, `[null]`, `{"a":[]}`, `{"a":[null]}`, `{"a":{"b":[]}}`,
		// Numbers stay as written.
		`{"n":12345678901234567890,"f":1.50,"e":1E+2,"m":-0,"x":-0.0e-0,"z":0,"big":1e400}`,
		`123`, `-1.5e10`, `0`, `01`, `1.5.3`, `1x`, `-`, `1.`, `1e`, `1e+`, `.5`, `+1`, `[01]`, `[1.]`,
		// Booleans and literals.
		`{"t":true,"f":false}`, `true`, `falsey`, `nul`, `nulL`, `[tru]`, `[true false]`,
		// Strings: HTML characters, escapes, Unicode.
		`{"html":"<a&b>","esc":"\u003ca\u0026b\u003e","u":"é","e":"\u00e9"}`,
		`{"ls":"\u2028\u2029","raw":"` + "\u2028\u2029" + `"}`,
		`{"c":"\u0000\u0001\u001f\b\f\n\r\t\u0008\u000C\u007f","q":"\"\\\/"}`,
		`{"s":"\ud83d\ude00","lone":"\ud83d","low":"\ude00x","rev":"\ude00\ud83d","two":"\ud83d\ud83d\ude00"}`,
		`{"bad":"` + "\xff\xfe a \xed\xa0\x80 \xc3" + `","fffd":"\ufffd"}`,
		`{"hex":"\uABCD\uabcd\u00Ff"}`,
		`"\q"`, `"\u12G4"`, `"\u12"`, "\"a\x01b\"", `"abc`, `"\`,
		// Keys: sorting by decoded bytes, escapes, repeated keys (the last counts, even empty).
		`{"b":1,"a":2,"aa":3,"A":4,"é":5,"z":6,"":7}`,
		`{"\u0062":1,"a":2,"\u00e9":3,"\u2028":4}`,
		`{"a":1,"a":2}`, `{"a":1,"a":null}`, `{"a":null,"a":1}`, `{"a":1,"\u0061":2}`,
		`{"a":{"x":1},"b":2,"a":{"y":""}}`,
		`{"` + "\xff" + `":1,"\ufffd":2}`,
		`{"k\"":1,"k\\":2,"k\n":3}`,
		// White space, trailing text, syntax errors.
		" \t\r\n{ \"b\" : [ 1 , { } ] , \"a\" : \"x\" } \n",
		`{"a":1} trailing`, `[1]]`, `"x"y`,
		``, ` `, `{`, `[`, `{"a":`, `{"a"}`, `{"a":1,}`, `[1,]`, `{,}`, `[,]`, `{a:1}`, `{"a" 1}`, `{"a":1 "b":2}`,
		`}`, `]`, `x`, "\xef\xbb\xbf{}",
	}
	// Repeated keys in an object too large for sorting by insertion.
	var many strings.Builder
	many.WriteString("{")
	for i := range 40 {
		fmt.Fprintf(&many, `"k%d":%d,"k%d":%q,`, i%7, i, i%5, strings.Repeat("x", i%3))
	}
	many.WriteString(`"z":1}`)
	cases = append(cases, many.String())
	// encoding/json's nesting limit, just within and just beyond.
	for _, depth := range []int{maxDepth, maxDepth + 1} {
		cases = append(cases, strings.Repeat("[", depth)+strings.Repeat("]", depth))
		cases = append(cases, strings.Repeat(`{"a":`, depth-1)+"{}"+strings.Repeat("}", depth-1))
		cases = append(cases, strings.Repeat(`{"a":`, depth)+"1"+strings.Repeat("}", depth))
	}
	return cases
}

// corpus returns the JSON documents of the webhook's fuzz corpus and test data (realistic
// Deployments and broken variants), each with its spec.template.
func corpus(t testing.TB) [][]byte {
	t.Helper()
	var docs [][]byte
	add := func(doc []byte) {
		docs = append(docs, doc)
		var obj struct {
			Spec struct {
				Template json.RawMessage `json:"template"`
			} `json:"spec"`
		}
		if json.Unmarshal(doc, &obj) == nil && obj.Spec.Template != nil {
			docs = append(docs, obj.Spec.Template)
		}
	}
	deployment, err := os.ReadFile("../webhook/testdata/fleet-deployment.json")
	if err != nil {
		t.Fatal(err)
	}
	add(deployment)
	files, err := fuzzcorpus.Read("../webhook/testdata/fuzz/*/*")
	if err != nil {
		t.Fatal(err)
	}
	for _, args := range files {
		for _, v := range args {
			add([]byte(v))
		}
	}
	return docs
}

func TestCanonicalJSONMatchesReference(t *testing.T) {
	for _, c := range canonicalCases() {
		checkCanonical(t, []byte(c))
	}
	docs := corpus(t)
	if len(docs) < 50 {
		t.Fatalf("only %d documents in the corpus", len(docs))
	}
	for _, doc := range docs {
		checkCanonical(t, doc)
	}
	// Typed templates with values json.Marshal escapes.
	tmpl := template("registry.example.com/frontend:1.0.0")
	tmpl.Annotations = map[string]string{"html": "<a href='x?a=1&b=2'>", "ls": "\u2028", "ctl": "\x00\x1f", "bad": "\xff"}
	tmpl.Spec.Containers[0].Command = []string{"sh", "-c", "a && b > /dev/null", ""}
	raw, err := json.Marshal(tmpl)
	if err != nil {
		t.Fatal(err)
	}
	checkCanonical(t, raw)
}

func FuzzCanonical(f *testing.F) {
	for _, c := range canonicalCases() {
		f.Add([]byte(c))
	}
	for _, doc := range corpus(f) {
		f.Add(doc)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		checkCanonical(t, raw)
	})
}

// The realistic Fleet-applied pod template of the webhook's test data, as json.Marshal encodes it.
func BenchmarkCanonicalJSON(b *testing.B) {
	raw, err := os.ReadFile("../webhook/testdata/fleet-deployment.json")
	if err != nil {
		b.Fatal(err)
	}
	var obj struct {
		Spec struct {
			Template corev1.PodTemplateSpec `json:"template"`
		} `json:"spec"`
	}
	if err := json.Unmarshal(raw, &obj); err != nil {
		b.Fatal(err)
	}
	encoded, err := json.Marshal(&obj.Spec.Template)
	if err != nil {
		b.Fatal(err)
	}
	for name, canonical := range map[string]func([]byte) ([]byte, error){"one pass": CanonicalJSON, "reference": referenceCanonicalJSON} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(encoded)))
			for b.Loop() {
				if _, err := canonical(encoded); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
