package main

import (
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hadirector/hadirector/internal/config"
	"github.com/hadirector/hadirector/internal/control"
	"github.com/hadirector/hadirector/internal/heartbeat"
)

// TestNodeLoss: the probe runs once when the last link goes down, never
// while one is up; a peer that answers ARP is not declared lost; one that
// does not is, with every address it has. (ProbeARP itself is tested in
// namespaces in internal/heartbeat.)
func TestNodeLoss(t *testing.T) {
	cfg, err := config.Parse("t.toml", []byte(`
[cluster]
name = "t"
[[node]]
name = "lb1"
[[node.interface]]
name = "eth0"
addresses = ["10.0.0.1/24"]
[[node.interface]]
name = "eth1"
addresses = ["10.1.0.1/24"]
[[node]]
name = "lb2"
[[node.interface]]
name = "eth0"
addresses = ["10.0.0.2/24"]
[[node.interface]]
name = "eth1"
addresses = ["10.1.0.2/24"]
[[link]]
name = "a"
type = "udp"
interface = "eth1"
key_file = "/dev/null"
[[link]]
name = "b"
type = "udp"
interface = "eth1"
port = 700
key_file = "/dev/null"
[[vrrp_instance]]
name = "VI_1"
vrid = 51
interface = "eth0"
vips = ["10.0.0.100/24"]
links = ["a", "b"]
`))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var logs syncBuffer // main_test.go
	// logged counts the log lines holding each of these.
	logged := func() (failed, late int) {
		s := logs.String()
		return strings.Count(s, "the links failed"), strings.Count(s, "frames came late")
	}
	var probes []string
	var lost [][]netip.Addr
	alive := true
	var probeErr error
	rx := map[string]time.Time{}
	lastRx := func(name string) time.Time { mu.Lock(); defer mu.Unlock(); return rx[name] }
	n := newNodeLoss(cfg, cfg.Node("lb2"), []string{"a", "b"}, lastRx, func(a []netip.Addr) {
		mu.Lock()
		lost = append(lost, a)
		mu.Unlock()
	}, slog.New(slog.NewTextHandler(&logs, nil)))
	n.probe = func(ifname string, target netip.Addr, tries int, wait time.Duration) (bool, error) {
		mu.Lock()
		defer mu.Unlock()
		probes = append(probes, ifname+" "+target.String())
		return alive, probeErr
	}
	wait := func() {
		t.Helper()
		deadline := time.Now().Add(2 * time.Second)
		for {
			n.mu.Lock()
			busy := n.probing
			n.mu.Unlock()
			if !busy {
				return
			}
			if time.Now().After(deadline) {
				t.Fatal("probe never finished")
			}
			time.Sleep(time.Millisecond)
		}
	}
	// stat checks the record status shows.
	stat := func(what string, want control.NodeLossStatus) {
		t.Helper()
		got := *n.status()
		if want.Probes > 0 && (got.LastProbe.IsZero() || time.Since(got.LastProbe) > time.Minute) {
			t.Errorf("%s: last probe at %v", what, got.LastProbe)
		}
		got.LastProbe = time.Time{}
		if got != want {
			t.Errorf("%s: status %+v, want %+v", what, got, want)
		}
	}
	stat("at start", control.NodeLossStatus{})
	n.health(heartbeat.LinkHealth{Name: "a", Up: false})
	wait()
	if len(probes) != 0 {
		t.Fatalf("probed while link b was up: %v", probes)
	}
	n.health(heartbeat.LinkHealth{Name: "b", Up: false})
	wait()
	if strings.Join(probes, ",") != "eth0 10.0.0.2" || len(lost) != 0 {
		t.Fatalf("alive peer: probes %v, lost %v", probes, lost)
	}
	if f, l := logged(); f != 1 || l != 0 {
		t.Fatalf("links down, node alive: %d failure and %d late warnings, want 1 and 0:\n%s", f, l, logs.String())
	}
	stat("links down, node alive", control.NodeLossStatus{Probes: 1, Alive: 1, LinksFailed: 1, LastResult: "alive"})
	n.health(heartbeat.LinkHealth{Name: "other", Up: false}) // not watched
	n.health(heartbeat.LinkHealth{Name: "b", Up: false})     // still all down: no new probe
	wait()
	if len(probes) != 1 {
		t.Fatalf("probed again without a new loss: %v", probes)
	}

	n.health(heartbeat.LinkHealth{Name: "a", Up: true})
	mu.Lock()
	alive = false
	mu.Unlock()
	n.health(heartbeat.LinkHealth{Name: "a", Up: false})
	wait()
	mu.Lock() // held where a Fatalf may end the test: nothing else waits for it then
	if len(probes) != 2 || len(lost) != 1 || len(lost[0]) != 2 || lost[0][0] != netip.MustParseAddr("10.0.0.2") {
		t.Fatalf("dead peer: probes %v, lost %v", probes, lost)
	}
	mu.Unlock()
	stat("dead peer", control.NodeLossStatus{Probes: 2, Alive: 1, Lost: 1, LinksFailed: 1, LastResult: "lost"})
	mu.Lock()
	// The quiet path: both links up, each reports one missed frame with no
	// frame since: probe (before either is down). A frame on one of them
	// in the meantime keeps that link from counting as silent.
	probes, lost = nil, nil
	alive = true
	mu.Unlock()
	t1 := time.Unix(100, 0)
	n.health(heartbeat.LinkHealth{Name: "a", Up: true})
	n.health(heartbeat.LinkHealth{Name: "b", Up: true})
	mu.Lock()
	rx["a"], rx["b"] = t1, t1
	mu.Unlock()
	n.quiet(heartbeat.LinkHealth{Name: "a", Up: true, LastRx: t1})
	mu.Lock()
	rx["b"] = t1.Add(time.Millisecond) // b heard again after its...
	mu.Unlock()
	n.quiet(heartbeat.LinkHealth{Name: "b", Up: true, LastRx: t1}) // ...stale quiet report
	wait()
	mu.Lock()
	if len(probes) != 0 {
		t.Fatalf("probed while link b carried frames: %v", probes)
	}
	mu.Unlock()
	n.quiet(heartbeat.LinkHealth{Name: "b", Up: true, LastRx: t1.Add(time.Millisecond)})
	wait()
	mu.Lock()
	if len(probes) != 1 || len(lost) != 0 {
		t.Fatalf("both links quiet: probes %v, lost %v; want one probe, peer alive", probes, lost)
	}
	mu.Unlock()
	// Quiet links whose node answers may only be late: no warning yet.
	if f, l := logged(); f != 1 || l != 0 {
		t.Fatalf("quiet links, node alive: %d failure and %d late reports, want 1 (the earlier) and 0", f, l)
	}
	// A frame came (a again, then quiet again): late, reported once; the
	// new silence is probed again.
	mu.Lock()
	rx["a"] = t1.Add(2 * time.Millisecond)
	mu.Unlock()
	n.quiet(heartbeat.LinkHealth{Name: "a", Up: true, LastRx: t1.Add(2 * time.Millisecond)})
	wait()
	if f, l := logged(); f != 1 || l != 1 {
		t.Fatalf("a late frame: %d failure and %d late reports, want 1 and 1:\n%s", f, l, logs.String())
	}
	stat("a late frame", control.NodeLossStatus{Probes: 4, Alive: 3, Lost: 1, Late: 1, LinksFailed: 1, LastResult: "alive"})
	// This time the links go down: they failed, said once.
	n.health(heartbeat.LinkHealth{Name: "a", Up: false})
	n.health(heartbeat.LinkHealth{Name: "b", Up: false})
	wait()
	n.health(heartbeat.LinkHealth{Name: "b", Up: false})
	if f, l := logged(); f != 2 || l != 1 {
		t.Fatalf("quiet links gone down: %d failure and %d late reports, want 2 and 1:\n%s", f, l, logs.String())
	}
	mu.Lock()
	if len(probes) != 2 || len(lost) != 0 {
		t.Fatalf("probes %v, lost %v; want two probes, peer alive", probes, lost)
	}
	mu.Unlock()
	stat("quiet links gone down", control.NodeLossStatus{Probes: 4, Alive: 3, Lost: 1, Late: 1, LinksFailed: 2, LastResult: "alive"})
	mu.Lock()
	alive = false
	probeErr = errors.New("no such device")
	mu.Unlock()
	n.health(heartbeat.LinkHealth{Name: "a", Up: true})
	n.health(heartbeat.LinkHealth{Name: "a", Up: false})
	wait()
	stat("a probe that failed", control.NodeLossStatus{Probes: 5, Alive: 3, Lost: 1, Errors: 1, Late: 1, LinksFailed: 2, LastResult: "error"})
	if len(lost) != 0 {
		t.Errorf("a failed probe declared the peer lost: %v", lost)
	}
	if newNodeLoss(cfg, cfg.Node("lb2"), nil, nil, nil, nil) != nil {
		t.Error("a watcher without links")
	}
}

func TestNodeLossWait(t *testing.T) {
	for _, tc := range []struct{ fastest, want time.Duration }{
		{2 * time.Millisecond, 2 * time.Millisecond},
		{10 * time.Millisecond, 2 * time.Millisecond},
		{40 * time.Millisecond, 5 * time.Millisecond},
		{250 * time.Millisecond, 31250 * time.Microsecond},
		{time.Second, 50 * time.Millisecond},
	} {
		if got := nodeLossWait(tc.fastest); got != tc.want {
			t.Errorf("nodeLossWait(%v) = %v, want %v", tc.fastest, got, tc.want)
		}
	}
}
