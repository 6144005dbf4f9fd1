// Package scale runs canarygate's controller experiments on the test bed: many canaries rolled out
// at once, and many managed Deployments with nothing pending. The real canarygate binary runs
// under its ServiceAccount (e2e/harness); its kubeconfig points at a counting proxy, so every API
// request it sends is counted.
package scale

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"canarygate.io/canarygate/bench/apiproxy"
	"canarygate.io/canarygate/e2e/harness"
	"canarygate.io/canarygate/e2e/testbed"
)

// EnvOptions configure an experiment's environment.
type EnvOptions struct {
	// KubeAPIQPS is kube-controller-manager's and kube-scheduler's client QPS, raised so that the
	// cluster does not hide the controller (the issue's own advice).
	KubeAPIQPS int
	// CanarygateArgs are extra canarygate flags.
	CanarygateArgs []string
	// Pprof serves canarygate's pprof endpoints (Env.PprofAddr), to profile the rollout.
	Pprof bool
	Logf  func(format string, args ...any)
}

// Env is a fresh test bed with canarygate running behind the counting proxy.
type Env struct {
	Bed   *testbed.Env
	H     *harness.Harness
	Proxy *apiproxy.Proxy
	Pid   int
	Admin *rest.Config // QPS raised for bulk setup
	// PprofAddr is canarygate's pprof host:port, empty unless EnvOptions.Pprof.
	PprofAddr string
}

// StartEnv starts the test bed, the proxy and canarygate. Stop it with Stop.
func StartEnv(ctx context.Context, opts EnvOptions) (e *Env, err error) {
	logf := opts.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	bed, err := testbed.Start(ctx, testbed.Options{KubeAPIQPS: opts.KubeAPIQPS, Logf: logf})
	if err != nil {
		return nil, err
	}
	e = &Env{Bed: bed}
	defer func() {
		if err != nil {
			_ = e.Stop()
			e = nil
		}
	}()
	dir := filepath.Join(bed.Dir, "canarygate")
	saKubeconfig := filepath.Join(dir, "kubeconfig") // written by the harness
	e.Proxy, err = apiproxy.Start(bed.APIServerURL, bed.CAFile, func() (string, error) { return tokenOf(saKubeconfig) })
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	proxied := filepath.Join(dir, "kubeconfig-proxied")
	if err := writeProxyKubeconfig(proxied, e.Proxy.URL); err != nil {
		return nil, err
	}
	// A later --kubeconfig wins over the harness' own: canarygate talks to the API server through
	// the proxy, which adds the ServiceAccount token the harness issued.
	args := append([]string{"--kubeconfig=" + proxied}, opts.CanarygateArgs...)
	if opts.Pprof {
		if e.PprofAddr, err = freeAddr(); err != nil {
			return nil, err
		}
		args = append(args, "--pprof-bind-address="+e.PprofAddr)
	}
	e.H, err = harness.Start(ctx, harness.Options{Env: bed, Dir: dir, Args: args, Logf: logf})
	if err != nil {
		return nil, err
	}
	e.Pid = e.H.Canarygate.Pid()
	e.Admin = rest.CopyConfig(bed.Config)
	e.Admin.QPS, e.Admin.Burst = 400, 800
	// canarygate's warning on every diverted update is expected here; it would flood the log.
	e.Admin.WarningHandler = rest.NoWarnings{}
	return e, nil
}

// Stop stops canarygate, the proxy and the test bed.
func (e *Env) Stop() error {
	var errs []error
	if e.H != nil {
		errs = append(errs, e.H.Stop())
	}
	if e.Proxy != nil {
		errs = append(errs, e.Proxy.Close())
	}
	if e.Bed != nil {
		errs = append(errs, e.Bed.Stop())
	}
	return errors.Join(errs...)
}

func tokenOf(kubeconfig string) (string, error) {
	cfg, err := clientcmd.LoadFromFile(kubeconfig)
	if err != nil {
		return "", err
	}
	for _, a := range cfg.AuthInfos {
		if a.Token != "" {
			return a.Token, nil
		}
	}
	return "", fmt.Errorf("no token in %s", kubeconfig)
}

func writeProxyKubeconfig(path, server string) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["proxy"] = &clientcmdapi.Cluster{Server: server}
	cfg.AuthInfos["proxy"] = &clientcmdapi.AuthInfo{}
	cfg.Contexts["proxy"] = &clientcmdapi.Context{Cluster: "proxy", AuthInfo: "proxy"}
	cfg.CurrentContext = "proxy"
	return clientcmd.WriteToFile(*cfg, path)
}

// freeAddr returns a loopback host:port that nothing listens on now.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}
