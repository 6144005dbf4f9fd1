// Package webhook holds canarygate's admission handlers (DESIGN.md "The flow", steps 2 and 3).
// Register serves them on the manager's webhook server; every handler is a pure function of the
// AdmissionRequest and the manager's cache (namespaces, CanaryPolicies, Canaries): it writes
// nothing, so sideEffects is None and a server-side dry-run gets exactly the real answer.
//
// A namespace is managed when policy.Resolver says so (the opt-in annotation, or a CanaryPolicy
// selecting it); a Deployment in it is managed unless its opt-out annotation is honoured
// (policy.Effective.DeploymentManaged). A template's revision is revision.Hash of the typed pod
// template, the same function the controller uses.
//
// # /mutate-deployments (apps/v1 Deployments, CREATE and UPDATE)
//
// Objects labeled canarygate.io/generated-for get every ownership key of the effective strip list
// removed from their metadata and their pod template's metadata. For other Deployments:
//   - subresources (scale, status), CREATE (the first version is the stable one) and DELETE pass;
//     so does any Deployment that is not managed;
//   - an UPDATE whose new object carries canarygate.io/break-glass passes unchanged (the validator
//     decides who may set it);
//   - an UPDATE that changes the template's revision passes unchanged when it comes from canarygate's
//     ServiceAccount with canarygate.io/promoted-revision equal to the new revision (a promotion);
//     otherwise the old (stable) template is patched back and the new one recorded as the pending
//     revision: canarygate.io/desired-template (canonical JSON) and canarygate.io/desired-revision.
//     Every other change of the update is kept. The patch is a minimal JSON patch of the template
//     plus the two annotations, so the same Git state applied again, by server-side apply or by a
//     plain PUT of the Git manifest, yields the stored object byte for byte and the API server
//     writes nothing (no new resourceVersion);
//   - an UPDATE that keeps the template's revision but sets or changes the desired-* annotations
//     is refused (400) unless they are a decodable pod template and its revision;
//   - an UPDATE that keeps the template's revision while a revision is pending, from one of the
//     GitOps field managers (Options.GitOpsFieldManagers), means Git states the stable template
//     again (a revert): the desired-* annotations are removed. Any other such update (scaling, a
//     label edit) leaves the pending revision alone.
//
// The mutator is registered with reinvocationPolicy IfNeeded. One case is ambiguous then: when a
// later mutating webhook changes a Deployment that a GitOps agent re-applies with a pending
// revision, the reinvocation sees the stable template and the unchanged pending annotations from a
// GitOps field manager, exactly like a Git revert, and clears the pending revision (the next
// re-apply records it again). No field of the request tells the two apart.
//
// # /mutate-namespaces (v1 Namespaces labeled canarygate.io/canary=enabled, UPDATE)
//
// An update that drops the opt-in label from a Namespace that stays managed (its new object still
// opts in, or a CanaryPolicy still selects it) gets the label added back: a GitOps agent replacing
// the Namespace with its manifest must not take it out of canarygate's view even for the moment
// the controller would need to restore it. Fails open (failurePolicy Ignore).
//
// # /validate-deployments (apps/v1 Deployments, CREATE and UPDATE; generated ones excepted)
//
// In a managed namespace: setting canarygate.io/break-glass, or setting the opt-out
// (canarygate.io/canary: disabled) where no policy allows opting out, is refused unless a group of
// the requester is among the policy's break-glass groups; desired-* annotations set by the request
// must be consistent (400 otherwise); and an UPDATE of a managed Deployment that changes the
// template's revision is refused unless it is canarygate's promotion or break-glass is set: the
// mutating webhook was skipped or undone by another webhook.
//
// # /validate-generated (Deployments, Services, VirtualServices; CREATE, UPDATE, DELETE)
//
// An object labeled canarygate.io/generated-for (on the new or, for UPDATE and DELETE, the old
// object) may be created, changed or deleted only by canarygate's ServiceAccount, the break-glass
// groups, and kube-controller-manager's garbage collector, namespace and Deployment controllers
// (so that owners and namespaces can still be deleted). Status writes pass.
//
// # /validate-canarygate (Canaries and CanaryPolicies, CREATE and UPDATE)
//
// A Canary must stay within its namespace's bounds: analysis.maxWeight, stepWeight and every
// stepWeights entry at most the cap, interval at least the minimum, skipAnalysis only where allowed;
// and no other Canary may target the same Deployment. A CanaryPolicy's namespaceSelector and
// bounds.minInterval must parse, its breakGlassGroups and stripMetadataKeys must be non-empty (and no
// strip pattern may match canarygate's own generated-for label), and its defaults must keep its own
// bounds. Updates that leave the spec unchanged always pass, so a tightened policy never blocks the
// controller's metadata writes or a deletion.
//
// # Pod-template fields canarygate does not know
//
// Revisions are taken of the typed pod template, which drops fields that canarygate's Kubernetes
// library does not know (an API server newer than canarygate). Where either template carries such
// fields, old and new are the same only if equal as sent (in canonical form); any other change is
// refused by both Deployment webhooks (403, naming the fields) unless break-glass is set: a change
// canarygate cannot see could neither be held for a canary nor promoted without losing the fields.
//
// # Bad input
//
// A request of the wrong kind, without the object (or the old object on UPDATE and DELETE), or with
// an object that does not decode gets a 400 answer; a namespace missing from the cache a 503 (the
// client retries): nothing that should be held is ever allowed by default.
package webhook
