package heartbeat

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hadirector/hadirector/integration/netlab"
	"golang.org/x/sys/unix"
)

// recorder collects what a link reports through its callbacks.
type recorder struct {
	mu     sync.Mutex
	rx     []Received
	health []LinkHealth
	rxc    chan Received
	hc     chan LinkHealth
}

func newRecorder() *recorder {
	return &recorder{rxc: make(chan Received, 4096), hc: make(chan LinkHealth, 64)}
}

func (r *recorder) onReceive(m Received) {
	r.mu.Lock()
	r.rx = append(r.rx, m)
	r.mu.Unlock()
	select {
	case r.rxc <- m:
	default:
	}
}

func (r *recorder) onHealth(h LinkHealth) {
	r.mu.Lock()
	r.health = append(r.health, h)
	r.mu.Unlock()
	select {
	case r.hc <- h:
	default:
	}
}

func (r *recorder) received() []Received {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Received(nil), r.rx...)
}

func (r *recorder) transitions() []bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []bool
	for _, h := range r.health {
		out = append(out, h.Up)
	}
	return out
}

// waitHealth waits for the next health report and checks its state.
func (r *recorder) waitHealth(t *testing.T, up bool, timeout time.Duration) LinkHealth {
	t.Helper()
	select {
	case h := <-r.hc:
		if h.Up != up {
			t.Fatalf("health report up=%v, want %v (%v)", h.Up, up, h)
		}
		return h
	case <-time.After(timeout):
		t.Fatalf("no health report (want up=%v) within %v", up, timeout)
		return LinkHealth{}
	}
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// checkNoLinkGoroutines fails if a goroutine of a link is still running.
func checkNoLinkGoroutines(t *testing.T) {
	t.Helper()
	markers := []string{"heartbeat.(*UDPLink)", "heartbeat.(*SerialLink)", "heartbeat.(*tracker)"}
	var stacks string
	for range 200 {
		buf := make([]byte, 1<<20)
		stacks = string(buf[:runtime.Stack(buf, true)])
		leak := false
		for _, m := range markers {
			leak = leak || strings.Contains(stacks, m)
		}
		if !leak {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("link goroutines still running after Close:\n%s", stacks)
}

// sender calls Send every interval until stopped, like the engine would.
type sender struct {
	stop chan struct{}
	done chan struct{}
	mu   sync.Mutex
	last time.Time // when the last successful Send returned
}

func startSender(l Link, interval time.Duration, tag string) *sender {
	s := &sender{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		tk := time.NewTicker(interval)
		defer tk.Stop()
		for n := 0; ; n++ {
			if err := l.Send(fmt.Appendf(nil, "%s-%d", tag, n)); err == nil {
				s.mu.Lock()
				s.last = time.Now()
				s.mu.Unlock()
			}
			select {
			case <-s.stop:
				return
			case <-tk.C:
			}
		}
	}()
	return s
}

func (s *sender) halt() time.Time {
	close(s.stop)
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}

func freeUDPPort(t *testing.T, addrs ...string) int {
	t.Helper()
	for range 50 {
		c, err := net.ListenPacket("udp4", addrs[0]+":0")
		if err != nil {
			t.Fatal(err)
		}
		port := c.LocalAddr().(*net.UDPAddr).Port
		ok := true
		var others []net.PacketConn
		for _, a := range addrs[1:] {
			o, err := net.ListenPacket("udp4", fmt.Sprintf("%s:%d", a, port))
			if err != nil {
				ok = false
				break
			}
			others = append(others, o)
		}
		c.Close()
		for _, o := range others {
			o.Close()
		}
		if ok {
			return port
		}
	}
	t.Fatal("no free UDP port")
	return 0
}

// TestUDPLinkLoopback runs two links on 127.0.0.1 and 127.0.0.2 in the
// test's own namespace: no root needed.
func TestUDPLinkLoopback(t *testing.T) {
	port := freeUDPPort(t, "127.0.0.1", "127.0.0.2")
	ra, rb := newRecorder(), newRecorder()
	const interval = 10 * time.Millisecond
	mk := func(id, peerID, local, peer string, r *recorder) *UDPLink {
		l, err := NewUDPLink(UDPConfig{
			Name: "hb0", NodeID: id, PeerID: peerID,
			Local: netip.MustParseAddr(local), Peer: netip.MustParseAddr(peer), Port: port,
			Key: testKey, Interval: interval, OnReceive: r.onReceive, OnHealth: r.onHealth,
		})
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	a := mk("lb1", "lb2", "127.0.0.1", "127.0.0.2", ra)
	b := mk("lb2", "lb1", "127.0.0.2", "127.0.0.1", rb)
	if h := a.Health(); h.Up || h.Kind != "udp" || h.Name != "hb0" || h.DownAfter != DownAfter(interval, 3) {
		t.Fatalf("new link: %+v", h)
	}
	for i := range 20 {
		if err := a.Send([]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
		if err := b.Send([]byte{0xB0, byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 2*time.Second, "20 frames each way", func() bool {
		return len(ra.received()) == 20 && len(rb.received()) == 20
	})
	for i, m := range rb.received() {
		if m.From != "lb1" || len(m.Payload) != 1 || m.Payload[0] != byte(i) || m.Seq != uint64(i+1) || m.Epoch != a.Epoch() || m.Link != "hb0" {
			t.Fatalf("b got %+v", m)
		}
	}
	rb.waitHealth(t, true, time.Second)
	ra.waitHealth(t, true, time.Second)
	// Nothing more is sent: both go down after DownAfter.
	hb := rb.waitHealth(t, false, time.Second)
	if lat := hb.Since.Sub(hb.LastRx); lat < b.DownAfter() || lat > b.DownAfter()+500*time.Millisecond {
		t.Errorf("went down %v after the last frame; DownAfter is %v", lat, b.DownAfter())
	}
	ra.waitHealth(t, false, time.Second)
	h := b.Health()
	if h.RxFrames != 20 || h.TxFrames != 20 || h.RxBytes != 20 || h.TxBytes != 40 || h.DropTotal() != 0 || h.Transitions != 2 {
		t.Errorf("b health: %+v", h)
	}
	if err := a.Send(make([]byte, MaxPayload+1)); !errors.Is(err, ErrPayloadTooLarge) {
		t.Errorf("oversized payload: %v", err)
	}
	// A stranger on another port of the loopback is refused.
	c, err := net.ListenPacket("udp4", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fr, _ := mustSealer(t, "lb2").Seal(nil, nil)
	if _, err := c.WriteTo(fr, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Second, "wrong_source drop", func() bool { return a.Health().Drops[DropWrongSource] == 1 })

	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal("second Close:", err)
	}
	if err := a.Send(nil); !errors.Is(err, ErrClosed) {
		t.Errorf("Send after Close: %v", err)
	}
	b.Close()
	checkNoLinkGoroutines(t)
}

func TestUDPConfigErrors(t *testing.T) {
	good := UDPConfig{
		Name: "hb0", NodeID: "lb1", Local: netip.MustParseAddr("127.0.0.1"),
		Peer: netip.MustParseAddr("127.0.0.2"), Port: 1, Key: testKey, Interval: 10 * time.Millisecond,
	}
	for _, tc := range []struct {
		name string
		edit func(*UDPConfig)
	}{
		{"no name", func(c *UDPConfig) { c.Name = "" }},
		{"no node id", func(c *UDPConfig) { c.NodeID = "" }},
		{"peer id is us", func(c *UDPConfig) { c.PeerID = "lb1" }},
		{"short key", func(c *UDPConfig) { c.Key = []byte("k") }},
		{"interval too short", func(c *UDPConfig) { c.Interval = time.Microsecond }},
		{"interval too long", func(c *UDPConfig) { c.Interval = time.Minute }},
		{"mixed families", func(c *UDPConfig) { c.Peer = netip.MustParseAddr("::1") }},
		{"no peer", func(c *UDPConfig) { c.Peer = netip.Addr{} }},
		{"same address", func(c *UDPConfig) { c.Peer = c.Local }},
		{"multicast", func(c *UDPConfig) { c.Peer = netip.MustParseAddr("224.0.0.18") }},
		{"bad port", func(c *UDPConfig) { c.Port = 70000 }},
		{"address not local", func(c *UDPConfig) { c.Local, c.Port = netip.MustParseAddr("192.0.2.1"), 40000 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := good
			tc.edit(&c)
			if l, err := NewUDPLink(c); err == nil {
				l.Close()
				t.Fatal("accepted")
			} else {
				t.Log(err)
			}
		})
	}
}

// --- network namespaces ---

type family struct {
	name         string
	network      string
	addrA, addrB string
	prefix       int
}

var families = []family{
	{"ipv4", "udp4", "10.99.0.1", "10.99.0.2", 24},
	{"ipv6", "udp6", "fd99::1", "fd99::2", 64},
}

// TestUDPLinkNetns runs the link between two namespaces joined by a veth
// pair, for each address family: frames both ways, down and up again,
// replayed captures, a wrong key, TTL 64, a wrong source port; and checks
// that OnHealth fired exactly on the transitions.
func TestUDPLinkNetns(t *testing.T) {
	lab := netlab.NewForTest(t, "hbt")
	na, err := lab.AddNode("lb1")
	if err != nil {
		t.Fatal(err)
	}
	nb, err := lab.AddNode("lb2")
	if err != nil {
		t.Fatal(err)
	}
	var addrsA, addrsB []string
	for _, f := range families {
		addrsA = append(addrsA, fmt.Sprintf("%s/%d", f.addrA, f.prefix))
		addrsB = append(addrsB, fmt.Sprintf("%s/%d", f.addrB, f.prefix))
	}
	ia, _, err := lab.Link(na, "hb0", addrsA, nb, "hb0", addrsB)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		t.Run(f.name, func(t *testing.T) { netnsScenario(t, na, nb, ia.Index(), f) })
	}
	t.Run("ipv6-link-local", func(t *testing.T) { linkLocalScenario(t, na, nb) })
	checkNoLinkGoroutines(t)
}

func inNode[T any](t *testing.T, n *netlab.Node, fn func() (T, error)) T {
	t.Helper()
	var v T
	if err := n.Do(func() (err error) { v, err = fn(); return err }); err != nil {
		t.Fatalf("%s: %v", n.Name(), err)
	}
	return v
}

func netnsScenario(t *testing.T, na, nb *netlab.Node, ifindexA int, f family) {
	const interval = 20 * time.Millisecond
	port := DefaultUDPPort
	addrA, addrB := netip.MustParseAddr(f.addrA), netip.MustParseAddr(f.addrB)
	cfg := func(id, peer string, local, remote netip.Addr, key []byte, r *recorder) UDPConfig {
		return UDPConfig{
			Name: "hb0", NodeID: id, PeerID: peer, Local: local, Peer: remote, Port: port,
			Key: key, Domain: "lab/hb0", Interval: interval, OnReceive: r.onReceive, OnHealth: r.onHealth,
		}
	}
	ra, rb := newRecorder(), newRecorder()
	a := inNode(t, na, func() (*UDPLink, error) { return NewUDPLink(cfg("lb1", "lb2", addrA, addrB, testKey, ra)) })
	defer a.Close()
	b := inNode(t, nb, func() (*UDPLink, error) { return NewUDPLink(cfg("lb2", "lb1", addrB, addrA, testKey, rb)) })

	// Capture what b sends to a, off the wire, in a's namespace.
	capt := startCapture(t, na, ifindexA, addrB, port)

	// 1. Frames flow both ways; both links come up.
	sa, sb := startSender(a, interval, "a"), startSender(b, interval, "b")
	ra.waitHealth(t, true, 2*time.Second)
	rb.waitHealth(t, true, 2*time.Second)
	waitFor(t, 5*time.Second, "frames and captures", func() bool {
		return len(ra.received()) >= 80 && len(rb.received()) >= 10 && capt.count() >= 80
	})
	for _, m := range ra.received() {
		if m.From != "lb2" || !strings.HasPrefix(string(m.Payload), "b-") {
			t.Fatalf("a got %+v", m)
		}
	}
	if m := rb.received()[0]; m.From != "lb1" || string(m.Payload) != "a-0" {
		t.Fatalf("b got %+v", m)
	}

	// 2. b stops sending: a goes down after DownAfter, not before; then
	// comes up again when b resumes.
	sb.halt()
	down := ra.waitHealth(t, false, 2*time.Second)
	lat := down.Since.Sub(down.LastRx)
	t.Logf("down %v after the last valid frame (DownAfter %v = 3 × %v + margin)", lat, a.DownAfter(), interval)
	if lat < a.DownAfter() || lat > a.DownAfter()+500*time.Millisecond {
		t.Errorf("down after %v, want %v (+ scheduling)", lat, a.DownAfter())
	}
	resume := time.Now()
	sb = startSender(b, interval, "b")
	up := ra.waitHealth(t, true, 2*time.Second)
	t.Logf("up again %v after b resumed", up.Since.Sub(resume))

	// 3. b's link closes. Its captured frames, replayed from b's address
	// and port with TTL 255, are refused: the latest as a duplicate, the
	// first as too old.
	sb.halt()
	b.Close()
	ra.waitHealth(t, false, 2*time.Second)
	frames := capt.stop()
	first, last := frames[0], frames[len(frames)-1]
	if f0, _ := ParseFrame(first); f0.Seq != 1 {
		t.Fatalf("first capture has seq %d", f0.Seq)
	}
	craft := newCrafted(t, nb, f, addrB, port)
	defer craft.Close()
	before := a.Health()
	craft.send(t, 255, addrA, port, last)
	craft.send(t, 255, addrA, port, first)
	waitFor(t, time.Second, "replay drops", func() bool {
		h := a.Health()
		return h.Drops[DropReplay] == before.Drops[DropReplay]+1 && h.Drops[DropTooOld] == before.Drops[DropTooOld]+1
	})

	// 4. A peer with the wrong key: every frame is a bad MAC.
	rx := newRecorder()
	wrong := inNode(t, nb, func() (*UDPLink, error) {
		craft.Close() // frees b's port
		return NewUDPLink(cfg("lb2", "lb1", addrB, addrA, []byte("not the key, but long enough"), rx))
	})
	for range 5 {
		if err := wrong.Send([]byte("advert")); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, time.Second, "bad_mac drops", func() bool { return a.Health().Drops[DropBadMAC] == before.Drops[DropBadMAC]+5 })
	wrong.Close()

	// 5. A correctly sealed frame from b's address and port, but with TTL
	// 64, is refused; the same with 255 is accepted (b "restarted": new
	// epoch); then a capture from b's previous life is an old epoch.
	craft = newCrafted(t, nb, f, addrB, port)
	defer craft.Close()
	reborn, err := NewSealer(testKey, "lab/hb0", "lb2")
	if err != nil {
		t.Fatal(err)
	}
	seal := func() []byte { b, _ := reborn.Seal(nil, []byte("reborn")); return b }
	rxBefore := a.Health().RxFrames
	craft.send(t, 64, addrA, port, seal())
	waitFor(t, time.Second, "bad_ttl drop", func() bool { return a.Health().Drops[DropBadTTL] == before.Drops[DropBadTTL]+1 })
	craft.send(t, 255, addrA, port, seal())
	ra.waitHealth(t, true, time.Second)
	if h := a.Health(); h.RxFrames != rxBefore+1 {
		t.Fatalf("TTL 255 frame not accepted: %+v", h)
	}
	craft.send(t, 255, addrA, port, last)
	waitFor(t, time.Second, "old_epoch drop", func() bool { return a.Health().Drops[DropOldEpoch] == before.Drops[DropOldEpoch]+1 })

	// 6. Right address, wrong port.
	other := inNode(t, nb, func() (net.PacketConn, error) {
		return net.ListenPacket(f.network, netip.AddrPortFrom(addrB, 0).String())
	})
	if _, err := other.(*net.UDPConn).WriteToUDPAddrPort(seal(), netip.AddrPortFrom(addrA, uint16(port))); err != nil {
		t.Fatal(err)
	}
	other.Close()
	waitFor(t, time.Second, "wrong_source drop", func() bool {
		return a.Health().Drops[DropWrongSource] == before.Drops[DropWrongSource]+1
	})
	ra.waitHealth(t, false, 2*time.Second)

	// OnHealth fired exactly on the transitions, alternating, starting up.
	sa.halt()
	got := ra.transitions()
	want := []bool{true, false, true, false, true, false}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("a's health reports %v, want %v", got, want)
	}
	h := a.Health()
	if h.Transitions != uint64(len(want)) {
		t.Errorf("Transitions = %d, want %d", h.Transitions, len(want))
	}
	t.Logf("a: %v; drops %v", h, h.Drops)
	a.Close()
}

func linkLocalScenario(t *testing.T, na, nb *netlab.Node) {
	lla := linkLocal(t, na, "hb0")
	llb := linkLocal(t, nb, "hb0")
	ra, rb := newRecorder(), newRecorder()
	mk := func(id string, local, peer netip.Addr, r *recorder) UDPConfig {
		return UDPConfig{Name: "ll", NodeID: id, Local: local.WithZone("hb0"), Peer: peer,
			Port: 6940, Key: testKey, Interval: 5 * time.Millisecond, OnReceive: r.onReceive, OnHealth: r.onHealth}
	}
	a := inNode(t, na, func() (*UDPLink, error) { return NewUDPLink(mk("lb1", lla, llb, ra)) })
	defer a.Close()
	b := inNode(t, nb, func() (*UDPLink, error) { return NewUDPLink(mk("lb2", llb, lla, rb)) })
	defer b.Close()
	for i := range 10 {
		_ = a.Send([]byte{byte(i)})
		_ = b.Send([]byte{byte(i)})
	}
	waitFor(t, 2*time.Second, "link-local frames", func() bool { return len(ra.received()) == 10 && len(rb.received()) == 10 })
	t.Logf("%s <-> %s: %v", a.LocalAddr(), a.PeerAddr(), a.Health())
}

func linkLocal(t *testing.T, n *netlab.Node, ifname string) netip.Addr {
	t.Helper()
	ifc := inNode(t, n, func() (*net.Interface, error) { return net.InterfaceByName(ifname) })
	addrs := inNode(t, n, func() ([]net.Addr, error) { return ifc.Addrs() })
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().IsLinkLocalUnicast() {
			return p.Addr()
		}
	}
	t.Fatalf("%s: no link-local address on %s", n.Name(), ifname)
	return netip.Addr{}
}

// crafted is a plain UDP socket in a node, bound to the peer's address and
// port, whose TTL the test sets per datagram.
type crafted struct {
	conn *net.UDPConn
	v6   bool
	once sync.Once
}

func newCrafted(t *testing.T, n *netlab.Node, f family, addr netip.Addr, port int) *crafted {
	t.Helper()
	c := inNode(t, n, func() (net.PacketConn, error) {
		return net.ListenPacket(f.network, netip.AddrPortFrom(addr, uint16(port)).String())
	})
	return &crafted{conn: c.(*net.UDPConn), v6: addr.Is6()}
}

func (c *crafted) send(t *testing.T, ttl int, to netip.Addr, port int, b []byte) {
	t.Helper()
	rc, err := c.conn.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		if c.v6 {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_UNICAST_HOPS, ttl)
		} else {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_TTL, ttl)
		}
	}); err != nil || serr != nil {
		t.Fatal(err, serr)
	}
	if _, err := c.conn.WriteToUDPAddrPort(b, netip.AddrPortFrom(to, uint16(port))); err != nil {
		t.Fatal(err)
	}
}

func (c *crafted) Close() { c.once.Do(func() { c.conn.Close() }) }

// capture records UDP payloads from src:port to port, seen by an AF_PACKET
// socket on an interface of a node: what an on-path attacker records.
type capture struct {
	fd     int
	mu     sync.Mutex
	frames [][]byte
	done   chan struct{}
	quit   chan struct{}
}

func startCapture(t *testing.T, n *netlab.Node, ifindex int, src netip.Addr, port int) *capture {
	t.Helper()
	proto := int(htons(unix.ETH_P_ALL))
	fd := inNode(t, n, func() (int, error) {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, proto)
		if err != nil {
			return -1, err
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifindex}); err != nil {
			unix.Close(fd)
			return -1, err
		}
		tv := unix.NsecToTimeval(int64(50 * time.Millisecond))
		return fd, unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	})
	c := &capture{fd: fd, done: make(chan struct{}), quit: make(chan struct{})}
	go func() {
		defer close(c.done)
		buf := make([]byte, 65536)
		for {
			select {
			case <-c.quit:
				return
			default:
			}
			n, _, err := unix.Recvfrom(fd, buf, 0)
			if err != nil {
				continue // timeout
			}
			if p := udpPayload(buf[:n], src, port); p != nil {
				c.mu.Lock()
				c.frames = append(c.frames, p)
				c.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() { c.stop() })
	return c
}

func (c *capture) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.frames)
}

func (c *capture) stop() [][]byte {
	select {
	case <-c.quit:
	default:
		close(c.quit)
		<-c.done
		unix.Close(c.fd)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.frames
}

// udpPayload returns the payload of an IPv4/IPv6 UDP packet from src with
// both ports equal to port, or nil.
func udpPayload(p []byte, src netip.Addr, port int) []byte {
	var from netip.Addr
	var udp []byte
	switch {
	case len(p) >= 20 && p[0]>>4 == 4:
		ihl := int(p[0]&0xf) * 4
		if p[9] != unix.IPPROTO_UDP || len(p) < ihl+8 {
			return nil
		}
		from = netip.AddrFrom4([4]byte(p[12:16]))
		udp = p[ihl:]
	case len(p) >= 48 && p[0]>>4 == 6:
		if p[6] != unix.IPPROTO_UDP {
			return nil
		}
		from = netip.AddrFrom16([16]byte(p[8:24]))
		udp = p[40:]
	default:
		return nil
	}
	if from != src || int(binary.BigEndian.Uint16(udp[0:])) != port || int(binary.BigEndian.Uint16(udp[2:])) != port {
		return nil
	}
	ulen := int(binary.BigEndian.Uint16(udp[4:]))
	if ulen < 8 || ulen > len(udp) {
		return nil
	}
	return append([]byte(nil), udp[8:ulen]...)
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// BenchmarkUDPRoundTrip measures Send → receive → Send back → receive
// between two links: on the loopback, and (as root) across a veth pair
// between two namespaces.
func BenchmarkUDPRoundTrip(b *testing.B) {
	b.Run("loopback", func(b *testing.B) {
		port := freeUDPPortB(b)
		benchRoundTrip(b, func(cfg UDPConfig, side int) (*UDPLink, error) {
			addrs := []string{"127.0.0.1", "127.0.0.2"}
			cfg.Local, cfg.Peer = netip.MustParseAddr(addrs[side]), netip.MustParseAddr(addrs[1-side])
			cfg.Port = port
			return NewUDPLink(cfg)
		})
	})
	b.Run("netns-veth", func(b *testing.B) {
		lab := netlab.NewForTest(b, "hbb")
		na, err := lab.AddNode("lb1")
		if err != nil {
			b.Fatal(err)
		}
		nb, err := lab.AddNode("lb2")
		if err != nil {
			b.Fatal(err)
		}
		if _, _, err := lab.Link(na, "hb0", []string{"10.98.0.1/24"}, nb, "hb0", []string{"10.98.0.2/24"}); err != nil {
			b.Fatal(err)
		}
		nodes := []*netlab.Node{na, nb}
		addrs := []string{"10.98.0.1", "10.98.0.2"}
		benchRoundTrip(b, func(cfg UDPConfig, side int) (*UDPLink, error) {
			cfg.Local, cfg.Peer = netip.MustParseAddr(addrs[side]), netip.MustParseAddr(addrs[1-side])
			var l *UDPLink
			err := nodes[side].Do(func() (err error) { l, err = NewUDPLink(cfg); return err })
			return l, err
		})
	})
}

func freeUDPPortB(b *testing.B) int {
	for range 50 {
		c1, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		port := c1.LocalAddr().(*net.UDPAddr).Port
		c2, err := net.ListenPacket("udp4", fmt.Sprintf("127.0.0.2:%d", port))
		c1.Close()
		if err == nil {
			c2.Close()
			return port
		}
	}
	b.Fatal("no free port")
	return 0
}

func benchRoundTrip(b *testing.B, mk func(UDPConfig, int) (*UDPLink, error)) {
	back := make(chan struct{}, 1)
	var echo *UDPLink
	cfgs := []UDPConfig{
		{Name: "bench", NodeID: "lb1", Key: testKey, Interval: time.Second, Port: DefaultUDPPort,
			OnReceive: func(Received) { back <- struct{}{} }},
		{Name: "bench", NodeID: "lb2", Key: testKey, Interval: time.Second, Port: DefaultUDPPort,
			OnReceive: func(m Received) { _ = echo.Send(m.Payload) }},
	}
	a, err := mk(cfgs[0], 0)
	if err != nil {
		b.Fatal(err)
	}
	defer a.Close()
	echo, err = mk(cfgs[1], 1)
	if err != nil {
		b.Fatal(err)
	}
	defer echo.Close()
	payload := make([]byte, 40) // a VRRPv3 advert with a few addresses
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b.ReportAllocs()
	start := time.Now()
	for b.Loop() {
		if err := a.Send(payload); err != nil {
			b.Fatal(err)
		}
		select {
		case <-back:
		case <-time.After(time.Second):
			b.Fatal("round trip lost")
		case <-ctx.Done():
			b.Fatal(ctx.Err())
		}
	}
	b.ReportMetric(float64(time.Since(start).Microseconds())/float64(b.N), "µs/rtt")
}

// TestUDPLinkFastInterval runs the loopback link at the smallest interval
// the config allows (1 ms). It asserts the up/down cycle only; how often
// the link flapped meanwhile (scheduling on a busy machine) is logged, not
// judged.
func TestUDPLinkFastInterval(t *testing.T) {
	port := freeUDPPort(t, "127.0.0.1", "127.0.0.2")
	rb := newRecorder()
	const interval = time.Millisecond
	mk := func(id, local, peer string, r *recorder) *UDPLink {
		l, err := NewUDPLink(UDPConfig{Name: "fast", NodeID: id, Local: netip.MustParseAddr(local),
			Peer: netip.MustParseAddr(peer), Port: port, Key: testKey, Interval: interval,
			OnReceive: r.onReceive, OnHealth: r.onHealth})
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	a := mk("lb1", "127.0.0.1", "127.0.0.2", newRecorder())
	defer a.Close()
	b := mk("lb2", "127.0.0.2", "127.0.0.1", rb)
	defer b.Close()
	s := startSender(a, interval, "a")
	rb.waitHealth(t, true, time.Second)
	time.Sleep(300 * time.Millisecond)
	s.halt()
	waitFor(t, time.Second, "down", func() bool { return !b.Health().Up })
	h := b.Health()
	t.Logf("1ms interval, DownAfter %v: %d frames in ~300ms, %d transitions (2 = no flap)", b.DownAfter(), h.RxFrames, h.Transitions)
	if h.Transitions%2 != 0 || h.Transitions < 2 {
		t.Fatalf("transitions %d", h.Transitions)
	}
	checkHealthReportsAlternate(t, rb)
}

func checkHealthReportsAlternate(t *testing.T, r *recorder) {
	t.Helper()
	for i, up := range r.transitions() {
		if up != (i%2 == 0) {
			t.Fatalf("health reports %v do not alternate from up", r.transitions())
		}
	}
}

// TestUDPLinkQuiet: a link with OnQuiet reports one quiet per silence,
// QuietAfter after the last frame and before it goes down; a frame ends
// the silence, and the next one is reported again.
func TestUDPLinkQuiet(t *testing.T) {
	port := freeUDPPort(t, "127.0.0.1", "127.0.0.2")
	const interval = 20 * time.Millisecond
	var mu sync.Mutex
	var quiets []LinkHealth
	var downAt time.Time
	b, err := NewUDPLink(UDPConfig{Name: "hb0", NodeID: "lb2", PeerID: "lb1",
		Local: netip.MustParseAddr("127.0.0.2"), Peer: netip.MustParseAddr("127.0.0.1"), Port: port,
		Key: testKey, Interval: interval,
		OnQuiet: func(h LinkHealth) { mu.Lock(); quiets = append(quiets, h); mu.Unlock() },
		OnHealth: func(h LinkHealth) {
			if !h.Up {
				mu.Lock()
				downAt = h.Since
				mu.Unlock()
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	a, err := NewUDPLink(UDPConfig{Name: "hb0", NodeID: "lb1", PeerID: "lb2",
		Local: netip.MustParseAddr("127.0.0.1"), Peer: netip.MustParseAddr("127.0.0.2"), Port: port,
		Key: testKey, Interval: interval})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(quiets) }
	for range 10 { // a healthy link is never quiet
		a.Send(nil)
		time.Sleep(interval / 2)
	}
	if n := count(); n != 0 {
		t.Fatalf("%d quiets while frames came every %v", n, interval/2)
	}
	waitFor(t, time.Second, "a quiet after the frames stop", func() bool { return count() == 1 })
	mu.Lock()
	q := quiets[0]
	mu.Unlock()
	if lat := time.Since(q.LastRx); lat < QuietAfter(interval) {
		t.Errorf("quiet %v after the last frame; QuietAfter is %v", lat, QuietAfter(interval))
	}
	if !q.Up {
		t.Errorf("quiet reported a down link: %+v", q)
	}
	waitFor(t, time.Second, "down after DownAfter", func() bool { mu.Lock(); defer mu.Unlock(); return !downAt.IsZero() })
	if n := count(); n != 1 {
		t.Errorf("%d quiets in one silence, want 1", n)
	}
	// Up again, then silent again: a second quiet.
	a.Send(nil)
	waitFor(t, time.Second, "a second quiet", func() bool { return count() == 2 })
}
