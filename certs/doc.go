// Package certs manages the webhook's serving certificate: a self-signed CA and a serving
// certificate kept in one Secret, rotated before expiry, served from memory by every replica and
// trusted by the API server through the caBundle of the webhook configurations.
//
// # Why not open-policy-agent/cert-controller
//
// cert-controller v0.16.0 builds against controller-runtime v0.25.2 without downgrades, but does
// not meet the availability requirements: a CA rotation replaces CA and serving certificate in
// one write and injects only the new CA, so until every replica and the API server have caught up
// some handshakes meet an unknown CA; the serving certificate reaches replicas only through a
// kubelet-synced volume (a minute or more); the Secret must exist beforehand; and it checks for
// rotation on a long ticker. This package is small, on crypto/x509 and controller-runtime.
//
// # How it works
//
// The Secret holds ca.crt (every trusted CA: the caBundle), signer.crt/signer.key (the CA that
// signs) and tls.crt/tls.key (the serving certificate). One reconcile, run on every replica,
// decides from the Secret and the clock alone (decide, table-tested) and writes with the
// resourceVersion it read, so concurrent replicas cannot both win: the loser re-reads and adopts
// the winner's content. A rotation runs in steps:
//
//  1. a new CA joins the bundle next to the old one and the bundle goes into every caBundle;
//  2. once every caBundle holds it, the Secret records when (annotation canarygate.io/ca-trusted-since);
//  3. after Options.TrustDelay more, which covers the API server's own watch delay, a serving
//     certificate signed by the new CA replaces the old one;
//  4. the old CA leaves the bundle when it expires, never before a certificate it signed.
//
// Every replica serves the Secret's serving certificate through tls.Config.GetCertificate, reloaded
// the moment its watch sees the Secret change. The webhook server's default certificate source
// (certwatcher on CertDir) is not used, deliberately: controller-runtime v0.25's server fails Start
// when CertDir holds no certificate yet and starts before any cache-backed runnable could write one,
// and certwatcher reloads certificate and key as two files on inotify plus a 10 s poll, so a
// rotation would briefly see a mismatched pair. In memory the pair swaps atomically; connections
// already established keep their certificate, so requests in flight are not disturbed.
//
// A caBundle reset by someone else (a GitOps agent re-applying the configuration without it) is
// seen by the watch on the configurations and put back at once.
//
// With cert-manager instead (manifests/overlays/cert-manager), do not call Setup: the webhook
// server then reads the cert-manager Secret mounted at its CertDir.
package certs
