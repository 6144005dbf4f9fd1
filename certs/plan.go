package certs

import (
	"crypto/x509"
	"net"
	"slices"
	"time"
)

// policy is the part of Options that the decision depends on.
type policy struct {
	caValidity, certValidity, renewBefore time.Duration
	// trustDelay is how long the signer CA must have been seen in every webhook's caBundle before a
	// serving certificate signed by it is served: the API server learns of caBundle changes through
	// its own watch, so it trusts the new CA a moment after we see our update land.
	trustDelay time.Duration
	dnsNames   []string
	ips        []net.IP
}

// state is what the Secret holds, parsed. Entries that failed to parse or whose key does not match
// are nil: the decision treats them as missing.
type state struct {
	signer  *keyPair // the CA that signs new serving certificates; always kept in the bundle
	bundle  []*x509.Certificate
	serving *keyPair
	// trustedSince is when the current signer was first seen in every webhook's caBundle; zero
	// while that has not happened since the signer was created.
	trustedSince time.Time
}

// decision is what to change in the Secret. The zero value changes nothing.
type decision struct {
	newSigner    bool // create a new CA, append it to the bundle and make it the signer
	issueServing bool // issue a new serving certificate from the (possibly new) signer
	markTrusted  bool // record now as the time the signer became trusted
	// bundle is the trusted CA set to keep, before a new signer is appended; it differs from the
	// state's bundle when expired CAs are dropped or the signer was missing from it.
	bundle        []*x509.Certificate
	bundleChanged bool
	// requeueAfter is when to look again if nothing else happens first; zero means only on change.
	requeueAfter time.Duration
}

// changes reports whether the decision writes the Secret.
func (d decision) changes() bool {
	return d.newSigner || d.issueServing || d.markTrusted || d.bundleChanged
}

// decide is the whole rotation policy. signerInjected reports whether every webhook in the
// configured webhook configurations currently carries the signer CA in its caBundle.
//
// The ordering guarantees: a new CA enters the bundle (and, through the injector, every caBundle)
// while the serving certificate it replaces keeps being served; only after the CA has been
// observed in every caBundle for trustDelay is a serving certificate signed by it issued. Old CAs
// leave the bundle when they expire, which is never before the serving certificates they signed.
// The exception is a serving certificate that is missing or already unusable: then nothing can get
// worse by issuing at once.
func decide(now time.Time, p policy, s state, signerInjected bool) decision {
	var d decision
	var next time.Time
	wakeAt := func(t time.Time) {
		if t.After(now) && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}

	signer := s.signer
	if signer != nil && (!signer.cert.IsCA || !now.Before(renewAt(signer, p.renewBefore))) {
		signer = nil
	}
	d.newSigner = signer == nil

	// Keep every unexpired CA (a replica may still serve a certificate that one of them signed),
	// drop duplicates, and make sure the current signer is among them.
	for _, ca := range s.bundle {
		if validAt(ca, now) && !slices.ContainsFunc(d.bundle, ca.Equal) {
			d.bundle = append(d.bundle, ca)
			wakeAt(ca.NotAfter)
		}
	}
	if signer != nil && !slices.ContainsFunc(d.bundle, signer.cert.Equal) {
		d.bundle = append(d.bundle, signer.cert)
	}
	d.bundleChanged = !slices.EqualFunc(d.bundle, s.bundle, (*x509.Certificate).Equal)

	signerReady := false
	if signer != nil {
		wakeAt(renewAt(signer, p.renewBefore))
		switch {
		case s.trustedSince.IsZero():
			d.markTrusted = signerInjected
			// The mark itself changes the Secret, which brings us back; then trustDelay applies.
		case now.Before(s.trustedSince.Add(p.trustDelay)):
			wakeAt(s.trustedSince.Add(p.trustDelay))
		default:
			signerReady = true
		}
	}

	serving := s.serving
	usable := serving != nil && servingUsable(now, p, serving, d.bundle)
	fromSigner := usable && signer != nil && serving.cert.CheckSignatureFrom(signer.cert) == nil
	due := !usable || !now.Before(renewAt(serving, p.renewBefore)) || (!fromSigner && signerReady)
	// A due certificate is renewed from the signer once the signer is trusted; renewing from the
	// signer that already signed the served certificate changes nothing for clients, so it needs
	// no wait (this also covers injection that cannot succeed, for example while RBAC is missing).
	d.issueServing = due && (!usable || signerReady || fromSigner)
	if usable && !d.issueServing {
		wakeAt(renewAt(serving, p.renewBefore))
		wakeAt(serving.cert.NotAfter)
	}

	if !next.IsZero() {
		d.requeueAfter = next.Sub(now)
	}
	return d
}

// servingUsable reports whether the certificate is valid now, carries exactly the wanted names
// and is signed by a CA in the bundle.
func servingUsable(now time.Time, p policy, serving *keyPair, bundle []*x509.Certificate) bool {
	c := serving.cert
	if !validAt(c, now) || !sameNames(c.DNSNames, c.IPAddresses, p.dnsNames, p.ips) {
		return false
	}
	return slices.ContainsFunc(bundle, func(ca *x509.Certificate) bool { return c.CheckSignatureFrom(ca) == nil })
}

// renewAt is when a certificate enters its renewal window.
func renewAt(k *keyPair, renewBefore time.Duration) time.Time {
	return k.cert.NotAfter.Add(-renewBefore)
}

// servingNotAfter caps a new serving certificate at its CA's expiry: a certificate that outlived
// its CA would be served after the CA left every caBundle.
func servingNotAfter(now time.Time, p policy, ca *keyPair) time.Time {
	end := now.Add(p.certValidity)
	if ca.cert.NotAfter.Before(end) {
		return ca.cert.NotAfter
	}
	return end
}

func sameNames(dns []string, ips []net.IP, wantDNS []string, wantIPs []net.IP) bool {
	if !sameSet(dns, wantDNS) {
		return false
	}
	return sameSet(ipStrings(ips), ipStrings(wantIPs))
}

func ipStrings(ips []net.IP) []string {
	out := make([]string, len(ips))
	for i, ip := range ips {
		out[i] = ip.String()
	}
	return out
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(slices.Compact(a), slices.Compact(b))
}
