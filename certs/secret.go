package certs

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// Secret layout. tls.crt/tls.key and ca.crt follow the kubernetes.io/tls and cert-manager
// conventions, so tools that read those Secrets understand ours.
const (
	bundleKey     = "ca.crt"     // every trusted CA: the caBundle injected into the webhook configurations
	signerCertKey = "signer.crt" // the CA that signs new serving certificates
	signerKeyKey  = "signer.key"

	// trustedAnnotation records "<sha256 of the signer certificate> <RFC 3339 time>": when the
	// signer was first seen in every webhook's caBundle. Replicas share it through the Secret so the
	// wait before serving a certificate from a new CA survives restarts and leader changes.
	trustedAnnotation = "canarygate.io/ca-trusted-since"
)

// readState parses a Secret; anything damaged reads as missing, so that decide replaces it.
func readState(sec *corev1.Secret) state {
	var s state
	if sec == nil {
		return s
	}
	if k, err := parseKeyPair(sec.Data[signerCertKey], sec.Data[signerKeyKey]); err == nil && k.cert.IsCA {
		s.signer = k
	}
	s.bundle = parseBundle(sec.Data[bundleKey])
	if k, err := parseKeyPair(sec.Data[corev1.TLSCertKey], sec.Data[corev1.TLSPrivateKeyKey]); err == nil {
		s.serving = k
	}
	if s.signer != nil {
		s.trustedSince = parseTrusted(sec.Annotations[trustedAnnotation], s.signer.cert)
	}
	return s
}

// parseTrusted returns the time recorded in the annotation if it refers to signer.
func parseTrusted(v string, signer *x509.Certificate) time.Time {
	fp, ts, ok := strings.Cut(v, " ")
	if !ok || fp != fingerprint(signer) {
		return time.Time{}
	}
	t, err := time.Parse(time.RFC3339Nano, ts)
	if err != nil {
		return time.Time{}
	}
	return t
}

func fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

// apply carries out a decision on sec (a copy the caller owns), generating keys as needed.
func apply(now time.Time, p policy, cur state, d decision, sec *corev1.Secret) error {
	signer, bundle := cur.signer, d.bundle
	if d.newSigner {
		ca, err := newCA(now, now.Add(p.caValidity))
		if err != nil {
			return fmt.Errorf("creating CA: %w", err)
		}
		signer, bundle = ca, append(bundle, ca.cert)
	}
	if signer == nil {
		return errors.New("no signing CA") // decide never leaves a missing signer in place
	}
	serving := cur.serving
	if d.issueServing {
		var err error
		if serving, err = newServing(signer, now, servingNotAfter(now, p, signer), p.dnsNames, p.ips); err != nil {
			return fmt.Errorf("issuing serving certificate: %w", err)
		}
	}
	if serving == nil {
		return errors.New("no serving certificate") // decide issues one whenever it is missing
	}

	if sec.Data == nil {
		sec.Data = map[string][]byte{}
	}
	sec.Data[bundleKey] = encodeBundle(bundle)
	sec.Data[signerCertKey], sec.Data[signerKeyKey] = signer.certPEM, signer.keyPEM
	sec.Data[corev1.TLSCertKey], sec.Data[corev1.TLSPrivateKeyKey] = serving.certPEM, serving.keyPEM
	switch {
	case d.newSigner:
		delete(sec.Annotations, trustedAnnotation)
	case d.markTrusted:
		if sec.Annotations == nil {
			sec.Annotations = map[string]string{}
		}
		sec.Annotations[trustedAnnotation] = fingerprint(signer.cert) + " " + now.UTC().Format(time.RFC3339Nano)
	}
	return nil
}
