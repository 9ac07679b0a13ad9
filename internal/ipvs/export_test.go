package ipvs

import "testing"

// Test helpers for the external test package ipvs_test (which can import
// ipvstest: the fake imports this package, so these tests cannot live in
// package ipvs).

// NeedIPVS: see needIPVS.
func NeedIPVS(t *testing.T) { needIPVS(t) }

// OpenPrivate opens the (empty) IPVS table of a fresh network namespace and
// returns it with the namespace's path (/var/run/netns/NAME).
func OpenPrivate(t *testing.T) (*Kernel, string) {
	t.Helper()
	needIPVS(t)
	ns := newNetns(t)
	k := openIn(t, ns)
	if svcs, err := k.Services(); err != nil || len(svcs) != 0 {
		t.Fatalf("fresh namespace: Services() = %v, %v", svcs, err)
	}
	return k, ns
}

// WithBootID overrides the boot id the state file is checked against.
func WithBootID(id string) ReconcilerOption { return func(r *Reconciler) { r.bootID = id } }

// BigTable: see bigTable.
func BigTable(t testing.TB, n int) Table { return bigTable(t, n) }

// RawDestinations lists s's destinations straight through moby/ipvs,
// without Kernel's serialisation and deadline: for measuring their cost.
func RawDestinations(k *Kernel, s Service) (int, error) {
	m, err := serviceToMoby(s, false)
	if err != nil {
		return 0, err
	}
	ds, err := k.h.GetDestinations(m)
	return len(ds), err
}
