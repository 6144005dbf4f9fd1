package fuzzcorpus

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func TestRead(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("b", "go test fuzz v1\nstring(\"UPDATE\")\nint(3)\n[]byte(\"{\\\"a\\\":\\\"(x)\\\"}\")\n")
	write("a", "go test fuzz v1\n[]byte(\"\\xff\")\n")
	got, err := Read(filepath.Join(dir, "*"))
	if err != nil {
		t.Fatal(err)
	}
	want := [][]string{{"\xff"}, {"UPDATE", `{"a":"(x)"}`}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Read = %q, want %q", got, want)
	}
	write("c", "go test fuzz v1\nstring(\"unterminated)\n")
	if _, err := Read(filepath.Join(dir, "*")); err == nil {
		t.Error("Read accepted a malformed value")
	}
	if _, err := Read(filepath.Join(dir, "none-*")); err == nil {
		t.Error("Read of an empty pattern returned no error")
	}
}
