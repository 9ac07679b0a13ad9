package healthcheck

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	if os.Getenv(benchServerEnv) != "" {
		runBenchServer() // the child process of TestProbeScale
		return
	}
	os.Exit(m.Run())
}

// noLeak fails the test if goroutines started during it are still running
// at its end (after the Cleanups registered later, which run first).
func noLeak(t *testing.T) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(3 * time.Second)
		for {
			n := runtime.NumGoroutine()
			if n <= before {
				return
			}
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				buf = buf[:runtime.Stack(buf, true)]
				t.Errorf("goroutine leak: %d running, %d before the test\n%s", n, before, buf)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// runCheck runs one check with a timeout and reports how long it took.
func runCheck(t *testing.T, c Checker, timeout time.Duration) (Result, time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	start := time.Now()
	res := c.Check(ctx)
	return res, time.Since(start)
}

func newChecker(t *testing.T, s CheckSpec, env *Env) Checker {
	t.Helper()
	c, err := s.NewChecker(env)
	if err != nil {
		t.Fatalf("NewChecker(%s): %v", s.Key(), err)
	}
	return c
}

// wantResult compares a result with the expected outcome and detail
// substring.
func wantResult(t *testing.T, res Result, ok bool, detail string) {
	t.Helper()
	if res.OK != ok || !strings.Contains(res.Detail, detail) {
		t.Errorf("result OK=%v detail %q; want OK=%v detail containing %q", res.OK, res.Detail, ok, detail)
	}
}

// timeMargin is how much later than its timeout a check may return: the
// scheduling slack of a loaded 2-CPU machine under -race.
const timeMargin = 150 * time.Millisecond

func wantWithin(t *testing.T, took, timeout time.Duration) {
	t.Helper()
	if took > timeout+timeMargin {
		t.Errorf("took %v; want at most the timeout %v + %v", took, timeout, timeMargin)
	}
}

// fakeChecker returns scripted results: results[i] for call i+1, then the
// last one forever. Each result's Detail is "call N".
type fakeChecker struct {
	mu      sync.Mutex
	results []Result
	calls   atomic.Int64
	first   atomic.Int64 // UnixNano of the first call
	// block, if set, makes Check wait for the context.
	block bool
	// sleep, if set, makes each check take that long (or until ctx ends).
	sleep time.Duration
	// exhausted is closed after the last scripted call.
	exhausted chan struct{}
	once      sync.Once
}

func newFake(results ...Result) *fakeChecker {
	return &fakeChecker{results: results, exhausted: make(chan struct{})}
}

// seq builds results from a pattern like "FFS-S": S success, F failure
// (other characters are ignored).
func seq(pattern string) []Result {
	var out []Result
	for _, c := range pattern {
		switch c {
		case 'S':
			out = append(out, Result{OK: true})
		case 'F':
			out = append(out, Result{OK: false})
		}
	}
	return out
}

func (f *fakeChecker) Check(ctx context.Context) Result {
	n := f.calls.Add(1)
	f.first.CompareAndSwap(0, time.Now().UnixNano())
	if f.block {
		<-ctx.Done()
		return Result{Detail: "blocked until " + ctx.Err().Error()}
	}
	if f.sleep > 0 {
		select {
		case <-time.After(f.sleep):
		case <-ctx.Done():
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.results) == 0 {
		return Result{OK: true, Detail: fmt.Sprintf("call %d", n)}
	}
	i := int(n) - 1
	if i >= len(f.results)-1 {
		f.once.Do(func() { close(f.exhausted) })
		i = min(i, len(f.results)-1)
	}
	r := f.results[i]
	r.Detail = fmt.Sprintf("call %d", n)
	return r
}

// fakeSpec is a CheckSpec whose checker is a given fake. Specs with the
// same key share a probe, as real ones do.
type fakeSpec struct {
	key  string
	c    *fakeChecker
	news *atomic.Int64 // counts NewChecker calls, if set
}

func (s fakeSpec) Key() string { return "fake|" + s.key }

func (s fakeSpec) NewChecker(*Env) (Checker, error) {
	if s.news != nil {
		s.news.Add(1)
	}
	return s.c, nil
}

// collect reads transitions until the channel has been quiet for quiet, or
// until limit passes.
func collect(t *testing.T, ch <-chan Transition, quiet, limit time.Duration) []Transition {
	t.Helper()
	var out []Transition
	end := time.After(limit)
	for {
		select {
		case tr, ok := <-ch:
			if !ok {
				return out
			}
			out = append(out, tr)
		case <-time.After(quiet):
			return out
		case <-end:
			return out
		}
	}
}

// waitFor polls cond until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func testContext(t *testing.T) (context.Context, context.CancelFunc) {
	return context.WithCancel(t.Context())
}

// recorder reads a Manager's transitions as they come, as a consumer that
// keeps up would.
type recorder struct {
	mu   sync.Mutex
	trs  []Transition
	last time.Time
	done chan struct{}
}

func record(m *Manager) *recorder {
	r := &recorder{done: make(chan struct{}), last: time.Now()}
	go func() {
		defer close(r.done)
		for tr := range m.Transitions() {
			r.mu.Lock()
			r.trs = append(r.trs, tr)
			r.last = time.Now()
			r.mu.Unlock()
		}
	}()
	return r
}

// settle waits until no transition has come for quiet (counted from the
// call at the earliest; at most limit) and returns all received so far.
func (r *recorder) settle(quiet, limit time.Duration) []Transition {
	start := time.Now()
	end := start.Add(limit)
	for time.Now().Before(end) {
		r.mu.Lock()
		idle := time.Since(r.last)
		r.mu.Unlock()
		idle = min(idle, time.Since(start))
		if idle >= quiet {
			break
		}
		time.Sleep(quiet / 10)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Transition(nil), r.trs...)
}
