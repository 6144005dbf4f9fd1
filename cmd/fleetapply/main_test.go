package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{nil, "a command is required"},
		{[]string{"deploy", "--dir", "d"}, `unknown command "deploy"`},
		{[]string{"apply", "--kubeconfig", "k"}, "missing --dir, --bundle"},
		{[]string{"check", "--kubeconfig", "k", "--dir", "d", "--bundle", "b", "--set-image", "web=img"}, "want DEPLOYMENT/CONTAINER=IMAGE"},
		{[]string{"check", "--kubeconfig", "k", "--dir", "d", "--bundle", "b", "--force-conflicts"}, "only applies to apply"},
		{[]string{"apply", "--kubeconfig", "k", "--dir", "d", "--bundle", "b", "extra"}, "unexpected arguments: extra"},
		{[]string{"apply", "--kubeconfig", "k", "--dir", "d", "--bundle", "b", "--replace"}, "only applies to correct-drift"},
	}
	for _, tt := range tests {
		var stderr bytes.Buffer
		t.Setenv("KUBECONFIG", "")
		code := run(context.Background(), tt.args, &bytes.Buffer{}, &stderr)
		if code != exitError || !strings.Contains(stderr.String(), tt.want) {
			t.Errorf("run(%q) = %d, stderr %q; want %d and %q", tt.args, code, stderr.String(), exitError, tt.want)
		}
	}
}

func TestHelpDocumentsEveryFlag(t *testing.T) {
	var stderr bytes.Buffer
	if code := run(context.Background(), []string{"apply", "--help"}, &bytes.Buffer{}, &stderr); code != exitOK {
		t.Fatalf("--help exit code %d", code)
	}
	var opts options
	fs := newFlagSet(&bytes.Buffer{}, &opts)
	for _, name := range []string{"kubeconfig", "dir", "bundle", "namespace", "set-image", "force-conflicts", "replace"} {
		f := fs.Lookup(name)
		if f == nil || f.Usage == "" || !strings.Contains(stderr.String(), "-"+name) {
			t.Errorf("flag --%s is not documented", name)
		}
	}
	for _, cmd := range []string{"apply", "correct-drift", "check", "Exit status"} {
		if !strings.Contains(stderr.String(), cmd) {
			t.Errorf("help does not mention %q", cmd)
		}
	}
}

func TestSetImageRepeats(t *testing.T) {
	opts, err := parse([]string{"apply", "--kubeconfig", "k", "--dir", "d", "--bundle", "b",
		"--set-image", "web/app=img:2", "--set-image", "api/main=reg.io/api:3"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	want := []imageOverride{{"web", "app", "img:2"}, {"api", "main", "reg.io/api:3"}}
	if len(opts.images) != 2 || opts.images[0] != want[0] || opts.images[1] != want[1] {
		t.Fatalf("images = %+v", opts.images)
	}
}

func TestDefaultNamespace(t *testing.T) {
	if ns, err := defaultNamespace("../../e2e/testdata/demo-app"); err != nil || ns != "canary-demo" {
		t.Fatalf("demo app: %q, %v", ns, err)
	}
	empty := t.TempDir()
	if ns, err := defaultNamespace(empty); err != nil || ns != "default" {
		t.Fatalf("no fleet.yaml: %q, %v", ns, err)
	}
	broken := t.TempDir()
	if err := os.WriteFile(filepath.Join(broken, "fleet.yaml"), []byte("defaultNamespace: [\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := defaultNamespace(broken); err == nil {
		t.Fatal("a broken fleet.yaml was accepted")
	}
}
