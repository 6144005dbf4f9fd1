package clustertest

import (
	"bytes"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"

	"canarygate.io/canarygate/e2e/testbed"
)

// TestFleetapplyCommand drives the built command as the demo does, through its exit codes.
func TestFleetapplyCommand(t *testing.T) {
	ctx, h := setup(t)
	repo, err := testbed.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "fleetapply")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/fleetapply")
	build.Dir = repo
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building fleetapply: %v\n%s", err, out)
	}

	const ns = "fleet-cli"
	dir := appDir(t, ns) // its fleet.yaml names the namespace; --namespace is not given
	run := func(args ...string) (int, string) {
		t.Helper()
		cmd := exec.CommandContext(ctx, bin, append(args, "--kubeconfig", testbed.Shared().Kubeconfig, "--dir", dir, "--bundle", "cli")...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return exit.ExitCode(), out.String()
		}
		if err != nil {
			t.Fatalf("fleetapply %v: %v", args, err)
		}
		return 0, out.String()
	}
	expect := func(wantCode int, wantOut string, args ...string) {
		t.Helper()
		code, out := run(args...)
		if code != wantCode || !strings.Contains(out, wantOut) {
			t.Fatalf("fleetapply %v: exit %d, output:\n%s\nwant exit %d and %q", args, code, out, wantCode, wantOut)
		}
	}

	expect(0, `applied bundle cli (4 objects) to namespace fleet-cli as field manager "fleet"`, "apply")
	expect(0, "in sync", "check")

	h.handEdit(ctx, t, ns, func(d *appsv1.Deployment) { d.Spec.Template.Spec.Containers[0].Image = "hacked:1" })
	expect(1, `spec.template.spec.containers[name=web].image: "hacked:1" → "ghcr.io/stefanprodan/podinfo:6.0.0"`, "check")
	expect(0, "corrected drift of bundle cli in namespace fleet-cli", "correct-drift")
	expect(0, "in sync", "check")

	// A new commit: the cluster follows it, and the old commit now looks modified.
	const next = "web/web=ghcr.io/stefanprodan/podinfo:6.0.1"
	expect(0, "applied bundle cli", "apply", "--set-image", next)
	expect(1, "modified Deployment fleet-cli/web", "check")
	expect(0, "in sync", "check", "--set-image", next)
	expect(2, `has no container "nope"`, "check", "--set-image", "web/nope=x:1")
}
