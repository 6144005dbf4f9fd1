// Package expectations remembers a controller's own writes until its informer cache shows them.
//
// A reconcile that reads an object from the cache right after writing it may see the old version:
// deciding on it would repeat the last step (a second weight change, a second create). Waiting for
// the cache inside the reconcile would hold a worker for as long as the watch lags, which under
// load — a thousand canaries stepping together — starves every other canary. Instead the writer
// records what it wrote, and a reader that finds the cache still behind gets ErrBehind and
// requeues, leaving the worker to others.
package expectations

import (
	"errors"
	"fmt"
	"sync"

	"k8s.io/apimachinery/pkg/types"
)

// ErrBehind means the cache does not show a write this process made yet. It is not a failure:
// requeue shortly.
var ErrBehind = errors.New("the cache does not show this controller's last write yet")

// Object is what a check needs of a cached object: metav1.Object has it.
type Object interface {
	GetResourceVersion() string
	GetUID() types.UID
}

// Writes holds the pending expectation of each object key. The zero value is ready to use and
// safe for concurrent use.
type Writes struct{ m sync.Map } // types.NamespacedName → expectation

type expectation struct {
	// replaced is the resourceVersion the write replaced: "" for a create, where the cache is
	// behind while it has no object.
	replaced string
	// deleted is the UID of a deleted object: the cache is behind while it still holds it.
	deleted types.UID
}

// Updated records a create (replaced == "") or an update of the object that had resourceVersion
// replaced.
func (w *Writes) Updated(key types.NamespacedName, replaced string) {
	w.m.Store(key, expectation{replaced: replaced})
}

// Deleted records the deletion of the object with the given UID.
func (w *Writes) Deleted(key types.NamespacedName, uid types.UID) {
	w.m.Store(key, expectation{deleted: uid})
}

// Forget drops the expectation of key, when the object is gone for good.
func (w *Writes) Forget(key types.NamespacedName) { w.m.Delete(key) }

// Check returns an error wrapping ErrBehind when cached (nil: the cache has no such object) is
// older than this process' last write of key; otherwise it forgets the write, now observed.
func (w *Writes) Check(key types.NamespacedName, cached Object) error {
	v, ok := w.m.Load(key)
	if !ok {
		return nil
	}
	e := v.(expectation)
	var behind bool
	switch {
	case e.deleted != "":
		behind = cached != nil && cached.GetUID() == e.deleted
	case e.replaced == "":
		behind = cached == nil
	default:
		behind = cached != nil && cached.GetResourceVersion() == e.replaced
	}
	if behind {
		return fmt.Errorf("%s: %w", key, ErrBehind)
	}
	// CompareAndDelete: a write recorded meanwhile by another worker stays expected.
	w.m.CompareAndDelete(key, e)
	return nil
}
