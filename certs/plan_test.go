package certs

import (
	"crypto/x509"
	"net"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

var (
	t0    = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	pTest = policy{
		caValidity:   100 * time.Minute,
		certValidity: 40 * time.Minute,
		renewBefore:  10 * time.Minute,
		trustDelay:   time.Minute,
		dnsNames:     []string{"svc", "svc.ns", "svc.ns.svc", "svc.ns.svc.cluster.local"},
		ips:          []net.IP{net.IPv4(127, 0, 0, 1)},
	}
)

func mustCA(t *testing.T, from time.Time, validity time.Duration) *keyPair {
	t.Helper()
	ca, err := newCA(from, from.Add(validity))
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func mustServing(t *testing.T, ca *keyPair, from time.Time, validity time.Duration, dns []string) *keyPair {
	t.Helper()
	k, err := newServing(ca, from, from.Add(validity), dns, pTest.ips)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestDecide(t *testing.T) {
	ca1 := mustCA(t, t0, pTest.caValidity)
	ca2 := mustCA(t, t0.Add(90*time.Minute), pTest.caValidity)
	expiredCA := mustCA(t, t0.Add(-200*time.Minute), pTest.caValidity)
	other := mustCA(t, t0, pTest.caValidity)
	s1 := mustServing(t, ca1, t0, pTest.certValidity, pTest.dnsNames)
	s1late := mustServing(t, ca1, t0.Add(80*time.Minute), 20*time.Minute, pTest.dnsNames) // capped at ca1's expiry
	wrongNames := mustServing(t, ca1, t0, pTest.certValidity, []string{"elsewhere"})
	byOther := mustServing(t, other, t0, pTest.certValidity, pTest.dnsNames)
	certs := func(ks ...*keyPair) []*x509.Certificate {
		var out []*x509.Certificate
		for _, k := range ks {
			out = append(out, k.cert)
		}
		return out
	}

	tests := []struct {
		name     string
		now      time.Time
		s        state
		injected bool

		newSigner, issue, mark, bundleChanged bool
		bundle                                []*x509.Certificate // expected kept bundle, when set
		requeueAfter                          time.Duration       // checked when non-zero
	}{
		{name: "empty Secret bootstraps CA and certificate", now: t0,
			newSigner: true, issue: true, bundleChanged: false},
		{name: "healthy and trusted: nothing until the serving certificate's renewal window", now: t0.Add(5 * time.Minute),
			s:            state{signer: ca1, bundle: certs(ca1), serving: s1, trustedSince: t0},
			requeueAfter: 25 * time.Minute},
		{name: "signer seen in every caBundle gets marked trusted", now: t0.Add(time.Minute),
			s: state{signer: ca1, bundle: certs(ca1), serving: s1}, injected: true, mark: true},
		{name: "signer not yet injected: wait", now: t0.Add(time.Minute),
			s: state{signer: ca1, bundle: certs(ca1), serving: s1}},
		{name: "serving certificate in its renewal window is renewed", now: t0.Add(31 * time.Minute),
			s: state{signer: ca1, bundle: certs(ca1), serving: s1, trustedSince: t0}, issue: true},
		{name: "renewal from the signer that signed the served certificate needs no trust wait", now: t0.Add(31 * time.Minute),
			s: state{signer: ca1, bundle: certs(ca1), serving: s1}, issue: true},
		{name: "CA in its renewal window: new CA joins the bundle, served certificate stays", now: t0.Add(91 * time.Minute),
			s:         state{signer: ca1, bundle: certs(ca1), serving: s1late, trustedSince: t0},
			newSigner: true, bundle: certs(ca1)},
		{name: "due certificate waits while the new CA is not trusted", now: t0.Add(92 * time.Minute),
			s: state{signer: ca2, bundle: certs(ca1, ca2), serving: s1late}, injected: false},
		{name: "new CA trusted for less than the delay: wait until the delay is over", now: t0.Add(92 * time.Minute),
			s:            state{signer: ca2, bundle: certs(ca1, ca2), serving: s1late, trustedSince: t0.Add(91*time.Minute + 30*time.Second)},
			requeueAfter: 30 * time.Second},
		{name: "new CA trusted long enough: switch the served certificate to it", now: t0.Add(93 * time.Minute),
			s:     state{signer: ca2, bundle: certs(ca1, ca2), serving: s1late, trustedSince: t0.Add(91 * time.Minute)},
			issue: true},
		{name: "expired CA leaves the bundle", now: t0.Add(5 * time.Minute),
			s:             state{signer: ca1, bundle: certs(expiredCA, ca1), serving: s1, trustedSince: t0},
			bundleChanged: true, bundle: certs(ca1)},
		{name: "duplicate CA is dropped and a missing signer is added", now: t0.Add(5 * time.Minute),
			s:             state{signer: ca1, bundle: certs(other, other), serving: byOther, trustedSince: t0},
			bundleChanged: true, bundle: certs(other, ca1), issue: true},
		{name: "wrong names: reissue at once even before trust", now: t0.Add(time.Minute),
			s: state{signer: ca1, bundle: certs(ca1), serving: wrongNames}, issue: true},
		{name: "certificate from a CA outside the bundle: reissue at once", now: t0.Add(time.Minute),
			s: state{signer: ca1, bundle: certs(ca1), serving: byOther}, issue: true},
		{name: "expired certificate: reissue at once", now: t0.Add(45 * time.Minute),
			s: state{signer: ca1, bundle: certs(ca1), serving: s1}, issue: true},
		{name: "lost signer key: new CA, the still-valid certificate keeps being served", now: t0.Add(5 * time.Minute),
			s:         state{bundle: certs(ca1), serving: s1},
			newSigner: true, bundle: certs(ca1)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := decide(tc.now, pTest, tc.s, tc.injected)
			if d.newSigner != tc.newSigner || d.issueServing != tc.issue || d.markTrusted != tc.mark {
				t.Errorf("newSigner=%v issueServing=%v markTrusted=%v, want %v %v %v", d.newSigner, d.issueServing, d.markTrusted, tc.newSigner, tc.issue, tc.mark)
			}
			if d.bundleChanged != tc.bundleChanged {
				t.Errorf("bundleChanged=%v, want %v", d.bundleChanged, tc.bundleChanged)
			}
			if tc.bundle != nil && !equalCerts(d.bundle, tc.bundle) {
				t.Errorf("bundle has %d CAs, not the %d expected", len(d.bundle), len(tc.bundle))
			}
			if tc.requeueAfter != 0 && d.requeueAfter != tc.requeueAfter {
				t.Errorf("requeueAfter=%s, want %s", d.requeueAfter, tc.requeueAfter)
			}
		})
	}
}

func equalCerts(a, b []*x509.Certificate) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !a[i].Equal(b[i]) {
			return false
		}
	}
	return true
}

// TestRotationTimeline drives decide and apply through many rotations in simulated time, with the
// caBundle injection lagging one step behind the Secret, and checks the guarantees clients rely on.
func TestRotationTimeline(t *testing.T) {
	const step = 20 * time.Second
	var (
		sec         = newTLSSecret()
		injected    []byte                   // what the webhook configurations hold
		inBundleAt  = map[string]time.Time{} // CA fingerprint -> when it first reached the configurations
		cas, served = map[string]bool{}, map[string]bool{}
	)
	now := t0
	for i := 0; i < 2000; i++ {
		cur := readState(sec)
		d := decide(now, pTest, cur, cur.signer != nil && bundleContains(injected, cur.signer.cert))
		if d.changes() {
			if err := apply(now, pTest, cur, d, sec); err != nil {
				t.Fatal(err)
			}
		}
		after := readState(sec)
		if after.serving == nil || !validAt(after.serving.cert, now) {
			t.Fatalf("%s: no valid serving certificate", now.Sub(t0))
		}
		cas[fingerprint(after.signer.cert)] = true
		leaf := fingerprint(after.serving.cert)
		if !served[leaf] {
			served[leaf] = true
			issuer := issuerIn(after.serving.cert, parseBundle(injected))
			switch {
			case i == 0: // bootstrap: nothing was trusted before
			case issuer == nil:
				t.Fatalf("%s: serving certificate signed by a CA that is not in the caBundle", now.Sub(t0))
			case now.Sub(inBundleAt[fingerprint(issuer)]) < pTest.trustDelay:
				t.Fatalf("%s: serving certificate from a CA injected only %s ago", now.Sub(t0), now.Sub(inBundleAt[fingerprint(issuer)]))
			}
		}
		if n := len(after.bundle); n > 3 {
			t.Fatalf("%s: bundle grew to %d CAs", now.Sub(t0), n)
		}

		// The injector copies the bundle into the configurations; the next step sees it.
		injected = sec.Data[bundleKey]
		for _, ca := range parseBundle(injected) {
			if _, ok := inBundleAt[fingerprint(ca)]; !ok {
				inBundleAt[fingerprint(ca)] = now
			}
		}
		now = now.Add(step)
	}
	// 2000 steps of 20s are about 11 hours: CAs last 100 minutes, certificates 40.
	if len(cas) < 6 || len(served) < 15 {
		t.Errorf("only %d CAs and %d serving certificates over the timeline", len(cas), len(served))
	}
}

func issuerIn(c *x509.Certificate, cas []*x509.Certificate) *x509.Certificate {
	for _, ca := range cas {
		if c.CheckSignatureFrom(ca) == nil {
			return ca
		}
	}
	return nil
}

func newTLSSecret() *corev1.Secret {
	return &corev1.Secret{Type: corev1.SecretTypeTLS}
}
