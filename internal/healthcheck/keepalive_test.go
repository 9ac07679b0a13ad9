package healthcheck

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestManagerHTTPKeepAlive runs many kept-alive HTTP probes through a
// Manager (whose Close interrupts the exchanges in flight, and whose rounds
// have a roundCtx): every probe comes up over one connection each; a server that hangs fails its own probes at
// their timeout without delaying the others; connections the server
// closed are retried, not failures; a server that answers garbage or
// resets fails; removal and Close leave nothing behind.
func TestManagerHTTPKeepAlive(t *testing.T) {
	noLeak(t)
	var opened atomic.Int64
	var hang atomic.Bool
	release := make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	mux.HandleFunc("/hang", func(w http.ResponseWriter, r *http.Request) {
		if hang.Load() {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
		io.WriteString(w, "ok")
	})
	srv := httptest.NewUnstartedServer(mux)
	srv.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			opened.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) })
	addr := addrPort(t, srv.Listener.Addr().String())

	m := newManager(t, Options{Quantum: 2 * time.Millisecond})
	rec := record(m)
	const n, nHang = 40, 5
	const interval, timeout = 100 * time.Millisecond, 80 * time.Millisecond
	id := func(i int) TargetID { return TargetID(fmt.Sprint("t", i)) }
	for i := range n {
		path := fmt.Sprintf("/ok?n=%d", i)
		if i < nHang {
			path = fmt.Sprintf("/hang?n=%d", i)
		}
		spec := Spec{Check: HTTPSpec{Addr: addr, Path: path, KeepAlive: true},
			Interval: interval, Timeout: timeout, Rise: 1, Fall: 1, Initial: StateUnknown}
		if err := m.Add(id(i), spec); err != nil {
			t.Fatal(err)
		}
	}
	state := func(i int) TargetStatus { st, _ := m.Status(id(i)); return st }
	// in reports whether targets lo..hi-1 are all in state want.
	in := func(lo, hi int, want State) func() bool {
		return func() bool {
			for i := lo; i < hi; i++ {
				if state(i).State != want {
					return false
				}
			}
			return true
		}
	}
	waitFor(t, 5*time.Second, "every target up", in(0, n, StateUp))
	s0 := m.Stats()
	time.Sleep(5 * interval)
	s1 := m.Stats()
	if s1.Checks-s0.Checks < 3*n || s1.Failures != s0.Failures {
		t.Errorf("healthy: %d checks, %d failures in 5 intervals", s1.Checks-s0.Checks, s1.Failures-s0.Failures)
	}
	if o := opened.Load(); o != n {
		t.Errorf("%d connections opened for %d kept-alive probes", o, n)
	}

	// Some servers hang: their probes fail at their timeout; the others
	// stay up, answered in far less than the timeout.
	hang.Store(true)
	waitFor(t, 5*time.Second, "the hanging targets down", in(0, nHang, StateDown))
	s0 = m.Stats()
	time.Sleep(5 * interval)
	for i := range nHang {
		if st := state(i); !strings.Contains(st.Last.Detail, "timeout after") || st.Last.Duration < timeout || st.Last.Duration > timeout+timeMargin {
			t.Errorf("hanging target %d: %q after %v", i, st.Last.Detail, st.Last.Duration)
		}
	}
	for i := nHang; i < n; i++ {
		if st := state(i); st.State != StateUp || st.Last.Duration > timeout/2 {
			t.Errorf("healthy target %d, beside hanging ones: %v, last %q after %v", i, st.State, st.Last.Detail, st.Last.Duration)
		}
	}
	hang.Store(false)

	// The server closes every idle connection: no failure, new ones.
	waitFor(t, 5*time.Second, "every target up again", in(0, n, StateUp))
	before := opened.Load()
	s0 = m.Stats()
	srv.CloseClientConnections()
	time.Sleep(3 * interval)
	s1 = m.Stats()
	if s1.Failures != s0.Failures {
		t.Errorf("%d failures after the server closed the kept connections", s1.Failures-s0.Failures)
	}
	if opened.Load() < before+n-nHang {
		t.Errorf("%d new connections after the server closed them", opened.Load()-before)
	}

	// Removing targets with rounds in flight, then Close: no leak (noLeak),
	// no round left running.
	for i := 0; i < n; i += 2 {
		if err := m.Remove(id(i)); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(2 * interval)
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	<-rec.done
	if s := m.Stats(); s.InFlight != 0 {
		t.Errorf("%d checks in flight after Close", s.InFlight)
	}
}
