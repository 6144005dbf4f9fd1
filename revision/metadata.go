package revision

import (
	"sort"
	"strings"
)

// DefaultOwnershipKeys are the GitOps ownership metadata keys never copied onto generated objects:
// Fleet/wrangler, Helm, Argo CD and Flux. Pattern syntax is described at MatchKey.
var DefaultOwnershipKeys = []string{
	"objectset.rio.cattle.io/*",
	"fleet.cattle.io/*",
	"meta.helm.sh/*",
	"helm.sh/chart",
	"app.kubernetes.io/managed-by=Helm",
	"argocd.argoproj.io/*",
	"app.kubernetes.io/instance",
	"*.toolkit.fluxcd.io/*",
	"kubectl.kubernetes.io/last-applied-configuration",
}

// Match reports whether a metadata entry matches an ownership pattern:
//   - "prefix/*" or "prefix/" matches every key with that prefix ("meta.helm.sh/release-name");
//   - "*.domain/*" matches every key whose domain ends in ".domain" ("kustomize.toolkit.fluxcd.io/name");
//   - "key=value" matches that key only with that value ("app.kubernetes.io/managed-by=Helm");
//   - anything else matches the key exactly.
func Match(pattern, key, value string) bool {
	if k, v, ok := strings.Cut(pattern, "="); ok {
		return key == k && value == v
	}
	if rest, ok := strings.CutPrefix(pattern, "*."); ok {
		domain, _, hasSlash := strings.Cut(key, "/")
		suffix, _ := strings.CutSuffix(rest, "/*")
		suffix = strings.TrimSuffix(suffix, "/")
		return hasSlash && strings.HasSuffix(domain, "."+suffix)
	}
	if prefix, ok := strings.CutSuffix(pattern, "*"); ok {
		return strings.HasPrefix(key, prefix)
	}
	if strings.HasSuffix(pattern, "/") {
		return strings.HasPrefix(key, pattern)
	}
	return key == pattern
}

// IsOwnership reports whether the entry matches any of the patterns.
func IsOwnership(patterns []string, key, value string) bool {
	for _, p := range patterns {
		if Match(p, key, value) {
			return true
		}
	}
	return false
}

// StripOwnership returns a copy of m without the entries that match patterns, or nil when nothing
// is left. m itself is not modified.
func StripOwnership(patterns []string, m map[string]string) map[string]string {
	var out map[string]string
	for k, v := range m {
		if IsOwnership(patterns, k, v) {
			continue
		}
		if out == nil {
			out = make(map[string]string, len(m))
		}
		out[k] = v
	}
	return out
}

// OwnershipKeysIn returns the keys of m that match patterns, for reporting and for JSON patches.
func OwnershipKeysIn(patterns []string, m map[string]string) []string {
	var keys []string
	for k, v := range m {
		if IsOwnership(patterns, k, v) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return keys
}
