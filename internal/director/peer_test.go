package director

import (
	"context"
	"log/slog"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/hadirector/hadirector/internal/connsync"
	"github.com/hadirector/hadirector/internal/control"
	"github.com/hadirector/hadirector/internal/healthcheck"
	"github.com/hadirector/hadirector/internal/ipvs"
)

// TestPeerFollowsMasterAndSharesOverrides: a backup programs the master's
// verdicts while the master runs the same services, its own otherwise;
// operator overrides travel both ways and the newer one wins.
func TestPeerFollowsMasterAndSharesOverrides(t *testing.T) {
	src := lvsHead + webService
	r := startLVS(t, src, time.Hour, nil)
	ctx := context.Background()
	epoch := parse(t, src).ServicesEpoch()
	rs1, rs2, rs3 := netip.MustParseAddrPort("198.51.100.1:80"), netip.MustParseAddrPort("198.51.100.2:80"), netip.MustParseAddrPort("198.51.100.3:80")
	const key = "tcp/192.0.2.100:80"
	const svc = "TCP 192.0.2.100:80: "
	r.waitKernel(t, svc+"198.51.100.1:80=1 198.51.100.2:80=2 198.51.100.3:80=3")

	master := func(entries ...connsync.PeerEntry) *connsync.PeerState {
		return &connsync.PeerState{Epoch: epoch, Master: true, Conns: 10, Entries: entries}
	}
	// The master finds rs2 down: this backup's table says so too, though
	// its own probe finds rs2 up.
	r.e.SetPeer(master(connsync.PeerEntry{Service: key, Real: rs2, Down: true}))
	r.waitKernel(t, svc+"198.51.100.1:80=1 198.51.100.2:80=0 198.51.100.3:80=3")

	// Its own probe fails rs3: the table keeps the master's view (rs3 up)
	// and the peer hears of this node's verdict.
	r.h.ch <- healthcheck.Transition{Target: targetID(key, rs3), From: healthcheck.StateUp, To: healthcheck.StateDown, At: time.Now()}
	// The engine takes transitions through a forwarder (waiter.go): the
	// send above may complete before the engine has the transition.
	var ps connsync.PeerState
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(time.Millisecond) {
		var err error
		if ps, err = r.e.PeerState(ctx); err != nil {
			t.Fatal(err)
		}
		if len(ps.Entries) > 0 || time.Now().After(deadline) {
			break
		}
	}
	if len(ps.Entries) != 1 || ps.Entries[0].Real != rs3 || !ps.Entries[0].Down || ps.Epoch != epoch || ps.Master {
		t.Fatalf("PeerState = %+v; want only rs3 down, epoch %x, not master", ps, epoch)
	}
	r.waitKernel(t, svc+"198.51.100.1:80=1 198.51.100.2:80=0 198.51.100.3:80=3")

	// A master with other services (another epoch) is not followed.
	other := master(connsync.PeerEntry{Service: key, Real: rs2, Down: true})
	other.Epoch++
	r.e.SetPeer(other)
	r.waitKernel(t, svc+"198.51.100.1:80=1 198.51.100.2:80=2 198.51.100.3:80=0")
	// Nor is a peer that is not master, nor one no longer heard.
	r.e.SetPeer(master(connsync.PeerEntry{Service: key, Real: rs2, Down: true}))
	r.waitKernel(t, svc+"198.51.100.1:80=1 198.51.100.2:80=0 198.51.100.3:80=3")
	r.e.SetPeer(nil)
	r.waitKernel(t, svc+"198.51.100.1:80=1 198.51.100.2:80=2 198.51.100.3:80=0")

	// Overrides: the peer's drain of rs1 (set now) is adopted.
	t0 := time.Now()
	r.e.SetPeer(&connsync.PeerState{Epoch: epoch, Entries: []connsync.PeerEntry{
		{Service: key, Real: rs1, Drained: true, AdminAt: t0.UnixNano()}}})
	r.waitKernel(t, svc+"198.51.100.1:80=0 198.51.100.2:80=2 198.51.100.3:80=0")
	ps, _ = r.e.PeerState(ctx)
	if e := find(ps.Entries, rs1); e == nil || !e.Drained || e.AdminAt != t0.UnixNano() {
		t.Fatalf("PeerState after adopting the drain: %+v; want rs1 drained at the peer's time", ps.Entries)
	}
	// This node's operator enables rs1 later: an older setting from the
	// peer does not undo that, and the enable travels (AdminAt set).
	if _, err := r.e.Admin(ctx, control.AdminRequest{Op: AdminEnable, Service: "web", Real: rs1.String()}); err != nil {
		t.Fatal(err)
	}
	r.e.SetPeer(&connsync.PeerState{Epoch: epoch, Entries: []connsync.PeerEntry{
		{Service: key, Real: rs1, Drained: true, AdminAt: t0.UnixNano()}}})
	r.waitKernel(t, svc+"198.51.100.1:80=1 198.51.100.2:80=2 198.51.100.3:80=0")
	ps, _ = r.e.PeerState(ctx)
	if e := find(ps.Entries, rs1); e == nil || e.Drained || e.HasWeight || e.AdminAt <= t0.UnixNano() {
		t.Fatalf("PeerState after enable: %+v; want rs1 cleared, stamped after the peer's drain", ps.Entries)
	}
	// A newer weight from the peer wins.
	r.e.SetPeer(&connsync.PeerState{Epoch: epoch, Entries: []connsync.PeerEntry{
		{Service: key, Real: rs1, Weight: 9, HasWeight: true, AdminAt: time.Now().Add(time.Second).UnixNano()}}})
	r.waitKernel(t, svc+"198.51.100.1:80=9 198.51.100.2:80=2 198.51.100.3:80=0")
}

func find(es []connsync.PeerEntry, a netip.AddrPort) *connsync.PeerEntry {
	for i := range es {
		if es[i].Real == a {
			return &es[i]
		}
	}
	return nil
}

// gatedProgrammer applies nothing until the test lets it.
type gatedProgrammer struct {
	gate chan struct{}
}

func (g *gatedProgrammer) Apply(ipvs.Table) ipvs.Result        { <-g.gate; return ipvs.Result{} }
func (g *gatedProgrammer) ApplyChanges(ipvs.Table) ipvs.Result { <-g.gate; return ipvs.Result{} }

// TestWaitApplied: a takeover's wait for the table ends when the worker
// has applied every change made before it, or at its bound.
func TestWaitApplied(t *testing.T) {
	g := &gatedProgrammer{gate: make(chan struct{})}
	w := newIPVSWorker(g, time.Hour, slog.New(slog.DiscardHandler))
	svc := ipvs.Service{Protocol: ipvs.TCP, Addr: netip.MustParseAddrPort("192.0.2.1:80"), Scheduler: "rr"}
	w.set(svc, nil) // before the worker starts: its first run covers it
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.run(ctx); close(done) }()
	defer func() { cancel(); close(g.gate); <-done }()
	if left := w.waitApplied(30 * time.Millisecond); left == 0 {
		t.Fatal("waitApplied returned 0 while the kernel had not been written")
	}
	g.gate <- struct{}{} // the first (full) run ends
	res := make(chan uint64)
	go func() { res <- w.waitApplied(5 * time.Second) }()
	select {
	case left := <-res:
		if left != 0 {
			t.Fatalf("waitApplied = %d after the run that covered the change", left)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("waitApplied did not return after the run")
	}
}

// slowProgrammer takes its time over every run and records when each ended.
type slowProgrammer struct {
	delay time.Duration
	log   func(string)
}

func (p *slowProgrammer) Apply(ipvs.Table) ipvs.Result {
	time.Sleep(p.delay)
	p.log("ipvs applied")
	return ipvs.Result{}
}
func (p *slowProgrammer) ApplyChanges(t ipvs.Table) ipvs.Result { return p.Apply(t) }

// orderedVIPs records Take in the same log.
type orderedVIPs struct{ log func(string) }

func (v orderedVIPs) Take() error     { v.log("vips taken"); return nil }
func (v orderedVIPs) Release() error  { return nil }
func (v orderedVIPs) Announce() error { return nil }

// TestTakeoverOrder: a node that becomes master adds its VIPs only after
// the IPVS worker has applied the table (within ConvergeWait); with a
// bound shorter than the kernel's run, it does not wait (so the test can
// tell the two apart).
func TestTakeoverOrder(t *testing.T) {
	for _, tc := range []struct {
		name  string
		wait  time.Duration
		first string
	}{
		{"waits for the table", 2 * time.Second, "ipvs applied"},
		{"bound shorter than the kernel", time.Millisecond, "vips taken"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			var events []string
			log := func(s string) { mu.Lock(); events = append(events, s); mu.Unlock() }
			n := &fakeNet{engines: map[netip.Addr]*Engine{}}
			src := netip.MustParseAddr("10.0.0.1")
			r := runEngine(t, n, src, "lb1", pairCluster+`
[[virtual_service]]
address = "10.0.0.100:80"
[[virtual_service.real_server]]
address = "10.0.0.21:80"
`, Options{
				Instances:    map[string]InstanceIO{"VI_1": {Socket: &fakeSocket{net: n, src: src}, VIPs: orderedVIPs{log}}},
				IPVS:         &slowProgrammer{delay: 300 * time.Millisecond, log: log},
				ConvergeWait: tc.wait,
			})
			waitFor(t, "lb1 master", func() bool { return stateOf(t, r) == "MASTER" })
			waitFor(t, "the table applied and the VIPs taken", func() bool {
				mu.Lock()
				defer mu.Unlock()
				return len(events) >= 2
			})
			mu.Lock()
			defer mu.Unlock()
			if events[0] != tc.first {
				t.Fatalf("events %v; want %q first", events, tc.first)
			}
		})
	}
}
