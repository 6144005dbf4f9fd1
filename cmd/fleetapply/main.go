// Command fleetapply applies a folder of manifests to a cluster the way Rancher Fleet's agent does,
// and reports what Fleet would report about it. See package canarygate.io/canarygate/e2e/fleet.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"

	"canarygate.io/canarygate/e2e/fleet"
)

// Exit codes.
const (
	exitOK    = 0
	exitDrift = 1 // check: something is missing, extra or modified
	exitError = 2 // bad usage, or the cluster could not be read or written
)

const usage = `fleetapply applies a folder of manifests the way Rancher Fleet's agent does.

Usage:
  fleetapply apply         --kubeconfig K --dir D --bundle NAME [--namespace NS] [--set-image DEPLOY/CONTAINER=IMAGE]... [--force-conflicts]
  fleetapply correct-drift --kubeconfig K --dir D --bundle NAME [--namespace NS] [--set-image DEPLOY/CONTAINER=IMAGE]... [--replace]
  fleetapply check         --kubeconfig K --dir D --bundle NAME [--namespace NS] [--set-image DEPLOY/CONTAINER=IMAGE]...

Commands:
  apply          deploy as Fleet does: server-side apply as field manager "fleet", with Fleet's
                 objectset and Helm's ownership labels and annotations
  correct-drift  Fleet's drift correction: a Helm rollback without server-side apply (declared fields
                 that drifted are patched back, missing objects created, custom resources untouched;
                 with --replace every object is replaced by its manifest)
  check          print what Fleet would report: missing, extra (orphaned) and modified objects

Flags:
`

type options struct {
	command    string
	kubeconfig string
	dir        string
	bundle     string
	namespace  string
	images     []imageOverride
	force      bool
	replace    bool
}

type imageOverride struct{ deployment, container, image string }

type imageFlag struct{ list *[]imageOverride }

func (f imageFlag) String() string { return "" }

func (f imageFlag) Set(v string) error {
	target, image, ok := strings.Cut(v, "=")
	deployment, container, ok2 := strings.Cut(target, "/")
	if !ok || !ok2 || deployment == "" || container == "" || image == "" {
		return fmt.Errorf("want DEPLOYMENT/CONTAINER=IMAGE, got %q", v)
	}
	*f.list = append(*f.list, imageOverride{deployment, container, image})
	return nil
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	opts, err := parse(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "fleetapply: %v\nRun 'fleetapply --help' for usage.\n", err)
		return exitError
	}
	code, err := execute(ctx, opts, stdout)
	if err != nil {
		fmt.Fprintf(stderr, "fleetapply: %v\n", err)
	}
	return code
}

func newFlagSet(stderr io.Writer, opts *options) *flag.FlagSet {
	fs := flag.NewFlagSet("fleetapply", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&opts.kubeconfig, "kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig `file` of the cluster (default $KUBECONFIG)")
	fs.StringVar(&opts.dir, "dir", "", "`directory` of manifests: every *.yaml and *.yml in it, multi-document files included; fleet.yaml is read only for defaultNamespace")
	fs.StringVar(&opts.bundle, "bundle", "", "bundle deployment `name`; it names the Helm release and derives the objectset ID (default-NAME) and hash")
	fs.StringVar(&opts.namespace, "namespace", "", "default `namespace` for objects that name none (default: fleet.yaml's defaultNamespace, else \"default\", as in Fleet)")
	fs.Var(imageFlag{&opts.images}, "set-image", "replace a container's image before acting, as a Git commit would: `DEPLOYMENT/CONTAINER=IMAGE` (repeatable)")
	fs.BoolVar(&opts.force, "force-conflicts", false, "apply only: take fields other managers own (Fleet does not, so this is off by default)")
	fs.BoolVar(&opts.replace, "replace", false, "correct-drift only: Fleet's correctDrift.force, replace every object with its manifest (a PUT) instead of patching the drifted fields")
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
		fmt.Fprint(stderr, "\nExit status: 0 done (check: in sync), 1 check found missing, extra or modified objects, 2 error.\n")
	}
	return fs
}

func parse(args []string, stderr io.Writer) (options, error) {
	var opts options
	fs := newFlagSet(stderr, &opts)
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		if err := fs.Parse(args); err != nil {
			return opts, err
		}
		return opts, errors.New("a command is required: apply, correct-drift or check")
	}
	opts.command = args[0]
	switch opts.command {
	case "apply", "correct-drift", "check":
	default:
		return opts, fmt.Errorf("unknown command %q: want apply, correct-drift or check", opts.command)
	}
	if err := fs.Parse(args[1:]); err != nil {
		return opts, err
	}
	if fs.NArg() > 0 {
		return opts, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	var missing []string
	for _, f := range []struct{ name, value string }{{"--kubeconfig", opts.kubeconfig}, {"--dir", opts.dir}, {"--bundle", opts.bundle}} {
		if f.value == "" {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		return opts, fmt.Errorf("missing %s", strings.Join(missing, ", "))
	}
	if opts.force && opts.command != "apply" {
		return opts, errors.New("--force-conflicts only applies to apply")
	}
	if opts.replace && opts.command != "correct-drift" {
		return opts, errors.New("--replace only applies to correct-drift")
	}
	return opts, nil
}

func execute(ctx context.Context, opts options, stdout io.Writer) (int, error) {
	ns := opts.namespace
	if ns == "" {
		var err error
		if ns, err = defaultNamespace(opts.dir); err != nil {
			return exitError, err
		}
	}
	b, err := fleet.LoadDir(opts.dir, opts.bundle, ns)
	if err != nil {
		return exitError, err
	}
	for _, o := range opts.images {
		if b, err = b.WithImage(o.deployment, o.container, o.image); err != nil {
			return exitError, err
		}
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", opts.kubeconfig)
	if err != nil {
		return exitError, fmt.Errorf("loading kubeconfig: %w", err)
	}
	a, err := fleet.NewApplier(cfg)
	if err != nil {
		return exitError, err
	}
	a.ForceConflicts = opts.force
	a.ForceDriftCorrection = opts.replace

	switch opts.command {
	case "apply":
		if err := a.Apply(ctx, b); err != nil {
			return exitError, err
		}
		fmt.Fprintf(stdout, "applied bundle %s (%d objects) to namespace %s as field manager %q\n", b.Name, len(b.Objects), b.Namespace, fleet.FieldManager)
	case "correct-drift":
		if err := a.CorrectDrift(ctx, b); err != nil {
			return exitError, err
		}
		fmt.Fprintf(stdout, "corrected drift of bundle %s in namespace %s\n", b.Name, b.Namespace)
	case "check":
		r, err := a.Check(ctx, b)
		if err != nil {
			return exitError, err
		}
		fmt.Fprintln(stdout, r)
		if !r.Clean() {
			return exitDrift, nil
		}
	}
	return exitOK, nil
}

// defaultNamespace reads defaultNamespace from the bundle's fleet.yaml, falling back to Fleet's
// "default".
func defaultNamespace(dir string) (string, error) {
	for _, name := range []string{"fleet.yaml", "fleet.yml"} {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return "", err
		}
		var cfg struct {
			DefaultNamespace string `json:"defaultNamespace"`
		}
		if err := yaml.Unmarshal(data, &cfg); err != nil {
			return "", fmt.Errorf("%s: %w", name, err)
		}
		if cfg.DefaultNamespace != "" {
			return cfg.DefaultNamespace, nil
		}
		break
	}
	return "default", nil
}
