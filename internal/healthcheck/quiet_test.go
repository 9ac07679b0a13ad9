package healthcheck

import (
	"testing"
	"time"
)

// TestQuietProbe: once a probe's streak has passed every subscriber's
// rise and fall, record skips the subscribers; a target attached then, or
// a spec updated then, still gets its transition.
func TestQuietProbe(t *testing.T) {
	noLeak(t)
	m := newManager(t, Options{Quantum: time.Millisecond})
	rec := record(m)
	spec := Spec{Check: fakeSpec{key: "q", c: newFake()}, Interval: 5 * time.Millisecond, Timeout: 5 * time.Millisecond,
		Rise: 1, Fall: 1, Initial: StateUnknown}
	if err := m.Add("a", spec); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, "a quiet probe", func() bool { st, _ := m.Status("a"); return st.Streak > 5 })
	late := spec
	late.Rise = 3
	if err := m.Add("b", late); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, "b up", func() bool { st, _ := m.Status("b"); return st.State == StateUp })
	// An update of the initial state only: no transition, but a later
	// change of results is still seen by both.
	if err := m.Update("b", Spec{Check: spec.Check, Interval: spec.Interval, Timeout: spec.Timeout, Rise: 2, Fall: 1, Initial: StateDown}); err != nil {
		t.Fatal(err)
	}
	trs := rec.settle(50*time.Millisecond, time.Second)
	if len(trs) != 2 || trs[0].Target != "a" || trs[1].Target != "b" || trs[1].To != StateUp {
		t.Errorf("transitions %+v", trs)
	}
}
