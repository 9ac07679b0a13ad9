package heartbeat_test

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/hadirector/hadirector/integration/netlab"
	"github.com/hadirector/hadirector/internal/heartbeat"
	"github.com/hadirector/hadirector/internal/vrrp"
	"golang.org/x/sys/unix"
)

// vrrpPair is two directors, a and b, on one bridge (eth0) and a direct
// cable (eth1), each with a VRRP socket per family on eth0.
type vrrpPair struct {
	a, b       *netlab.Node
	a4, b4     *heartbeat.VRRPSocket
	a6, b6     *heartbeat.VRRPSocket
	got4, got6 chan heartbeat.VRRPPacket
}

func newVRRPPair(t *testing.T, multicast bool) *vrrpPair {
	lab := netlab.NewForTest(t, "hbv")
	br, err := lab.AddBridge("front")
	if err != nil {
		t.Fatal(err)
	}
	p := &vrrpPair{got4: make(chan heartbeat.VRRPPacket, 16), got6: make(chan heartbeat.VRRPPacket, 16)}
	if p.a, err = lab.AddNode("a"); err != nil {
		t.Fatal(err)
	}
	if p.b, err = lab.AddNode("b"); err != nil {
		t.Fatal(err)
	}
	for n, addrs := range map[*netlab.Node][]string{p.a: {"10.9.0.1/24", "fd09::1/64"}, p.b: {"10.9.0.2/24", "fd09::2/64"}} {
		if _, err := lab.Connect(n, br, "eth0", addrs...); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := lab.Link(p.a, "eth1", []string{"10.8.0.1/30"}, p.b, "eth1", []string{"10.8.0.2/30"}); err != nil {
		t.Fatal(err)
	}
	open := func(n *netlab.Node, src string, v6 bool, out chan heartbeat.VRRPPacket) *heartbeat.VRRPSocket {
		var s *heartbeat.VRRPSocket
		err := n.Do(func() error {
			cfg := heartbeat.VRRPSocketConfig{Interface: "eth0", IPv6: v6, Multicast: multicast}
			if src != "" {
				cfg.Source = netip.MustParseAddr(src)
			}
			if out != nil {
				cfg.OnPacket = func(p heartbeat.VRRPPacket) { out <- p }
			}
			var err error
			s, err = heartbeat.ListenVRRP(cfg)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	p.a4, p.b4 = open(p.a, "10.9.0.1", false, nil), open(p.b, "10.9.0.2", false, p.got4)
	p.a6, p.b6 = open(p.a, "", true, nil), open(p.b, "", true, p.got6)
	return p
}

func advertBytes(t *testing.T, src, dst netip.Addr, prio uint8) []byte {
	t.Helper()
	a := vrrp.Advert{VRID: 51, Priority: prio, Interval: 100 * time.Millisecond, Addrs: []netip.Addr{netip.MustParseAddr("10.9.0.100")}}
	if src.Is6() {
		a.Addrs = []netip.Addr{netip.MustParseAddr("fd09::100")}
	}
	b, err := a.Marshal(src, dst)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func expectAdvert(t *testing.T, ch chan heartbeat.VRRPPacket, src, dst netip.Addr, prio uint8) {
	t.Helper()
	select {
	case p := <-ch:
		if p.Src != src || p.Dst != dst {
			t.Fatalf("packet from %v to %v, want %v -> %v", p.Src, p.Dst, src, dst)
		}
		a, err := vrrp.Parse(p.Payload, p.Src, p.Dst)
		if err != nil {
			t.Fatalf("received advert does not parse: %v", err)
		}
		if a.Priority != prio || a.VRID != 51 {
			t.Fatalf("advert %v, want priority %d", a, prio)
		}
	case <-time.After(2 * time.Second):
		t.Fatalf("no advert from %v to %v", src, dst)
	}
}

func expectNothing(t *testing.T, ch chan heartbeat.VRRPPacket) {
	t.Helper()
	select {
	case p := <-ch:
		t.Fatalf("unexpected packet %v -> %v", p.Src, p.Dst)
	case <-time.After(200 * time.Millisecond):
	}
}

func TestVRRPSocketMulticastAndUnicast(t *testing.T) {
	p := newVRRPPair(t, true)
	a4, b4 := netip.MustParseAddr("10.9.0.1"), netip.MustParseAddr("10.9.0.2")

	// IPv4 to the group, and unicast.
	if err := p.a4.Send(advertBytes(t, a4, p.a4.Group(), 150), p.a4.Group()); err != nil {
		t.Fatal(err)
	}
	expectAdvert(t, p.got4, a4, p.a4.Group(), 150)
	if err := p.a4.Send(advertBytes(t, a4, b4, 140), b4); err != nil {
		t.Fatal(err)
	}
	expectAdvert(t, p.got4, a4, b4, 140)

	// IPv6 from the link-local address to ff02::12.
	src6 := p.a6.Source()
	if !src6.IsLinkLocalUnicast() {
		t.Fatalf("IPv6 source %v is not link-local", src6)
	}
	if err := p.a6.Send(advertBytes(t, src6, p.a6.Group(), 130), p.a6.Group()); err != nil {
		t.Fatal(err)
	}
	expectAdvert(t, p.got6, src6, p.a6.Group(), 130)

	// A sender never hears itself (multicast loop off, own source dropped).
	if st := p.a4.Stats(); st.Received != 0 || st.Sent != 2 {
		t.Errorf("a's IPv4 socket: %+v", st)
	}
}

// TestVRRPResend: Resend sends the last Send's packet again, to its
// destination, in both families; before any Send it is an error.
func TestVRRPResend(t *testing.T) {
	p := newVRRPPair(t, true)
	a4, b4 := netip.MustParseAddr("10.9.0.1"), netip.MustParseAddr("10.9.0.2")
	if err := p.a4.Resend(); err == nil {
		t.Error("a resend before any send did not fail")
	}
	// sendResend sends one advert from src to dst, then resends it n
	// times: each arrives as sent.
	sendResend := func(sock *heartbeat.VRRPSocket, got chan heartbeat.VRRPPacket, src, dst netip.Addr, prio uint8, n int) {
		t.Helper()
		if err := sock.Send(advertBytes(t, src, dst, prio), dst); err != nil {
			t.Fatal(err)
		}
		expectAdvert(t, got, src, dst, prio)
		for range n {
			if err := sock.Resend(); err != nil {
				t.Fatal(err)
			}
			expectAdvert(t, got, src, dst, prio)
		}
	}
	sendResend(p.a4, p.got4, a4, b4, 140, 2)
	sendResend(p.a4, p.got4, a4, p.a4.Group(), 150, 1)
	sendResend(p.a6, p.got6, p.a6.Source(), p.a6.Group(), 130, 1)
	if st := p.a4.Stats(); st.Sent != 5 {
		t.Errorf("a's IPv4 socket counted %d sent, want 5", st.Sent)
	}
	p.a4.Close()
	if err := p.a4.Resend(); err == nil {
		t.Error("a resend on a closed socket did not fail")
	}
}

// TestVRRPSocketDropsRoutedPackets: a packet with TTL 64 (it was routed, or
// forged off-link) is dropped and counted, never delivered.
func TestVRRPSocketDropsRoutedPackets(t *testing.T) {
	p := newVRRPPair(t, true)
	a4 := netip.MustParseAddr("10.9.0.1")
	group := p.a4.Group()
	payload := advertBytes(t, a4, group, 150)
	err := p.a.Do(func() error {
		c, err := net.ListenIP("ip4:112", &net.IPAddr{IP: a4.AsSlice()})
		if err != nil {
			return err
		}
		defer c.Close()
		raw, _ := c.SyscallConn()
		var serr error
		raw.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MULTICAST_TTL, 64)
		})
		if serr != nil {
			return serr
		}
		_, err = c.WriteToIP(payload, &net.IPAddr{IP: group.AsSlice()})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	expectNothing(t, p.got4)
	if st := p.b4.Stats(); st.BadTTL != 1 || st.Received != 0 {
		t.Errorf("b's stats after a TTL-64 advert: %+v", st)
	}
}

// TestVRRPSocketIsBoundToItsInterface: adverts that arrive on another
// interface (eth1) do not reach eth0's socket.
func TestVRRPSocketIsBoundToItsInterface(t *testing.T) {
	p := newVRRPPair(t, true)
	var s *heartbeat.VRRPSocket
	err := p.a.Do(func() error {
		var err error
		s, err = heartbeat.ListenVRRP(heartbeat.VRRPSocketConfig{Interface: "eth1", Source: netip.MustParseAddr("10.8.0.1"), Multicast: true})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	src := netip.MustParseAddr("10.8.0.1")
	if err := s.Send(advertBytes(t, src, s.Group(), 150), s.Group()); err != nil {
		t.Fatal(err)
	}
	if err := s.Send(advertBytes(t, src, netip.MustParseAddr("10.8.0.2"), 150), netip.MustParseAddr("10.8.0.2")); err != nil {
		t.Fatal(err)
	}
	expectNothing(t, p.got4)
}

// TestVRRPSocketUnicastOnly: without Multicast the socket does not hear the
// group (another cluster's multicast adverts), but hears unicast.
func TestVRRPSocketUnicastOnly(t *testing.T) {
	p := newVRRPPair(t, false)
	a4, b4 := netip.MustParseAddr("10.9.0.1"), netip.MustParseAddr("10.9.0.2")
	if err := p.a4.Send(advertBytes(t, a4, p.a4.Group(), 150), p.a4.Group()); err != nil {
		t.Fatal(err)
	}
	expectNothing(t, p.got4)
	if err := p.a4.Send(advertBytes(t, a4, b4, 150), b4); err != nil {
		t.Fatal(err)
	}
	expectAdvert(t, p.got4, a4, b4, 150)
}

func TestVRRPSocketErrors(t *testing.T) {
	if _, err := heartbeat.ListenVRRP(heartbeat.VRRPSocketConfig{Interface: "no-such-if0", Source: netip.MustParseAddr("10.0.0.1")}); err == nil {
		t.Error("a missing interface was accepted")
	}
	if _, err := heartbeat.ListenVRRP(heartbeat.VRRPSocketConfig{Interface: "lo", IPv6: false, Source: netip.MustParseAddr("::1")}); err == nil {
		t.Error("an IPv6 source on an IPv4 socket was accepted")
	}
}

// TestVRRPSocketManual: a Manual socket has no reader; its owner waits on
// Fd and Drain hands over what is queued, in order, at most 64 at a time
// (so a flood cannot hold the engine), and nothing when nothing is queued.
func TestVRRPSocketManual(t *testing.T) {
	p := newVRRPPair(t, true)
	a4 := netip.MustParseAddr("10.9.0.1")
	var m *heartbeat.VRRPSocket
	if err := p.b.Do(func() (err error) {
		m, err = heartbeat.ListenVRRP(heartbeat.VRRPSocketConfig{Interface: "eth0", Source: netip.MustParseAddr("10.9.0.2"), Multicast: true, Manual: true,
			OnPacket: func(heartbeat.VRRPPacket) { t.Error("OnPacket called on a Manual socket") }})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	var got []uint8
	drain := func() (n int, more bool) {
		more = m.Drain(func(pk heartbeat.VRRPPacket) {
			n++
			got = append(got, pk.Payload[2]) // the priority
		})
		return n, more
	}
	if n, more := drain(); n != 0 || more {
		t.Fatalf("Drain of an empty socket gave %d packets, more %v", n, more)
	}
	const sent = 70
	for i := range sent {
		if err := p.a4.Send(advertBytes(t, a4, p.a4.Group(), uint8(100+i)), p.a4.Group()); err != nil {
			t.Fatal(err)
		}
	}
	// b's other socket hears them in the same softirq: once it has all,
	// so does the Manual one.
	for range sent {
		select {
		case <-p.got4:
		case <-time.After(5 * time.Second):
			t.Fatal("adverts not delivered")
		}
	}
	pfd := []unix.PollFd{{Fd: int32(m.Fd()), Events: unix.POLLIN}}
	if n, err := unix.Poll(pfd, 2000); err != nil || n != 1 {
		t.Fatalf("Fd not readable: %d, %v", n, err)
	}
	if n, more := drain(); n != 64 || !more {
		t.Errorf("first Drain gave %d packets, more %v; want 64 (the cap), more", n, more)
	}
	if n, more := drain(); n != sent-64 || more {
		t.Errorf("second Drain gave %d packets, more %v; want %d, no more", n, more, sent-64)
	}
	for i, prio := range got {
		if prio != uint8(100+i) {
			t.Fatalf("packet %d has priority %d, want %d (order kept)", i, prio, 100+i)
		}
	}
	if st := m.Stats(); st.Received != sent {
		t.Errorf("stats %+v, want %d received", st, sent)
	}
}
