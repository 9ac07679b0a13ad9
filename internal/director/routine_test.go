package director

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/hadirector/hadirector/internal/vrrp"
)

// routineSocket is a fakeSocket that records what the engine says is
// routine (the real filters: internal/heartbeat's TestVRRPSocketRoutine).
type routineSocket struct {
	fakeSocket
	mu   sync.Mutex
	set  map[any]routine
	sets int
}

func (s *routineSocket) SetRoutine(key any, src netip.Addr, head [6]byte, on bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sets++
	if on {
		s.set[key] = routine{src: src, head: head}
	} else {
		delete(s.set, key)
	}
	return nil
}

func (s *routineSocket) routines() []routine {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []routine
	for _, r := range s.set {
		out = append(out, r)
	}
	return out
}

// TestBackupRoutineAdverts: a backup tells its socket that its master's
// repeated advert is routine, once, and takes that back when it becomes
// master.
func TestBackupRoutineAdverts(t *testing.T) {
	n := &fakeNet{engines: map[netip.Addr]*Engine{}}
	tl := &timeline{held: map[string]bool{}}
	lb1 := runEngine(t, n, netip.MustParseAddr("10.0.0.1"), "lb1", pairCluster, Options{
		Instances: map[string]InstanceIO{"VI_1": {Socket: &fakeSocket{net: n, src: netip.MustParseAddr("10.0.0.1")}, VIPs: &fakeVIPs{name: "lb1", tl: tl}}},
	})
	sock := &routineSocket{fakeSocket: fakeSocket{net: n, src: netip.MustParseAddr("10.0.0.2")}, set: map[any]routine{}}
	lb2 := runEngine(t, n, netip.MustParseAddr("10.0.0.2"), "lb2", pairCluster, Options{
		Instances: map[string]InstanceIO{"VI_1": {Socket: sock, VIPs: &fakeVIPs{name: "lb2", tl: tl}}},
	})
	waitFor(t, "lb1 MASTER, lb2 BACKUP", func() bool { return stateOf(t, lb1) == "MASTER" && stateOf(t, lb2) == "BACKUP" })
	waitFor(t, "a routine advert", func() bool { return len(sock.routines()) == 1 })
	time.Sleep(100 * time.Millisecond) // five more adverts
	r := sock.routines()
	if len(r) != 1 || r[0].src != netip.MustParseAddr("10.0.0.1") || r[0].head[1] != 51 || r[0].head[2] != 150 {
		t.Fatalf("routine %+v, want lb1's advert (VRID 51, priority 150)", r)
	}
	sock.mu.Lock()
	sets := sock.sets
	sock.mu.Unlock()
	if sets != 1 {
		t.Errorf("SetRoutine called %d times for one unchanging master, want 1", sets)
	}

	lb1.crash(n, "10.0.0.1")
	waitFor(t, "lb2 MASTER", func() bool { return stateOf(t, lb2) == "MASTER" })
	if r := sock.routines(); len(r) != 0 {
		t.Errorf("a master still has routine adverts %+v", r)
	}
}

// TestAdvertTimedFromArrival: an advert the engine reads late (a routine
// one waits for the backup's deadline) counts from when it arrived. A
// stream of adverts that all arrived long ago holds no backup: each one's
// Master_Down timer has already run out.
func TestAdvertTimedFromArrival(t *testing.T) {
	n := &fakeNet{engines: map[netip.Addr]*Engine{}}
	tl := &timeline{held: map[string]bool{}}
	lb2 := runEngine(t, n, netip.MustParseAddr("10.0.0.2"), "lb2", pairCluster, Options{
		Instances: map[string]InstanceIO{"VI_1": {Socket: &fakeSocket{net: n, src: netip.MustParseAddr("10.0.0.2")}, VIPs: &fakeVIPs{name: "lb2", tl: tl}}},
	})
	src, group := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("224.0.0.18")
	a := vrrp.Advert{Version: 3, VRID: 51, Priority: 150, Interval: 20 * time.Millisecond, Addrs: []netip.Addr{netip.MustParseAddr("10.0.0.100")}}
	b, _ := a.Marshal(src, group)
	stream := func(age time.Duration, until func() bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !until() {
			if time.Now().After(deadline) {
				t.Fatalf("adverts %v old: lb2 stayed %s", age, stateOf(t, lb2))
			}
			lb2.e.Deliver(Packet{Interface: "eth0", Src: src, Dst: group, Payload: b, At: time.Now().Add(-age)})
			time.Sleep(10 * time.Millisecond)
		}
	}
	// Fresh adverts make it backup (it starts as one and would take over
	// after Master_Down_Interval, 72 ms, without them) and keep it there.
	stream(0, func() bool {
		st, _ := lb2.e.Status(context.Background())
		return st.Instances[0].State == "BACKUP" && st.Instances[0].Master == "10.0.0.1"
	})
	held := time.Now().Add(300 * time.Millisecond)
	stream(0, func() bool { return time.Now().After(held) })
	if s := stateOf(t, lb2); s != "BACKUP" {
		t.Fatalf("fresh adverts: lb2 is %s", s)
	}
	// Adverts that arrived a second ago: it takes over.
	stream(time.Second, func() bool { return stateOf(t, lb2) == "MASTER" })
}
