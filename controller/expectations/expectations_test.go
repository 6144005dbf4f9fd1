package expectations

import (
	"errors"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

func obj(rv, uid string) *metav1.ObjectMeta {
	return &metav1.ObjectMeta{ResourceVersion: rv, UID: types.UID(uid)}
}

func TestWrites(t *testing.T) {
	key := types.NamespacedName{Namespace: "ns", Name: "a"}
	cases := []struct {
		name   string
		record func(*Writes)
		cached *metav1.ObjectMeta // nil: absent from the cache
		behind bool
	}{
		{"nothing written", func(*Writes) {}, nil, false},
		{"created, cache empty", func(w *Writes) { w.Updated(key, "") }, nil, true},
		{"created, cache has it", func(w *Writes) { w.Updated(key, "") }, obj("5", "u1"), false},
		{"updated, cache at the replaced version", func(w *Writes) { w.Updated(key, "5") }, obj("5", "u1"), true},
		{"updated, cache newer", func(w *Writes) { w.Updated(key, "5") }, obj("6", "u1"), false},
		{"updated, object gone since", func(w *Writes) { w.Updated(key, "5") }, nil, false},
		{"deleted, cache still has it", func(w *Writes) { w.Deleted(key, "u1") }, obj("6", "u1"), true},
		{"deleted, cache has a new object of that name", func(w *Writes) { w.Deleted(key, "u1") }, obj("9", "u2"), false},
		{"deleted, cache empty", func(w *Writes) { w.Deleted(key, "u1") }, nil, false},
		{"forgotten", func(w *Writes) { w.Updated(key, "5"); w.Forget(key) }, obj("5", "u1"), false},
		{"last write counts", func(w *Writes) { w.Updated(key, "5"); w.Updated(key, "6") }, obj("6", "u1"), true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var w Writes
			c.record(&w)
			var cached Object
			if c.cached != nil {
				cached = c.cached
			}
			err := w.Check(key, cached)
			if got := errors.Is(err, ErrBehind); got != c.behind {
				t.Fatalf("Check = %v, want behind %v", err, c.behind)
			}
			if c.behind {
				// Still expected until the cache catches up.
				if err := w.Check(key, cached); !errors.Is(err, ErrBehind) {
					t.Fatalf("second Check = %v, want still behind", err)
				}
				return
			}
			// Observed writes are forgotten: the same stale view no longer counts.
			if err := w.Check(key, obj("5", "u1")); err != nil {
				t.Fatalf("Check after observing = %v, want forgotten", err)
			}
		})
	}
}

func TestCheckOtherKeyUnaffected(t *testing.T) {
	var w Writes
	w.Updated(types.NamespacedName{Namespace: "ns", Name: "a"}, "5")
	if err := w.Check(types.NamespacedName{Namespace: "ns", Name: "b"}, obj("5", "u")); err != nil {
		t.Fatalf("Check of another key = %v", err)
	}
}
