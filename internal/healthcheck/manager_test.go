package healthcheck

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

const tick = 10 * time.Millisecond

func newManager(t *testing.T, opts Options) *Manager {
	t.Helper()
	m := NewManager(opts)
	t.Cleanup(func() { m.Close() })
	return m
}

func fastSpec(c CheckSpec, rise, fall int, initial State) Spec {
	return Spec{Check: c, Interval: tick, Timeout: tick, Rise: rise, Fall: fall, Initial: initial}
}

// step is an expected transition: at which call, from, to, and the
// consecutive count.
type step struct {
	call     int
	from, to State
	count    int
}

func steps(trs []Transition) []step {
	var out []step
	for _, tr := range trs {
		var call int
		fmt.Sscanf(tr.Detail, "call %d", &call)
		out = append(out, step{call, tr.From, tr.To, tr.ConsecutiveCount})
	}
	return out
}

func TestRiseFall(t *testing.T) {
	noLeak(t)
	U, D, X := StateUp, StateDown, StateUnknown
	tests := []struct {
		name       string
		rise, fall int
		initial    State
		pattern    string
		want       []step
	}{
		{
			name: "flapping, rise 2 fall 3", rise: 2, fall: 3, initial: X,
			//        1234567890123456
			pattern: "FFFSFSSFFSFFFSSS",
			want:    []step{{3, X, D, 3}, {7, D, U, 2}, {13, U, D, 3}, {15, D, U, 2}},
		},
		{
			name: "starts up, needs fall failures", rise: 2, fall: 3, initial: U,
			pattern: "FFSFFFS", // then S…
			want:    []step{{6, U, D, 3}, {8, D, U, 2}},
		},
		{
			name: "alpha: starts down, needs rise successes", rise: 3, fall: 2, initial: D,
			pattern: "SSFSSSF", // then F…
			want:    []step{{6, D, U, 3}, {8, U, D, 2}},
		},
		{
			name: "rise 1 fall 1 follows every change", rise: 1, fall: 1, initial: D,
			pattern: "SFSS",
			want:    []step{{1, D, U, 1}, {2, U, D, 1}, {3, D, U, 1}},
		},
		{
			name: "no transition without change", rise: 2, fall: 2, initial: U,
			pattern: "SSFSFSSSS",
			want:    nil,
		},
		{
			name: "unknown stays unknown while alternating", rise: 2, fall: 3, initial: X,
			pattern: "SFSFSFSFF", // then F…
			want:    []step{{10, X, D, 3}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m := newManager(t, Options{RoundJitter: -1})
			rec := record(m)
			f := newFake(seq(tc.pattern)...)
			if err := m.Add("t", fastSpec(fakeSpec{key: "f", c: f}, tc.rise, tc.fall, tc.initial)); err != nil {
				t.Fatal(err)
			}
			select {
			case <-f.exhausted:
			case <-time.After(5 * time.Second):
				t.Fatal("the script did not run out")
			}
			// The probe goes on with the last result of the pattern
			// (steady: at most one more transition).
			got := steps(rec.settle(100*time.Millisecond, 5*time.Second))
			if !slices.Equal(got, tc.want) {
				t.Errorf("transitions (call, from, to, count):\n got %v\nwant %v", got, tc.want)
			}
		})
	}
}

func TestDedup(t *testing.T) {
	noLeak(t)
	m := newManager(t, Options{})
	rec := record(m)
	var news atomic.Int64
	f := newFake(seq("SSSSSSFFFFFFFFFFFFFFFFSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSS")...)
	spec := fakeSpec{key: "shared", c: f, news: &news}
	// Same checker, different counting: one probe.
	if err := m.Add("svc1/rs", fastSpec(spec, 2, 3, StateUnknown)); err != nil {
		t.Fatal(err)
	}
	if err := m.Add("svc2/rs", fastSpec(spec, 1, 1, StateUnknown)); err != nil {
		t.Fatal(err)
	}
	if err := m.Add("svc2/rs", fastSpec(spec, 1, 1, StateUnknown)); !errors.Is(err, ErrDuplicateTarget) {
		t.Errorf("second Add of an id: %v; want ErrDuplicateTarget", err)
	}
	if n := news.Load(); n != 1 {
		t.Errorf("NewChecker called %d times; want 1", n)
	}
	if st := m.Stats(); st.Targets != 2 || st.Probes != 1 {
		t.Errorf("stats %+v; want 2 targets, 1 probe", st)
	}
	if st, _ := m.Status("svc1/rs"); st.Shared != 2 {
		t.Errorf("Shared %d; want 2", st.Shared)
	}
	waitFor(t, 5*time.Second, "the script to run out", func() bool { return f.calls.Load() >= int64(len(f.results)) })
	got := map[TargetID][]step{}
	for _, tr := range rec.settle(100*time.Millisecond, 5*time.Second) {
		got[tr.Target] = append(got[tr.Target], steps([]Transition{tr})...)
	}
	X, U, D := StateUnknown, StateUp, StateDown
	want := map[TargetID][]step{
		"svc1/rs": {{2, X, U, 2}, {9, U, D, 3}, {24, D, U, 2}},
		"svc2/rs": {{1, X, U, 1}, {7, U, D, 1}, {23, D, U, 1}},
	}
	for id, w := range want {
		if !slices.Equal(got[id], w) {
			t.Errorf("%s: transitions\n got %v\nwant %v", id, got[id], w)
		}
	}

	// Removing one target keeps the probe for the other.
	if err := m.Remove("svc1/rs"); err != nil {
		t.Fatal(err)
	}
	if st := m.Stats(); st.Targets != 1 || st.Probes != 1 {
		t.Errorf("after one Remove: stats %+v; want 1 target, 1 probe", st)
	}
	n := f.calls.Load()
	waitFor(t, 2*time.Second, "the probe to go on", func() bool { return f.calls.Load() > n+3 })

	// Removing the last one stops it.
	if err := m.Remove("svc2/rs"); err != nil {
		t.Fatal(err)
	}
	if err := m.Remove("svc2/rs"); !errors.Is(err, ErrUnknownTarget) {
		t.Errorf("second Remove: %v; want ErrUnknownTarget", err)
	}
	if st := m.Stats(); st.Targets != 0 || st.Probes != 0 {
		t.Errorf("after both Removes: stats %+v; want none", st)
	}
	time.Sleep(2 * tick)
	n = f.calls.Load()
	time.Sleep(10 * tick)
	if d := f.calls.Load() - n; d != 0 {
		t.Errorf("%d checks after the last Remove", d)
	}
}

func TestRemoveStopsProbingWithoutLeaks(t *testing.T) {
	noLeak(t)
	m := newManager(t, Options{})
	var fakes []*fakeChecker
	for i := range 200 {
		f := newFake()
		f.block = i%2 == 0 // half of them hang until their timeout
		fakes = append(fakes, f)
		spec := Spec{Check: fakeSpec{key: fmt.Sprint(i), c: f}, Interval: 50 * time.Millisecond, Timeout: 40 * time.Millisecond, Rise: 1, Fall: 1}
		if err := m.Add(TargetID(fmt.Sprint(i)), spec); err != nil {
			t.Fatal(err)
		}
	}
	// Drain transitions so nothing waits on the consumer.
	done := make(chan struct{})
	go func() {
		for range m.Transitions() {
		}
		close(done)
	}()
	waitFor(t, 5*time.Second, "every target to be probed twice", func() bool {
		for _, f := range fakes {
			if f.calls.Load() < 2 {
				return false
			}
		}
		return true
	})
	for i := range fakes {
		if err := m.Remove(TargetID(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	// Removal cancels the hung checks at once: nothing stays in flight.
	waitFor(t, time.Second, "no check in flight", func() bool { return m.Stats().InFlight == 0 })
	var calls int64
	for _, f := range fakes {
		calls += f.calls.Load()
	}
	time.Sleep(200 * time.Millisecond)
	var after int64
	for _, f := range fakes {
		after += f.calls.Load()
	}
	if after != calls {
		t.Errorf("%d checks after Remove", after-calls)
	}
	m.Close()
	<-done
}

func TestSlowProbeDelaysOnlyItself(t *testing.T) {
	noLeak(t)
	m := newManager(t, Options{})
	slow := newFake()
	slow.block = true
	fast := newFake()
	if err := m.Add("slow", Spec{Check: fakeSpec{key: "slow", c: slow}, Interval: 500 * time.Millisecond, Timeout: 500 * time.Millisecond, Rise: 1, Fall: 1}); err != nil {
		t.Fatal(err)
	}
	if err := m.Add("fast", fastSpec(fakeSpec{key: "fast", c: fast}, 1, 1, StateUnknown)); err != nil {
		t.Fatal(err)
	}
	go func() {
		for range m.Transitions() {
		}
	}()
	time.Sleep(time.Second)
	// 100 rounds of 10ms in a second; allow for a loaded machine.
	if n := fast.calls.Load(); n < 60 {
		t.Errorf("the fast target was probed %d times in 1s (interval 10ms) next to a hanging one", n)
	}
	if n := slow.calls.Load(); n < 1 || n > 3 {
		t.Errorf("the hanging target was probed %d times in 1s (interval and timeout 500ms)", n)
	}
	st, _ := m.Status("slow")
	if st.Last.OK || !strings.Contains(st.Last.Detail, "deadline exceeded") {
		t.Errorf("slow target's last result %+v", st.Last)
	}
}

// TestFixedRate: rounds start every interval however long each check
// takes (up to the timeout), so detection takes fall × interval + timeout,
// not fall × (interval + check time).
func TestFixedRate(t *testing.T) {
	noLeak(t)
	m := newManager(t, Options{})
	slow := newFake()
	slow.sleep = 35 * time.Millisecond
	spec := Spec{Check: fakeSpec{key: "slow", c: slow}, Interval: 40 * time.Millisecond, Timeout: 40 * time.Millisecond, Rise: 1, Fall: 1}
	if err := m.Add("slow", spec); err != nil {
		t.Fatal(err)
	}
	go func() {
		for range m.Transitions() {
		}
	}()
	waitFor(t, 2*time.Second, "the first round", func() bool { return slow.calls.Load() > 0 })
	n0 := slow.calls.Load()
	time.Sleep(time.Second)
	// 25 rounds a second at a fixed rate; 13 if each waited for the
	// previous check (fixed delay).
	if n := slow.calls.Load() - n0; n < 20 || n > 27 {
		t.Errorf("%d rounds in 1s at an interval of 40ms with 35ms checks; want about 25", n)
	}
}

func TestFirstProbesSpread(t *testing.T) {
	noLeak(t)
	m := newManager(t, Options{})
	const n = 1000
	fakes := make([]*fakeChecker, n)
	start := time.Now()
	for i := range fakes {
		fakes[i] = newFake()
		spec := Spec{Check: fakeSpec{key: fmt.Sprint(i), c: fakes[i]}, Interval: time.Second, Timeout: time.Second, Rise: 1, Fall: 1}
		if err := m.Add(TargetID(fmt.Sprint(i)), spec); err != nil {
			t.Fatal(err)
		}
	}
	added := time.Since(start)
	go func() {
		for range m.Transitions() {
		}
	}()
	waitFor(t, 3*time.Second, "every target's first probe", func() bool {
		for _, f := range fakes {
			if f.first.Load() == 0 {
				return false
			}
		}
		return true
	})
	buckets := map[int64]int{}
	var lo, hi time.Duration = time.Hour, 0
	for _, f := range fakes {
		d := time.Duration(f.first.Load() - start.UnixNano())
		lo, hi = min(lo, d), max(hi, d)
		buckets[int64(d/(10*time.Millisecond))]++
	}
	var biggest int
	for _, c := range buckets {
		biggest = max(biggest, c)
	}
	t.Logf("first probes of %d targets (interval 1s, added in %v): from %v to %v, %d of 100 10ms-buckets used, fullest holds %d",
		n, added, lo.Round(time.Millisecond), hi.Round(time.Millisecond), len(buckets), biggest)
	// Uniform over 1s: ~10 per 10ms bucket.
	if biggest > 60 {
		t.Errorf("%d first probes fell in one 10ms bucket; want them spread over the interval", biggest)
	}
	if hi-lo < 800*time.Millisecond {
		t.Errorf("first probes spread over %v only; want most of the 1s interval", hi-lo)
	}
}

func TestTransitionsCoalesceWhenConsumerIsSlow(t *testing.T) {
	const flips = 200 // results alternating S, F: one transition each
	noLeak(t)
	m := newManager(t, Options{})
	f := newFake(seq(strings.Repeat("SF", flips/2))...)
	if err := m.Add("flappy", fastSpec(fakeSpec{key: "f", c: f}, 1, 1, StateDown)); err != nil {
		t.Fatal(err)
	}
	// Nobody reads: the probe must go on regardless.
	waitFor(t, 10*time.Second, "the flapping script to run out", func() bool { return f.calls.Load() >= flips })
	time.Sleep(5 * tick) // the last scripted result is recorded
	st := m.Stats()
	// The consumer finally reads. The queue's goroutine has been holding
	// the first transition (Down→Up at call 1) since it happened; behind it
	// waits one transition into which every later one was merged: from Up
	// to the current state (Down: the script ends with failures).
	for i, want := range []struct {
		from, to  State
		coalesced int
	}{{StateDown, StateUp, 0}, {StateUp, StateDown, int(st.Transitions) - 2}} {
		select {
		case tr := <-m.Transitions():
			if tr.From != want.from || tr.To != want.to || tr.Coalesced != want.coalesced {
				t.Errorf("transition %d: %v→%v coalesced %d; want %v→%v coalesced %d",
					i, tr.From, tr.To, tr.Coalesced, want.from, want.to, want.coalesced)
			}
		case <-time.After(time.Second):
			t.Fatalf("transition %d not delivered", i)
		}
	}
	if trs := collect(t, m.Transitions(), 50*time.Millisecond, time.Second); len(trs) != 0 {
		t.Errorf("more transitions: %+v", trs)
	}
	if st := m.Stats(); st.Transitions != flips || st.Coalesced != flips-2 {
		t.Errorf("stats %+v; want %d transitions, %d coalesced", st, flips, flips-2)
	}
}

func TestQueueMerges(t *testing.T) {
	q := newQueue()
	defer q.close()
	X, U, D := StateUnknown, StateUp, StateDown
	q.push(Transition{Target: "a", From: X, To: U, Detail: "1"})
	q.push(Transition{Target: "b", From: X, To: D, Detail: "2"})
	q.push(Transition{Target: "a", From: U, To: D, Detail: "3"})
	q.push(Transition{Target: "c", From: X, To: U, Detail: "4"})
	q.push(Transition{Target: "c", From: U, To: D, Detail: "5"})
	q.push(Transition{Target: "c", From: D, To: U, Detail: "6", HasWeight: true, Weight: 3})
	q.push(Transition{Target: "d", From: X, To: U})
	q.drop("d")
	go q.run()
	want := []Transition{
		{Target: "a", From: X, To: D, Detail: "3", Coalesced: 1},
		{Target: "b", From: X, To: D, Detail: "2"},
		{Target: "c", From: X, To: U, Detail: "6", Coalesced: 2, HasWeight: true, Weight: 3},
	}
	for _, w := range want {
		select {
		case got := <-q.out:
			if got != w {
				t.Errorf("got %+v\nwant %+v", got, w)
			}
		case <-time.After(time.Second):
			t.Fatalf("missing %+v", w)
		}
	}
	select {
	case got := <-q.out:
		t.Errorf("unexpected %+v (a dropped target's transition?)", got)
	case <-time.After(50 * time.Millisecond):
	}
}

func TestDynamicWeightChanges(t *testing.T) {
	noLeak(t)
	m := newManager(t, Options{})
	rec := record(m)
	w := func(n int) Result { return Result{OK: true, Weight: n, HasWeight: true} }
	f := newFake(w(5), w(5), w(7), w(7), Result{OK: true}, Result{}, w(9))
	if err := m.Add("exec", fastSpec(fakeSpec{key: "f", c: f}, 1, 1, StateDown)); err != nil {
		t.Fatal(err)
	}
	<-f.exhausted
	type ev struct {
		call         int
		to           State
		weight       int
		has, changed bool
	}
	var got []ev
	for _, tr := range rec.settle(100*time.Millisecond, 5*time.Second) {
		var call int
		fmt.Sscanf(tr.Detail, "call %d", &call)
		got = append(got, ev{call, tr.To, tr.Weight, tr.HasWeight, tr.WeightChanged})
	}
	want := []ev{
		{1, StateUp, 5, true, false},
		{3, StateUp, 7, true, true},
		{5, StateUp, 0, false, true}, // exit 0: back to the configured weight
		{6, StateDown, 0, false, false},
		{7, StateUp, 9, true, false},
	}
	if !slices.Equal(got, want) {
		t.Errorf("events\n got %+v\nwant %+v", got, want)
	}
}

func TestUpdate(t *testing.T) {
	noLeak(t)
	m := newManager(t, Options{})
	var news atomic.Int64
	f1 := newFake()
	spec := fastSpec(fakeSpec{key: "one", c: f1, news: &news}, 1, 1, StateUnknown)
	if err := m.Add("t", spec); err != nil {
		t.Fatal(err)
	}
	tr := <-m.Transitions()
	if tr.To != StateUp {
		t.Fatalf("first transition %+v", tr)
	}
	// Rise/fall only: same probe, same state, no transition.
	spec.Rise, spec.Fall = 5, 5
	if err := m.Update("t", spec); err != nil {
		t.Fatal(err)
	}
	if news.Load() != 1 || m.Stats().Probes != 1 {
		t.Errorf("an Update of rise/fall built a new probe")
	}
	// A new checker: the target moves, keeps its state; the old probe stops.
	f2 := newFake()
	spec.Check = fakeSpec{key: "two", c: f2, news: &news}
	if err := m.Update("t", spec); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, "the new probe to run", func() bool { return f2.calls.Load() > 3 })
	n := f1.calls.Load()
	time.Sleep(5 * tick)
	if f1.calls.Load() != n {
		t.Error("the old probe still runs after the target moved")
	}
	if st, _ := m.Status("t"); st.State != StateUp {
		t.Errorf("state %v after the move; want up (kept)", st.State)
	}
	if trs := collect(t, m.Transitions(), 50*time.Millisecond, time.Second); len(trs) != 0 {
		t.Errorf("transitions after Update of a healthy target: %+v", trs)
	}
	if err := m.Update("nope", spec); !errors.Is(err, ErrUnknownTarget) {
		t.Errorf("Update of an unknown id: %v", err)
	}
	bad := spec
	bad.Timeout = 2 * bad.Interval
	if err := m.Update("t", bad); err == nil {
		t.Error("Update with timeout > interval accepted")
	}
}

func TestSpecValidation(t *testing.T) {
	m := newManager(t, Options{})
	ok := fastSpec(fakeSpec{key: "x", c: newFake()}, 1, 1, StateUnknown)
	for name, mut := range map[string]func(*Spec){
		"no check":           func(s *Spec) { s.Check = nil },
		"zero interval":      func(s *Spec) { s.Interval = 0 },
		"zero timeout":       func(s *Spec) { s.Timeout = 0 },
		"timeout > interval": func(s *Spec) { s.Timeout = s.Interval + 1 },
		"rise 0":             func(s *Spec) { s.Rise = 0 },
		"fall 0":             func(s *Spec) { s.Fall = 0 },
		"bad initial":        func(s *Spec) { s.Initial = 7 },
		"bad checker":        func(s *Spec) { s.Check = TCPSpec{} },
	} {
		s := ok
		mut(&s)
		if err := m.Add(TargetID(name), s); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if st := m.Stats(); st.Targets != 0 || st.Probes != 0 {
		t.Errorf("failed Adds left %+v", st)
	}
	m.Close()
	if err := m.Add("late", ok); !errors.Is(err, ErrClosed) {
		t.Errorf("Add after Close: %v", err)
	}
	if _, open := <-m.Transitions(); open {
		t.Error("Transitions not closed by Close")
	}
}

type panicky struct{}

func (panicky) Check(context.Context) Result { panic("boom") }

func TestCheckerPanicIsAFailure(t *testing.T) {
	noLeak(t)
	m := newManager(t, Options{})
	spec := fastSpec(panicSpec{}, 1, 1, StateUp)
	if err := m.Add("p", spec); err != nil {
		t.Fatal(err)
	}
	select {
	case tr := <-m.Transitions():
		if tr.To != StateDown || !strings.Contains(tr.Detail, "checker panicked: boom") {
			t.Errorf("transition %+v", tr)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("no transition")
	}
}

type panicSpec struct{}

func (panicSpec) Key() string                      { return "panic" }
func (panicSpec) NewChecker(*Env) (Checker, error) { return panicky{}, nil }

// TestManagerHTTP runs the whole path with a real checker: a server that
// turns unhealthy and back.
func TestManagerHTTP(t *testing.T) {
	noLeak(t)
	var healthy atomic.Bool
	healthy.Store(true)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !healthy.Load() {
			w.WriteHeader(http.StatusInternalServerError)
		}
		io.WriteString(w, "ok")
	}))
	t.Cleanup(srv.Close)
	m := newManager(t, Options{})
	spec := Spec{Check: HTTPSpec{Addr: addrPort(t, srv.Listener.Addr().String())},
		Interval: 20 * time.Millisecond, Timeout: 20 * time.Millisecond, Rise: 2, Fall: 2}
	if err := m.Add("web", spec); err != nil {
		t.Fatal(err)
	}
	next := func() Transition {
		t.Helper()
		select {
		case tr := <-m.Transitions():
			return tr
		case <-time.After(3 * time.Second):
			t.Fatal("no transition")
		}
		return Transition{}
	}
	if tr := next(); tr.From != StateUnknown || tr.To != StateUp || tr.ConsecutiveCount != 2 {
		t.Errorf("first transition %+v", tr)
	}
	healthy.Store(false)
	if tr := next(); tr.To != StateDown || tr.Detail != "status 500, expected 200-299" {
		t.Errorf("second transition %+v", tr)
	}
	healthy.Store(true)
	if tr := next(); tr.To != StateUp {
		t.Errorf("third transition %+v", tr)
	}
}
