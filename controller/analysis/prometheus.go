package analysis

import (
	"context"
	"fmt"
	"math"
	"net/url"
	"time"

	"github.com/go-logr/logr"
	promapi "github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	promconfig "github.com/prometheus/common/config"
	"github.com/prometheus/common/model"
)

// promProvider queries a Prometheus server's HTTP API.
type promProvider struct {
	api     promv1.API
	address string
}

// NewPrometheus returns a MetricProvider for the Prometheus server at address (http or https),
// authenticating and verifying TLS as cfg says (bearer token, basic auth, TLS client certificates
// and CAs, proxies: everything prometheus/common's HTTP client configuration supports).
func NewPrometheus(address string, cfg promconfig.HTTPClientConfig) (MetricProvider, error) {
	u, err := url.Parse(address)
	if err != nil {
		return nil, fmt.Errorf("prometheus address %q: %w", address, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("prometheus address %q: want http(s)://host[:port][/path]", address)
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("prometheus %s: http client config: %w", address, err)
	}
	rt, err := promconfig.NewRoundTripperFromConfig(cfg, "canarygate")
	if err != nil {
		return nil, fmt.Errorf("prometheus %s: http client: %w", address, err)
	}
	client, err := promapi.NewClient(promapi.Config{Address: address, RoundTripper: rt})
	if err != nil {
		return nil, fmt.Errorf("prometheus %s: %w", address, err)
	}
	return &promProvider{api: promv1.NewAPI(client), address: address}, nil
}

// Query runs an instant query now. The result must be one sample: a one-element vector or a
// scalar. An empty vector or NaN is no data (ok false). Several series are an error, because
// judging one of them at random would be wrong: the query must aggregate. Warnings from
// Prometheus are logged to the logger in ctx, not treated as failures.
func (p *promProvider) Query(ctx context.Context, query string) (float64, bool, error) {
	var opts []promv1.Option
	// Tell Prometheus how long we will wait, so it stops evaluating when we stop listening. Whole
	// seconds only: the client formats the timeout with time.Duration.String, and Prometheus
	// rejects fractions such as "4.9s".
	if deadline, ok := ctx.Deadline(); ok {
		if remaining := time.Until(deadline).Truncate(time.Second); remaining > 0 {
			opts = append(opts, promv1.WithTimeout(remaining))
		}
	}
	value, warnings, _, err := p.api.Query(ctx, query, time.Now(), opts...)
	if err != nil {
		return 0, false, fmt.Errorf("prometheus query failed: %w", err)
	}
	if len(warnings) > 0 {
		logr.FromContextOrDiscard(ctx).Info("Prometheus returned warnings", "address", p.address, "query", query, "warnings", []string(warnings))
	}

	var v float64
	switch r := value.(type) {
	case model.Vector:
		switch len(r) {
		case 0:
			return 0, false, nil
		case 1:
			v = float64(r[0].Value)
		default:
			return 0, false, fmt.Errorf("query returned %d series, want one: aggregate them (for example with sum)", len(r))
		}
	case *model.Scalar:
		v = float64(r.Value)
	default:
		return 0, false, fmt.Errorf("query returned a %s, want an instant vector of one series or a scalar", value.Type())
	}
	if math.IsNaN(v) {
		return 0, false, nil
	}
	return v, true, nil
}
