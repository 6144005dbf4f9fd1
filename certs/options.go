package certs

import (
	"errors"
	"fmt"
	"net"
	"time"
)

// Defaults for Options' durations. Rotation is automatic, so lifetimes stay modest.
const (
	DefaultCAValidity   = 365 * 24 * time.Hour
	DefaultCertValidity = 90 * 24 * time.Hour
	DefaultRenewBefore  = 30 * 24 * time.Hour
	DefaultTrustDelay   = 10 * time.Second
)

// Options configure Setup. Namespace, SecretName and ServiceName are required.
type Options struct {
	// Namespace is canarygate's namespace: it holds the Secret and the webhook Service.
	Namespace string
	// SecretName is the Secret that holds the CA, the CA bundle and the serving certificate. It
	// is created when missing; only its content is authoritative for every replica.
	SecretName string
	// ServiceName is the webhook Service; the serving certificate names <svc>, <svc>.<ns>,
	// <svc>.<ns>.svc and <svc>.<ns>.svc.cluster.local.
	ServiceName string
	// ExtraDNSNames and ExtraIPs (textual IPv4 or IPv6 addresses) are added to the serving
	// certificate, for a webhook reached by URL.
	ExtraDNSNames []string
	ExtraIPs      []string

	// MutatingWebhookConfig and ValidatingWebhookConfig name the configurations whose every
	// webhook gets the CA bundle as caBundle. Empty skips that kind.
	MutatingWebhookConfig   string
	ValidatingWebhookConfig string

	// CAValidity and CertValidity are the lifetimes of a new CA and a new serving certificate
	// (a serving certificate never outlives its CA). Each is renewed RenewBefore ahead of its
	// expiry. Zero selects the Default* values. RenewBefore must exceed TrustDelay and be shorter
	// than CertValidity, which must not exceed CAValidity.
	CAValidity, CertValidity, RenewBefore time.Duration
	// TrustDelay is how long a new CA must have been in every caBundle before a serving
	// certificate signed by it is served, covering the API server's delay in noticing the
	// caBundle change. Zero selects DefaultTrustDelay.
	TrustDelay time.Duration
}

// policy validates the options and turns them into the decision's input.
func (o Options) policy() (policy, error) {
	var errs []error
	for _, f := range []struct{ name, value string }{{"Namespace", o.Namespace}, {"SecretName", o.SecretName}, {"ServiceName", o.ServiceName}} {
		if f.value == "" {
			errs = append(errs, fmt.Errorf("%s is required", f.name))
		}
	}
	p := policy{
		caValidity:   orDefault(o.CAValidity, DefaultCAValidity),
		certValidity: orDefault(o.CertValidity, DefaultCertValidity),
		renewBefore:  orDefault(o.RenewBefore, DefaultRenewBefore),
		trustDelay:   orDefault(o.TrustDelay, DefaultTrustDelay),
	}
	for _, d := range []time.Duration{p.caValidity, p.certValidity, p.renewBefore, p.trustDelay} {
		if d < 0 {
			errs = append(errs, fmt.Errorf("negative duration %s", d))
		}
	}
	if p.certValidity > p.caValidity {
		errs = append(errs, fmt.Errorf("CertValidity %s exceeds CAValidity %s", p.certValidity, p.caValidity))
	}
	if p.renewBefore >= p.certValidity {
		errs = append(errs, fmt.Errorf("RenewBefore %s must be shorter than CertValidity %s", p.renewBefore, p.certValidity))
	}
	if p.trustDelay >= p.renewBefore {
		errs = append(errs, fmt.Errorf("TrustDelay %s must be shorter than RenewBefore %s, or a new CA cannot be trusted before the old certificates expire", p.trustDelay, p.renewBefore))
	}
	for _, s := range o.ExtraIPs {
		ip := net.ParseIP(s)
		if ip == nil {
			errs = append(errs, fmt.Errorf("ExtraIPs: %q is not an IP address", s))
		}
		p.ips = append(p.ips, ip)
	}
	if len(errs) > 0 {
		return policy{}, fmt.Errorf("certs: invalid options: %w", errors.Join(errs...))
	}
	svc, ns := o.ServiceName, o.Namespace
	p.dnsNames = append([]string{svc, svc + "." + ns, svc + "." + ns + ".svc", svc + "." + ns + ".svc.cluster.local"}, o.ExtraDNSNames...)
	return p, nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}
