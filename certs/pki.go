package certs

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"time"
)

// backdate moves NotBefore into the past so that a peer whose clock runs slightly behind ours
// (another replica, the API server) accepts a certificate the moment it is issued.
const backdate = time.Minute

// keyPair is a parsed certificate with its private key and their PEM forms.
type keyPair struct {
	cert    *x509.Certificate
	key     crypto.Signer
	certPEM []byte
	keyPEM  []byte
}

// newCA creates a self-signed CA valid from now-backdate until notAfter.
func newCA(now, notAfter time.Time) (*keyPair, error) {
	return newKeyPair(nil, &x509.Certificate{
		Subject:               pkix.Name{CommonName: fmt.Sprintf("canarygate-webhook-ca@%d", now.Unix())},
		NotBefore:             now.Add(-backdate),
		NotAfter:              notAfter,
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	})
}

// newServing issues a serving certificate for the given names, signed by ca.
func newServing(ca *keyPair, now, notAfter time.Time, dnsNames []string, ips []net.IP) (*keyPair, error) {
	cn := "canarygate-webhook"
	if len(dnsNames) > 0 {
		cn = dnsNames[0]
	}
	return newKeyPair(ca, &x509.Certificate{
		Subject:     pkix.Name{CommonName: cn},
		NotBefore:   now.Add(-backdate),
		NotAfter:    notAfter,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:    dnsNames,
		IPAddresses: ips,
	})
}

// newKeyPair signs template with parent, or self-signs it when parent is nil. ECDSA P-256 keeps
// generation cheap enough to rotate every few seconds in tests and is accepted by every API server.
func newKeyPair(parent *keyPair, template *x509.Certificate) (*keyPair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("generating serial number: %w", err)
	}
	template.SerialNumber = serial
	signerCert, signerKey := template, crypto.Signer(key)
	if parent != nil {
		signerCert, signerKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, template, signerCert, key.Public(), signerKey)
	if err != nil {
		return nil, fmt.Errorf("signing certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parsing issued certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encoding key: %w", err)
	}
	return &keyPair{
		cert:    cert,
		key:     key,
		certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}, nil
}

// parseKeyPair parses a PEM certificate (the first one is the leaf) and its PEM key, and checks
// that they belong together.
func parseKeyPair(certPEM, keyPEM []byte) (*keyPair, error) {
	if len(certPEM) == 0 || len(keyPEM) == 0 {
		return nil, errors.New("certificate or key missing")
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	key, ok := pair.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("unsupported private key type %T", pair.PrivateKey)
	}
	return &keyPair{cert: pair.Leaf, key: key, certPEM: certPEM, keyPEM: keyPEM}, nil
}

// parseBundle returns the CA certificates in a PEM bundle. Blocks that are not parseable CA
// certificates are skipped: a damaged entry must not keep the healthy ones from being used.
func parseBundle(data []byte) []*x509.Certificate {
	var cas []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return cas
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil || !cert.IsCA {
			continue
		}
		cas = append(cas, cert)
	}
}

// encodeBundle is parseBundle's inverse.
func encodeBundle(cas []*x509.Certificate) []byte {
	var buf bytes.Buffer
	for _, ca := range cas {
		_ = pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw}) // writing to a bytes.Buffer cannot fail
	}
	return buf.Bytes()
}

// bundleContains reports whether the PEM bundle holds exactly the certificate ca.
func bundleContains(bundle []byte, ca *x509.Certificate) bool {
	for _, c := range parseBundle(bundle) {
		if c.Equal(ca) {
			return true
		}
	}
	return false
}

// validAt reports whether now lies within the certificate's validity period.
func validAt(cert *x509.Certificate, now time.Time) bool {
	return !now.Before(cert.NotBefore) && now.Before(cert.NotAfter)
}
