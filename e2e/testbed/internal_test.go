package testbed

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestScrapeTargetFiles(t *testing.T) {
	dir := t.TempDir()
	e := &Env{prom: &prometheus{targetsDir: dir}}
	steps := []struct {
		add      bool
		job, hp  string
		wantFile string
		want     []string
	}{
		{add: true, job: "sim", hp: "127.0.0.1:9001", wantFile: "sim.json", want: []string{"127.0.0.1:9001"}},
		{add: true, job: "sim", hp: "127.0.0.1:9002", wantFile: "sim.json", want: []string{"127.0.0.1:9001", "127.0.0.1:9002"}},
		{add: true, job: "sim", hp: "127.0.0.1:9001", wantFile: "sim.json", want: []string{"127.0.0.1:9001", "127.0.0.1:9002"}},
		{add: false, job: "sim", hp: "127.0.0.1:9001", wantFile: "sim.json", want: []string{"127.0.0.1:9002"}},
		{add: true, job: "ns/app web", hp: "[::1]:80", wantFile: "ns_app_web.json", want: []string{"[::1]:80"}},
		{add: false, job: "sim", hp: "127.0.0.1:9002", wantFile: "sim.json", want: nil},
	}
	for _, s := range steps {
		var err error
		if s.add {
			err = e.AddScrapeTarget(s.job, s.hp)
		} else {
			err = e.RemoveScrapeTarget(s.job, s.hp)
		}
		if err != nil {
			t.Fatalf("add=%v %s %s: %v", s.add, s.job, s.hp, err)
		}
		data, err := os.ReadFile(filepath.Join(dir, s.wantFile))
		if err != nil {
			t.Fatal(err)
		}
		var groups []targetGroup
		if err := json.Unmarshal(data, &groups); err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, g := range groups {
			if g.Labels["job"] != s.job {
				t.Errorf("group labelled job=%q in %s, want %q", g.Labels["job"], s.wantFile, s.job)
			}
			got = append(got, g.Targets...)
		}
		if !slices.Equal(got, s.want) {
			t.Errorf("after add=%v %s %s: targets %v, want %v", s.add, s.job, s.hp, got, s.want)
		}
	}

	for _, bad := range []struct{ job, hp string }{{"", "127.0.0.1:1"}, {"sim", "no-port"}} {
		if err := e.AddScrapeTarget(bad.job, bad.hp); err == nil {
			t.Errorf("AddScrapeTarget(%q, %q) succeeded, want an error", bad.job, bad.hp)
		}
	}
	if err := (&Env{}).AddScrapeTarget("sim", "127.0.0.1:1"); err == nil {
		t.Error("AddScrapeTarget without Prometheus succeeded, want an error")
	}
}

func TestReadCRDs(t *testing.T) {
	crd := func(name string) string {
		return "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: " + name + "\n"
	}
	cases := []struct {
		name    string
		yaml    string
		want    []string
		wantErr string
	}{
		{name: "one", yaml: crd("a.example.com"), want: []string{"a.example.com"}},
		{name: "several with empty documents", yaml: "---\n" + crd("a.example.com") + "---\n---\n" + crd("b.example.com"), want: []string{"a.example.com", "b.example.com"}},
		{name: "not a CRD", yaml: crd("a.example.com") + "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n", wantErr: "unexpected ConfigMap"},
		{name: "broken", yaml: "kind: [", wantErr: "decode"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "crds.yaml")
			if err := os.WriteFile(path, []byte(c.yaml), 0o644); err != nil {
				t.Fatal(err)
			}
			crds, err := readCRDs(path)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, crd := range crds {
				names = append(names, crd.Name)
			}
			if !slices.Equal(names, c.want) {
				t.Errorf("CRDs %v, want %v", names, c.want)
			}
		})
	}
}

func TestDeclaresModule(t *testing.T) {
	cases := []struct {
		gomod string
		want  bool
	}{
		{"module canarygate.io/canarygate\n\ngo 1.26\n", true},
		{"// comment\nmodule canarygate.io/canarygate\n", true},
		{"module canarygate.io/testbed-tools\n", false},
		{"module canarygate.io/canarygate/v2\n", false},
		{"", false},
	}
	for _, c := range cases {
		if got := declaresModule([]byte(c.gomod), modulePath); got != c.want {
			t.Errorf("declaresModule(%q) = %v, want %v", c.gomod, got, c.want)
		}
	}
}

func TestRemoveDataKeepsForeignFiles(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"etcd/member/x", "logs/etcd.log", "kubeconfig", "notes.txt"} {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := RemoveData(dir); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != "notes.txt" {
		t.Errorf("left %v, want only notes.txt", entries)
	}
	if err := os.Remove(filepath.Join(dir, "notes.txt")); err != nil {
		t.Fatal(err)
	}
	if err := RemoveData(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("empty dir not removed: %v", err)
	}
}
