package fleet

import (
	"crypto/sha1" //nolint:gosec // Fleet's label value is a SHA-1; it is an identifier, not a secret.
	"crypto/sha256"
	"encoding/hex"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// Fleet (wrangler objectset) and Helm ownership keys, as Fleet's agent writes them.
const (
	// LabelHash carries the bundle deployment's object-set hash; Fleet selects its objects by it.
	LabelHash = "objectset.rio.cattle.io/hash"
	// AnnotationID carries the bundle deployment's set ID ("default-<bundle>").
	AnnotationID = "objectset.rio.cattle.io/id"
	// LabelPrune set to "false" keeps Fleet from treating an object as orphaned.
	LabelPrune = "objectset.rio.cattle.io/prune"
	// AnnotationReleaseName and AnnotationReleaseNamespace are Helm's ownership annotations.
	AnnotationReleaseName      = "meta.helm.sh/release-name"
	AnnotationReleaseNamespace = "meta.helm.sh/release-namespace"
	// LabelManagedBy is set to ManagedByHelm by Helm on every object of a release.
	LabelManagedBy = "app.kubernetes.io/managed-by"
	ManagedByHelm  = "Helm"

	// FieldManager is the field manager Fleet's agent uses for every write.
	FieldManager = "fleet"

	// agentLabelPrefix is what Fleet's agent prefixes set IDs with: its default namespace.
	agentLabelPrefix = "default"
)

// SetID is the object-set ID Fleet's agent gives this bundle's deployment
// (desiredset.GetSetID with the agent's default label prefix and no suffix).
func (b *Bundle) SetID() string { return safeConcatName(agentLabelPrefix, b.Name) }

// Hash is the value of LabelHash on every object of this bundle.
func (b *Bundle) Hash() string {
	// wrangler hashes the id followed by the owner-gvk, owner-name and owner-namespace annotations;
	// Fleet sets only the id, so the others contribute nothing.
	sum := sha1.Sum([]byte(b.SetID())) //nolint:gosec // see import
	return hex.EncodeToString(sum[:])
}

// safeConcatName is Fleet's names.SafeConcatName: join with "-", and keep the result under 64
// characters by cutting it and appending part of its SHA-256.
func safeConcatName(parts ...string) string {
	full := strings.Join(parts, "-")
	if len(full) < 64 {
		return full
	}
	digest := sha256.Sum256([]byte(full))
	sum := hex.EncodeToString(digest[:])
	if c := full[56]; 'a' <= c && c <= 'z' || '0' <= c && c <= '9' {
		return full[:57] + "-" + sum[:5]
	}
	return full[:56] + "-" + sum[:6]
}

// decorate returns a copy of obj carrying the metadata Fleet's post-renderer and Helm add.
func (b *Bundle) decorate(obj *unstructured.Unstructured) *unstructured.Unstructured {
	out := obj.DeepCopy()
	labels := out.GetLabels()
	if labels == nil {
		labels = map[string]string{}
	}
	labels[LabelHash] = b.Hash()
	labels[LabelManagedBy] = ManagedByHelm
	out.SetLabels(labels)

	annotations := out.GetAnnotations()
	if annotations == nil {
		annotations = map[string]string{}
	}
	annotations[AnnotationID] = b.SetID()
	annotations[AnnotationReleaseName] = b.Name
	annotations[AnnotationReleaseNamespace] = b.Namespace
	out.SetAnnotations(annotations)
	return out
}

// installOrder is Helm's kind order for installs and upgrades (helm pkg/release/util InstallOrder);
// kinds not listed (custom resources) come last.
var installOrder = []string{
	"PriorityClass", "Namespace", "NetworkPolicy", "ResourceQuota", "LimitRange", "PodSecurityPolicy",
	"PodDisruptionBudget", "ServiceAccount", "Secret", "SecretList", "ConfigMap", "StorageClass",
	"PersistentVolume", "PersistentVolumeClaim", "CustomResourceDefinition", "ClusterRole",
	"ClusterRoleList", "ClusterRoleBinding", "ClusterRoleBindingList", "Role", "RoleList", "RoleBinding",
	"RoleBindingList", "Service", "DaemonSet", "Pod", "ReplicationController", "ReplicaSet", "Deployment",
	"HorizontalPodAutoscaler", "StatefulSet", "Job", "CronJob", "IngressClass", "Ingress", "APIService",
	"MutatingWebhookConfiguration", "ValidatingWebhookConfiguration",
}

// kindRank orders kinds for applying; equal ranks keep the bundle's order.
func kindRank(kind string) int {
	for i, k := range installOrder {
		if k == kind {
			return i
		}
	}
	return len(installOrder)
}
