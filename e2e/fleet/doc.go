// Package fleet applies a folder of manifests the way Rancher Fleet's agent does, so that tests and
// the demo meet canarygate exactly as a real Fleet install would, without running Fleet.
//
// What is emulated, and where it comes from (rancher/fleet internal/helmdeployer and
// internal/cmd/agent/deployer, helm/helm v4 pkg/action and pkg/kube):
//
//   - Ownership metadata. Fleet's Helm post-renderer adds the label objectset.rio.cattle.io/hash and
//     the annotation objectset.rio.cattle.io/id to every object. The id is the "set ID"
//     SafeConcatName(<agent default namespace "default">, <bundle deployment name>); the hash is the
//     hex SHA-1 of the id followed by the (empty) owner-gvk, owner-name and owner-namespace values,
//     so it is the same for every object of a bundle deployment and Fleet finds its objects by it.
//     Helm then adds meta.helm.sh/release-name, meta.helm.sh/release-namespace and the label
//     app.kubernetes.io/managed-by: Helm. The release is named after the bundle and lives in the
//     bundle's default namespace.
//   - A deploy (Apply). Fleet runs Helm v4 with server-side apply. Helm applies every object as the
//     field manager given to it, which is "fleet" here, and does not force conflicts: Helm's
//     Upgrade.ForceConflicts and Install.ForceConflicts default to false and Fleet leaves them alone.
//     Applier.ForceConflicts exists for experiments; it is off by default for that reason.
//   - Drift correction (CorrectDrift). Fleet calls Helm's rollback to the current release version,
//     and rollback passes server-side apply off. Helm's client-side path then sends, for kinds Helm
//     knows (the Kubernetes scheme), a strategic three-way merge patch of the release manifest
//     against itself and the live object: exactly the declared fields that differ, as a PATCH that
//     the API server records as an Update. For custom resources Helm falls back to a two-way JSON
//     merge patch between the old and the new manifest, which are the same release here, so a
//     rollback sends nothing for them: drift in a Canary or VirtualService stays. Missing objects are
//     created. The applier does the same, as field manager "fleet". A PUT of the manifest with the
//     live resourceVersion was rejected as the emulation: it would drop every field the server or
//     another controller set (canarygate's annotations, defaults) and conflict on every concurrent
//     write, which a real Fleet agent never does.
//   - Status (Check). Fleet lists, per kind of the bundle, the live objects carrying the bundle's
//     hash label in the bundle's namespaces; declared objects not among them are "missing",
//     listed objects not declared are orphaned ("extra"), unless labeled
//     objectset.rio.cattle.io/prune: "false". Declared objects are "modified" when Argo CD's diff
//     (vendored by Fleet) finds a difference: a three-way diff with the manifest as both the last
//     applied and the desired state, so only fields the manifest sets are compared. Fields the live
//     object has and the manifest does not (status, server defaults, metadata the server fills in,
//     and annotations other controllers add, such as canarygate's desired-revision,
//     desired-template and promoted-revision) are never reported, exactly like Fleet's default.
//
// Deliberate differences from Fleet, each stricter for the tests: Check also lists Deployments,
// Services, ConfigMaps and Istio VirtualServices when the bundle declares none (Fleet only lists the
// kinds of its bundle), and reports extra objects whether or not an earlier release contained them
// (since fleet#1141 Fleet hides orphans that no previous release contained; Flagger's copies of the
// label used to show up, and a canary controller must never cause them). Fleet's per-bundle diff
// options (comparePatches, jsonPointers) and its scheme-defaulting of both sides are not emulated:
// manifests should be written the way the API server stores them (for example canonical resource
// quantities).
package fleet
