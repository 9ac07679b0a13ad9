package director

import (
	"net/netip"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/hadirector/hadirector/internal/vrrp"
)

// dgramReader is a PacketReader over one end of a datagram socket pair:
// each datagram is an advert from src. It takes at most perDrain per call,
// as the VRRP socket caps its drains.
type dgramReader struct {
	fd       int
	src      netip.Addr
	perDrain int
	drains   atomic.Int64
	taken    atomic.Int64
}

func (r *dgramReader) Fd() int { return r.fd }

func (r *dgramReader) Drain(fn func(Packet)) bool {
	r.drains.Add(1)
	buf := make([]byte, 1500)
	for range r.perDrain {
		n, _, e := syscall.RawSyscall(unix.SYS_READ, uintptr(r.fd), uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)))
		if e != 0 {
			return false // EAGAIN: all taken
		}
		r.taken.Add(1)
		fn(Packet{Interface: "eth0", Src: r.src, Dst: netip.MustParseAddr("224.0.0.18"), Payload: append([]byte(nil), buf[:n]...), At: time.Now()})
	}
	return true
}

// TestEngineReadsItsReaders: packets of a PacketReader reach the machines
// through the engine's own epoll (no Deliver): a batch larger than one
// drain is taken whole without further input, the adverts keep the node
// backup while they come, and when they stop it takes over.
func TestEngineReadsItsReaders(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	master := netip.MustParseAddr("10.0.0.1")
	rd := &dgramReader{fd: fds[0], src: master, perDrain: 2}
	n := &fakeNet{engines: map[netip.Addr]*Engine{}}
	tl := &timeline{held: map[string]bool{}}
	src := netip.MustParseAddr("10.0.0.2")
	lb2 := runEngine(t, n, src, "lb2", pairCluster, Options{
		Instances: map[string]InstanceIO{"VI_1": {Socket: &fakeSocket{net: n, src: src}, VIPs: &fakeVIPs{name: "lb2", tl: tl}}},
		Readers:   []PacketReader{rd},
	})
	a := vrrp.Advert{Version: 3, VRID: 51, Priority: 150, Interval: 100 * time.Millisecond, Addrs: []netip.Addr{netip.MustParseAddr("10.0.0.100")}}
	advert, err := a.Marshal(master, netip.MustParseAddr("224.0.0.18"))
	if err != nil {
		t.Fatal(err)
	}
	send := func() {
		if _, err := unix.Write(fds[1], advert); err != nil {
			t.Fatal(err)
		}
	}
	const batch = 5
	for range batch {
		send()
	}
	waitFor(t, "the batch taken", func() bool { return rd.taken.Load() == batch })
	if d := rd.drains.Load(); d < (batch+1)/2 {
		t.Errorf("%d packets in %d drains of at most 2", batch, d)
	}
	waitFor(t, "lb2 BACKUP under lb1", func() bool {
		st, err := lb2.e.Status(t.Context())
		return err == nil && st.Instances[0].State == "BACKUP" && st.Instances[0].Master == "10.0.0.1"
	})
	// lb2 learns lb1's 100 ms interval: its Master_Down_Interval is 361 ms.
	// Three of them with adverts every 10 ms: lb2 stays backup only if
	// they reach it.
	for end := time.Now().Add(1100 * time.Millisecond); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		send()
		if s := stateOf(t, lb2); s != "BACKUP" {
			t.Fatalf("lb2 is %s while fed adverts through its reader", s)
		}
	}
	waitFor(t, "lb2 MASTER once the adverts stop", func() bool { return stateOf(t, lb2) == "MASTER" })
	if h := tl.holders(); len(h) != 1 || h[0] != "lb2" {
		t.Errorf("VIP holders %v, want [lb2]", h)
	}
}
