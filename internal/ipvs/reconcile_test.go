package ipvs_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hadirector/hadirector/internal/ipvs"
	"github.com/hadirector/hadirector/internal/ipvs/ipvstest"
)

// Reconciler behaviour on the in-memory kernel. The kernel semantics these
// rely on are shown equal to the real kernel's by the scenarios
// (scenario_test.go); the behaviours the brief asks of the real kernel are
// repeated there too (kernel_reconcile_test.go).

func newRec(t *testing.T, k ipvs.KernelAPI, opts ...ipvs.ReconcilerOption) *ipvs.Reconciler {
	t.Helper()
	r, err := ipvs.NewReconciler(k, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func mustClean(t *testing.T, res ipvs.Result) {
	t.Helper()
	if res.Err != nil || len(res.Failed) != 0 {
		t.Fatalf("apply: err %v, failed %v", res.Err, failedStrings(res.Failed))
	}
}

func TestApplyNeverFlushesAndAdopts(t *testing.T) {
	k := ipvstest.New()
	// Already there at start: a service that is desired (with a drifted
	// weight) and one that is not.
	for _, err := range []error{
		k.AddService(svcA), k.AddDestination(svcA, mod(a1, func(d *ipvs.Destination) { d.Weight = 7 })),
		k.AddService(svcU), k.AddDestination(svcU, u1),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	k.ResetCalls()
	r := newRec(t, k)
	res := r.Apply(desired(e(svcA, a1))(t))
	mustClean(t, res)
	if got := opStrings(res.Ops); !slices.Equal(got, []string{"update-dest TCP 192.0.2.10:80 -> 192.0.2.21:80 (dr, weight 1)"}) {
		t.Fatalf("ops = %q", got)
	}
	if len(res.Repaired) != 0 {
		t.Fatalf("adoption counted as repair: %v", res.Repaired)
	}
	if got := keyStrings(res.Unowned); !slices.Equal(got, []string{"TCP 192.0.2.99:25"}) {
		t.Fatalf("unowned = %q", got)
	}
	if got := keyStrings(r.Owned()); !slices.Equal(got, []string{"TCP 192.0.2.10:80"}) {
		t.Fatalf("owned = %q", got)
	}
	st := r.Stats()
	if st.Applies != 1 || st.Ops != 1 || st.Owned != 1 || len(st.Unowned) != 1 {
		t.Fatalf("stats = %+v", st)
	}
}

func TestRunRepairsDriftWithinAPeriod(t *testing.T) {
	k := ipvstest.New()
	results := make(chan ipvs.Result, 100)
	r := newRec(t, k, ipvs.WithReport(func(res ipvs.Result) { results <- res }))
	want := d1(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx, 20*time.Millisecond, func() ipvs.Table { return want }) }()

	first := <-results
	mustClean(t, first)
	if len(first.Ops) != len(d1Ops) {
		t.Fatalf("first run: %d ops, want %d", len(first.Ops), len(d1Ops))
	}
	if err := k.DelDestination(svcA, a1); err != nil { // behind its back
		t.Fatal(err)
	}
	deadline := time.After(5 * time.Second)
	for repaired := false; !repaired; {
		select {
		case res := <-results:
			mustClean(t, res)
			repaired = len(res.Repaired) == 1
		case <-deadline:
			t.Fatal("drift not repaired")
		}
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v", err)
	}
	if got := readTable(t, k); !got.Equal(want) {
		t.Fatalf("kernel:\n%s\nwant\n%s", got, want)
	}
	if st := r.Stats(); st.Repairs != 1 || st.Applies < 2 {
		t.Fatalf("stats = %+v", st)
	}
}

func TestWedgedKernelSkipsTheRest(t *testing.T) {
	k := ipvstest.New()
	k.Fail(func(c ipvstest.Call) error {
		if c.Write() {
			return ipvs.ErrTimeout
		}
		return nil
	})
	r := newRec(t, k)
	res := r.Apply(d1(t))
	if len(res.Ops) != 1 || len(res.Failed) != len(d1Ops) || !errors.Is(res.Failed[0].Err, ipvs.ErrTimeout) {
		t.Fatalf("ops %v, failed %v", opStrings(res.Ops), failedStrings(res.Failed))
	}
	for _, f := range res.Failed[1:] {
		if !errors.Is(f.Err, ipvs.ErrSkipped) {
			t.Fatalf("after a timeout: %v", f)
		}
	}
	if k.Writes() != 1 {
		t.Fatalf("%d writes reached the kernel after it stopped answering", k.Writes())
	}
	k.Fail(nil)
	mustClean(t, r.Apply(d1(t)))
	if got := readTable(t, k); !got.Equal(d1(t)) {
		t.Fatalf("after recovery:\n%s", got)
	}
}

func TestUnreadableServiceIsLeftThisRound(t *testing.T) {
	k := ipvstest.New()
	r := newRec(t, k)
	mustClean(t, r.Apply(d1(t)))
	broken := errors.New("dump failed")
	k.Fail(func(c ipvstest.Call) error {
		if c.Method == "Destinations" && c.Service.Key() == svcA.Key() {
			return broken
		}
		return nil
	})
	// A's destinations cannot be read: the model stands in for them.
	want := desired(e(svcA, a1), e(svcB, b1), e(svcF, mod(f1, func(d *ipvs.Destination) { d.Weight = 1 })))(t)
	res := r.Apply(want)
	mustClean(t, res)
	if got := opStrings(res.Ops); !slices.Equal(got, []string{
		"update-dest FWM 42 IPv4 -> 192.0.2.31:0 (dr, weight 1)",
		"del-dest TCP 192.0.2.10:80 -> 192.0.2.22:8080",
	}) {
		t.Fatalf("ops = %q", got)
	}
	// A new reconciler has no model: A is left alone this round.
	r2 := newRec(t, k)
	want2 := desired(e(svcA, a1, a3), e(svcB, b1), e(svcF, f1))(t)
	res = r2.Apply(want2)
	if got := opStrings(res.Ops); !slices.Equal(got, []string{"update-dest FWM 42 IPv4 -> 192.0.2.31:0 (dr, weight 5)"}) {
		t.Fatalf("no model: ops = %q", got)
	}
	if len(res.Failed) == 0 {
		t.Fatal("no model: nothing reported for the unreadable service")
	}
	for _, f := range res.Failed {
		if f.Op.Key() != svcA.Key() || !errors.Is(f.Err, ipvs.ErrSkipped) || !errors.Is(f.Err, broken) {
			t.Fatalf("no model: failed %v", f)
		}
	}
	if got := keyStrings(r2.Owned()); len(got) != 3 {
		t.Fatalf("an unreadable service lost its ownership: %q", got)
	}
	k.Fail(nil)
	res = r2.Apply(want2)
	mustClean(t, res)
	if got := opStrings(res.Ops); !slices.Equal(got, []string{"add-dest TCP 192.0.2.10:80 -> 192.0.2.23:80 (dr, weight 1)"}) {
		t.Fatalf("next round: ops = %q", got)
	}
}

func TestServicesUnreadable(t *testing.T) {
	k := ipvstest.New()
	k.Fail(func(c ipvstest.Call) error {
		if c.Method == "Services" {
			return syscall.ENOMEM
		}
		return nil
	})
	r := newRec(t, k)
	res := r.Apply(d1(t))
	if !errors.Is(res.Err, syscall.ENOMEM) || len(res.Ops) != 0 || k.Writes() != 0 {
		t.Fatalf("result %+v, %d writes", res, k.Writes())
	}
	if st := r.Stats(); st.ReadFails != 1 {
		t.Fatalf("stats = %+v", st)
	}
}

func TestDeleteOfWhatIsGoneIsDone(t *testing.T) {
	k := ipvstest.New()
	r := newRec(t, k)
	mustClean(t, r.Apply(d1(t)))
	// Someone deletes them between our read and our delete.
	k.Fail(func(c ipvstest.Call) error {
		switch c.Method {
		case "DelService":
			return syscall.ESRCH
		case "DelDestination":
			return syscall.ENOENT
		}
		return nil
	})
	res := r.Apply(desired(e(svcA, a1), e(svcF, f1))(t))
	mustClean(t, res)
	if len(res.Ops) != 2 {
		t.Fatalf("ops = %q", opStrings(res.Ops))
	}
	if got := keyStrings(r.Owned()); slices.Contains(got, svcB.Key().String()) {
		t.Fatalf("a deleted service is still owned: %q", got)
	}
}

func TestApplyChanges(t *testing.T) {
	k := ipvstest.New()
	r := newRec(t, k)
	// Before any Apply it is one.
	res := r.ApplyChanges(d1(t))
	mustClean(t, res)
	if st := r.Stats(); st.Applies != 1 || st.Changes != 0 || len(res.Ops) != len(d1Ops) {
		t.Fatalf("first ApplyChanges: stats %+v, %d ops", st, len(res.Ops))
	}
	k.ResetCalls()
	res = r.ApplyChanges(desired(e(svcA, a1, mod(a2, func(d *ipvs.Destination) { d.Weight = 0 })), e(svcB, b1), e(svcF, f1))(t))
	mustClean(t, res)
	if calls := k.Calls(); len(calls) != 1 || calls[0].Method != "UpdateDestination" {
		t.Fatalf("a weight change: kernel calls %v, want one UpdateDestination and no read", calls)
	}
	// It does not see drift; a failure from a stale model is reported and
	// the next Apply fixes it.
	if err := k.DelDestination(svcA, a1); err != nil {
		t.Fatal(err)
	}
	res = r.ApplyChanges(desired(e(svcA, mod(a1, func(d *ipvs.Destination) { d.Weight = 3 }), a2), e(svcB, b1), e(svcF, f1))(t))
	if got := failedStrings(res.Failed); len(got) != 1 || !strings.HasSuffix(got[0], "ENOENT") {
		t.Fatalf("stale model: failed = %q", got)
	}
	want := desired(e(svcA, mod(a1, func(d *ipvs.Destination) { d.Weight = 3 }), a2), e(svcB, b1), e(svcF, f1))(t)
	res = r.Apply(want)
	mustClean(t, res)
	if got := opStrings(res.Ops); !slices.Equal(got, []string{"add-dest TCP 192.0.2.10:80 -> 192.0.2.21:80 (dr, weight 3)"}) {
		t.Fatalf("after a stale ApplyChanges: %q", got)
	}
	if got := readTable(t, k); !got.Equal(want) {
		t.Fatalf("kernel:\n%s", got)
	}
}

func TestConcurrentApplies(t *testing.T) {
	k := ipvstest.New()
	r := newRec(t, k)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			w := 1 + i%2
			tb := desired(e(svcA, mod(a1, func(d *ipvs.Destination) { d.Weight = w })), e(svcF, f1))(t)
			if i%2 == 0 {
				r.Apply(tb)
			} else {
				r.ApplyChanges(tb)
			}
			r.Stats()
			r.Owned()
		})
	}
	wg.Wait()
	final := desired(e(svcA, a1), e(svcF, f1))(t)
	mustClean(t, r.Apply(final))
	if got := readTable(t, k); !got.Equal(final) {
		t.Fatalf("kernel:\n%s", got)
	}
}

func TestStateFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "ipvs-owned.json")
	k := ipvstest.New()
	r := newRec(t, k, ipvs.WithStateFile(path), ipvs.WithBootID("boot-1"))
	mustClean(t, r.Apply(d1(t)))
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"boot_id":"boot-1","services":["TCP 192.0.2.10:80","UDP [2001:db8::10]:53","FWM 42 IPv4"]}` + "\n"
	if string(b) != want {
		t.Fatalf("state file:\n%s\nwant\n%s", b, want)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file mode: %v %v", fi.Mode(), err)
	}

	// After a reboot (another boot id) the file means nothing.
	r2 := newRec(t, k, ipvs.WithStateFile(path), ipvs.WithBootID("boot-2"))
	if len(r2.Owned()) != 0 {
		t.Fatalf("state of another boot adopted: %v", r2.Owned())
	}
	// Same boot: owned again, so a service gone from the config is deleted.
	r3 := newRec(t, k, ipvs.WithStateFile(path), ipvs.WithBootID("boot-1"))
	res := r3.Apply(desired(e(svcA, a1, a2))(t))
	mustClean(t, res)
	if got := opStrings(res.Ops); !slices.Equal(got, []string{"del-service UDP [2001:db8::10]:53", "del-service FWM 42 IPv4"}) {
		t.Fatalf("ops = %q", got)
	}
	if b, _ := os.ReadFile(path); !strings.Contains(string(b), `"services":["TCP 192.0.2.10:80"]`) {
		t.Fatalf("state not updated: %s", b)
	}

	if err := os.WriteFile(path, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ipvs.NewReconciler(k, ipvs.WithStateFile(path)); err == nil {
		t.Fatal("a corrupt state file was accepted")
	}
	// An unwritable state file is reported, the kernel is still programmed.
	bad := filepath.Join(dir, "unwritable.json")
	if err := os.Mkdir(bad+".tmp", 0o700); err != nil { // the temporary file cannot be written
		t.Fatal(err)
	}
	k2 := ipvstest.New()
	r4 := newRec(t, k2, ipvs.WithStateFile(bad))
	res = r4.Apply(d1(t))
	if res.Err == nil || len(res.Ops) != len(d1Ops) || len(res.Failed) != 0 {
		t.Fatalf("unwritable state: err %v, %d ops", res.Err, len(res.Ops))
	}
}
