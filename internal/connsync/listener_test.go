package connsync

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"

	"github.com/hadirector/hadirector/integration/netlab"
	"github.com/hadirector/hadirector/internal/ipvs"
)

// Host tests of the Listener: crafted datagrams from one network namespace
// to the sync group on a veth, the listener in the other. They need root;
// the kernel needs multicast, not IPVS.

// syncLab is two nodes, "master" and "backup", linked by sync0 (the sync
// link, IPv4 and IPv6) and other0 (another link on which the group is sent
// too, to show that the listener hears only its interface).
type syncLab struct {
	master, backup *netlab.Node
}

func newSyncLab(t *testing.T) syncLab {
	t.Helper()
	lab := netlab.NewForTest(t, "hdls")
	var s syncLab
	var err error
	if s.master, err = lab.AddNode("master"); err != nil {
		t.Fatal(err)
	}
	if s.backup, err = lab.AddNode("backup"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := lab.Link(s.master, "sync0", []string{"10.9.0.1/24", "fd00:9::1/64"},
		s.backup, "sync0", []string{"10.9.0.2/24", "fd00:9::2/64"}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := lab.Link(s.master, "other0", []string{"10.8.0.1/24"},
		s.backup, "other0", []string{"10.8.0.2/24"}); err != nil {
		t.Fatal(err)
	}
	return s
}

// listen starts a listener in n's namespace; the test's cleanup closes it.
func listen(t *testing.T, n *netlab.Node, cfg ListenerConfig) *Listener {
	t.Helper()
	var l *Listener
	if err := n.Do(func() (err error) { l, err = Listen(cfg); return err }); err != nil {
		t.Fatalf("Listen(%+v) in %s: %v", cfg, n, err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// sender sends datagrams from n to group on ifname, as a master daemon does.
type sender struct {
	t     *testing.T
	pc    net.PacketConn
	group netip.Addr
}

func newSender(t *testing.T, n *netlab.Node, ifname string, group netip.Addr) *sender {
	t.Helper()
	network, wildcard := "udp4", "0.0.0.0:0"
	if group.Is6() {
		network, wildcard = "udp6", "[::]:0"
	}
	var pc net.PacketConn
	err := n.Do(func() error {
		var err error
		if pc, err = net.ListenPacket(network, wildcard); err != nil {
			return err
		}
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		if group.Is6() {
			return ipv6.NewPacketConn(pc).SetMulticastInterface(ifi)
		}
		return ipv4.NewPacketConn(pc).SetMulticastInterface(ifi)
	})
	if err != nil {
		t.Fatalf("sender on %s:%s: %v", n, ifname, err)
	}
	t.Cleanup(func() { pc.Close() })
	return &sender{t: t, pc: pc, group: group}
}

func (s *sender) send(port uint16, datagrams ...[]byte) {
	s.t.Helper()
	for _, b := range datagrams {
		if _, err := s.pc.WriteTo(b, net.UDPAddrFromAddrPort(netip.AddrPortFrom(s.group, port))); err != nil {
			s.t.Fatalf("send to %v port %d: %v", s.group, port, err)
		}
	}
}

// awaitMessages waits until l has counted n datagrams, and a little longer
// to catch any excess.
func awaitMessages(t *testing.T, l *Listener, n uint64) ListenerStats {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for l.Stats().Messages < n && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	s := l.Stats()
	if s.Messages != n {
		t.Fatalf("listener counted %d datagrams, want %d: %+v", s.Messages, n, s)
	}
	return s
}

func encode(t *testing.T, m Message) []byte {
	t.Helper()
	b, err := Encode(&m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// connN is a TCP ESTABLISHED connection from client port 40000+i.
func connN(i int) Conn {
	c := conn4
	c.Client = netip.AddrPortFrom(c.Client.Addr(), uint16(40000+i))
	return c
}

// TestListenerCounts sends good and malformed datagrams and checks every
// counter, the first-seen table and OnEntry.
func TestListenerCounts(t *testing.T) {
	s := newSyncLab(t)
	var (
		mu      sync.Mutex
		entries []Conn
	)
	start := time.Now()
	l := listen(t, s.backup, ListenerConfig{Interface: "sync0", SyncID: 5, MaxLen: 200,
		OnEntry: func(seen time.Time, c Conn) {
			mu.Lock()
			defer mu.Unlock()
			if seen.Before(start.Add(-time.Second)) || seen.After(time.Now().Add(time.Second)) {
				t.Errorf("OnEntry time %v, test started %v", seen, start)
			}
			entries = append(entries, c)
		}})
	if got := l.Addrs(); len(got) != 1 || got[0] != netip.AddrPortFrom(DefaultGroup, DefaultPort) {
		t.Errorf("Addrs %v, want [224.0.0.81:8848]", got)
	}
	udp := connN(1)
	udp.Protocol, udp.State, udp.Timeout = ipvs.UDP, 0, 300*time.Second
	tpl := Conn{Family: ipvs.IPv4, Protocol: ipvs.TCP, Flags: FlagTemplate, State: 1, Client: ap("10.0.1.0:0"),
		Virtual: ap("10.0.1.100:80"), Real: ap("10.0.2.2:8080"), Timeout: 360 * time.Second}
	v0 := connN(2)
	v0.Timeout = 0
	badProto := tcpEst
	badProto.proto = 99
	eight := make([]Conn, 8)
	for i := range eight {
		eight[i] = connN(100 + i)
	}
	good := [][]byte{
		encode(t, Message{Version: 1, SyncID: 5, Conns: []Conn{connN(0), udp, tpl}}),
		encode(t, Message{Version: 0, SyncID: 5, Conns: []Conn{v0}}),
		msg1(5, badProto.bytes(), tcpEst.bytes()), // one skipped, one applied
		encode(t, Message{Version: 1, SyncID: 5}), // empty
	}
	bad := [][]byte{
		{0, 5, 0}, // truncated
		cat(encode(t, Message{Version: 1, SyncID: 5, Conns: []Conn{connN(3)}}), []byte{0, 0, 0, 0}), // bad size
		{0, 5, 0, 8, 0, 2, 0, 0}, // bad version
		encode(t, Message{Version: 1, SyncID: 6, Conns: []Conn{connN(4)}}), // wrong sync ID
		encode(t, Message{Version: 1, SyncID: 5, Conns: eight}),            // 296 bytes > MaxLen 200
	}
	m := newSender(t, s.master, "sync0", DefaultGroup)
	m.send(DefaultPort, good...)
	m.send(DefaultPort, bad...)
	st := awaitMessages(t, l, uint64(len(good)+len(bad)))

	if st.Entries != 5 {
		t.Errorf("Entries %d, want 5 (3 + 1 + 1)", st.Entries)
	}
	var wantSkipped, wantDrops [NumDropReasons]uint64
	wantSkipped[DropUnknownProtocol] = 1
	for _, r := range []DropReason{DropTruncated, DropBadSize, DropBadVersion, DropWrongSyncID, DropOversized} {
		wantDrops[r] = 1
	}
	if st.Skipped != wantSkipped || st.Drops != wantDrops {
		t.Errorf("Skipped %v, Drops %v; want %v, %v", st.Skipped, st.Drops, wantSkipped, wantDrops)
	}
	wantBytes := 0
	for _, b := range append(good, bad...) {
		wantBytes += len(b)
	}
	if st.Bytes != uint64(wantBytes) {
		t.Errorf("Bytes %d, want %d", st.Bytes, wantBytes)
	}
	// Every datagram of 2 bytes or more has a sync ID byte: 5, but one 6.
	if fmt.Sprint(st.BySyncID) != "map[5:8 6:1]" {
		t.Errorf("BySyncID %v, want map[5:8 6:1]", st.BySyncID)
	}
	wantKinds := map[EntryKind]uint64{
		{Protocol: ipvs.TCP, State: 1}:                 3,
		{Protocol: ipvs.UDP}:                           1,
		{Protocol: ipvs.TCP, Template: true, State: 1}: 1,
	}
	if fmt.Sprint(st.ByKind) != fmt.Sprint(wantKinds) {
		t.Errorf("ByKind %v, want %v", st.ByKind, wantKinds)
	}
	for k, want := range map[EntryKind]string{
		{Protocol: ipvs.TCP, State: 1}:                 "TCP ESTABLISHED",
		{Protocol: ipvs.TCP, Template: true, State: 1}: "template TCP ASSURED",
		{Protocol: 0, Template: true, State: 0}:        "template IP NONE",
	} {
		if k.String() != want {
			t.Errorf("%+v.String() = %q, want %q", k, k.String(), want)
		}
	}
	master := netip.MustParseAddr("10.9.0.1")
	if len(st.Senders) != 1 || st.Senders[0].Addr != master || st.Senders[0].Messages != st.Messages ||
		st.LastSender.Addr() != master || st.OtherSenders != 0 {
		t.Errorf("senders %+v (last %v, others %d), want only %v", st.Senders, st.LastSender, st.OtherSenders, master)
	}
	if len(st.Ports) != 1 || st.Ports[0] != (PortStats{Port: DefaultPort, Messages: st.Messages}) {
		t.Errorf("Ports %+v", st.Ports)
	}
	now := time.Now()
	if age := st.Age(now); age < 0 || age > 5*time.Second || st.LastSeen.Before(start.Add(-time.Second)) {
		t.Errorf("LastSeen %v, Age %v (test started %v)", st.LastSeen, age, start)
	}
	if st.LastAccepted.IsZero() || st.LastDrop.IsZero() || st.SocketDrops != 0 || st.ReadErrors != 0 {
		t.Errorf("LastAccepted %v, LastDrop %v, SocketDrops %d, ReadErrors %d", st.LastAccepted, st.LastDrop,
			st.SocketDrops, st.ReadErrors)
	}
	if (&ListenerStats{}).Age(now) != -1 {
		t.Error("Age without datagrams is not -1")
	}

	// The first-seen table has the applied entries (the v1 tcpEst
	// is conn4), none of the dropped ones.
	if st.FirstSeen != 5 || st.FirstSeenOverflow != 0 {
		t.Errorf("first-seen table: %d entries, overflow %d; want 5, 0", st.FirstSeen, st.FirstSeenOverflow)
	}
	for _, c := range []Conn{connN(0), udp, tpl, v0, conn4} {
		if seen, ok := l.FirstSeen(c.Key()); !ok || seen.Before(start.Add(-time.Second)) {
			t.Errorf("FirstSeen(%+v) = %v, %v", c.Key(), seen, ok)
		}
	}
	for _, c := range []Conn{connN(3), connN(4), eight[0]} {
		if _, ok := l.FirstSeen(c.Key()); ok {
			t.Errorf("a dropped entry is in the first-seen table: %+v", c.Key())
		}
	}
	mu.Lock()
	if len(entries) != 5 {
		t.Errorf("OnEntry saw %d entries, want 5: %+v", len(entries), entries)
	}
	mu.Unlock()
	l.ResetFirstSeen()
	if st := l.Stats(); st.FirstSeen != 0 {
		t.Errorf("after ResetFirstSeen the table has %d entries", st.FirstSeen)
	}
}

// TestListenerInterfaceAndPorts: a listener hears its interface only, and
// with Ports > 1 every port of the range and no other. A second listener on
// the same group and ports (another interface) shares them.
func TestListenerInterfaceAndPorts(t *testing.T) {
	s := newSyncLab(t)
	const port = 9000
	l := listen(t, s.backup, ListenerConfig{Interface: "sync0", Port: port, Ports: 3})
	other := listen(t, s.backup, ListenerConfig{Interface: "other0", Port: port})
	msg := encode(t, Message{Version: 1, SyncID: 1, Conns: []Conn{conn4}})

	onSync := newSender(t, s.master, "sync0", DefaultGroup)
	onSync.send(port, msg)
	onSync.send(port+1, msg, msg)
	onSync.send(port+2, msg, msg, msg)
	onSync.send(port+3, msg) // not a sync port
	onOther := newSender(t, s.master, "other0", DefaultGroup)
	onOther.send(port, msg, msg)

	st := awaitMessages(t, l, 6)
	want := []PortStats{{Port: port, Messages: 1}, {Port: port + 1, Messages: 2}, {Port: port + 2, Messages: 3}}
	if fmt.Sprint(st.Ports) != fmt.Sprint(want) {
		t.Errorf("Ports %+v, want %+v", st.Ports, want)
	}
	if got := l.Addrs(); len(got) != 3 || got[2] != netip.AddrPortFrom(DefaultGroup, port+2) {
		t.Errorf("Addrs %v", got)
	}
	ost := awaitMessages(t, other, 2)
	if ost.LastSender.Addr() != netip.MustParseAddr("10.8.0.1") {
		t.Errorf("listener on other0 heard %v", ost.LastSender)
	}
}

// TestListenerIPv6 listens to an IPv6 link-local group.
func TestListenerIPv6(t *testing.T) {
	s := newSyncLab(t)
	group := netip.MustParseAddr("ff02::8848")
	l := listen(t, s.backup, ListenerConfig{Interface: "sync0", Group: group})
	v6 := Conn{Family: ipvs.IPv6, Protocol: ipvs.TCP, State: 1, Client: ap("[2001:db8::1]:40000"),
		Virtual: ap("[2001:db8::100]:80"), Real: ap("[2001:db8:1::2]:8080"), Timeout: 900 * time.Second}
	newSender(t, s.master, "sync0", group).send(DefaultPort, encode(t, Message{Version: 1, Conns: []Conn{v6}}))
	st := awaitMessages(t, l, 1)
	if st.Entries != 1 || st.LastSender.Addr().Unmap().Is4() || !st.LastSender.Addr().IsLinkLocalUnicast() {
		t.Errorf("entries %d from %v: want 1 from the master's link-local address", st.Entries, st.LastSender)
	}
	if _, ok := l.FirstSeen(v6.Key()); !ok {
		t.Errorf("IPv6 entry not in the first-seen table")
	}
}

// TestListenerFirstSeenBounded: the first-seen table holds at most
// FirstSeenLimit connections, counts the rest, and makes room by dropping
// entries past their timeout.
func TestListenerFirstSeenBounded(t *testing.T) {
	s := newSyncLab(t)
	l := listen(t, s.backup, ListenerConfig{Interface: "sync0", FirstSeenLimit: 2})
	m := newSender(t, s.master, "sync0", DefaultGroup)
	short := func(i int) Conn { c := connN(i); c.Timeout = time.Second; return c }
	m.send(DefaultPort, encode(t, Message{Version: 1, Conns: []Conn{short(0), short(1), short(2)}}))
	st := awaitMessages(t, l, 1)
	if st.FirstSeen != 2 || st.FirstSeenOverflow != 1 {
		t.Fatalf("table %d, overflow %d; want 2, 1", st.FirstSeen, st.FirstSeenOverflow)
	}
	// Seeing 0 again refreshes it, not a new entry.
	m.send(DefaultPort, encode(t, Message{Version: 1, Conns: []Conn{short(0)}}))
	awaitMessages(t, l, 2)
	time.Sleep(1100 * time.Millisecond)
	m.send(DefaultPort, encode(t, Message{Version: 1, Conns: []Conn{short(2)}}))
	st = awaitMessages(t, l, 3)
	c2 := short(2)
	if _, ok := l.FirstSeen(c2.Key()); !ok || st.FirstSeen != 1 || st.FirstSeenOverflow != 1 {
		t.Errorf("after expiry: table %d, overflow %d, has 2: %v; want 1, 1, true", st.FirstSeen, st.FirstSeenOverflow, ok)
	}

	off := listen(t, s.backup, ListenerConfig{Interface: "sync0", Port: 9100, FirstSeenLimit: -1})
	m.send(9100, encode(t, Message{Version: 1, Conns: []Conn{conn4}}))
	if st := awaitMessages(t, off, 1); st.FirstSeen != 0 || st.Entries != 1 {
		t.Errorf("with no table: %d in it, %d entries", st.FirstSeen, st.Entries)
	}
}

// TestListenerClose: Close returns promptly while the receive goroutines
// block in reads, ends them all, and may be called again; Stats still work.
func TestListenerClose(t *testing.T) {
	s := newSyncLab(t)
	l := listen(t, s.backup, ListenerConfig{Interface: "sync0", Ports: 4})
	newSender(t, s.master, "sync0", DefaultGroup).send(DefaultPort, encode(t, Message{Version: 1}))
	awaitMessages(t, l, 1)
	if n := receivers(); n != 4 {
		t.Errorf("%d receive goroutines, want 4", n)
	}
	start := time.Now()
	if err := l.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Close took %v", d)
	}
	if n := receivers(); n != 0 {
		t.Errorf("%d receive goroutines left after Close", n)
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if st := l.Stats(); st.Messages != 1 {
		t.Errorf("Stats after Close: %d messages", st.Messages)
	}
	// The sockets are gone: the ports can be listened on again.
	listen(t, s.backup, ListenerConfig{Interface: "sync0", Ports: 4}).Close()
}

// receivers counts the goroutines running Listener.receive.
func receivers() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	return strings.Count(string(buf), "connsync.(*Listener).receive(")
}

// TestListenerConfigRefused needs no privileges.
func TestListenerConfigRefused(t *testing.T) {
	for _, cfg := range []ListenerConfig{
		{},
		{Interface: "a-name-too-long-for-linux"},
		{Interface: "eth0", Group: netip.MustParseAddr("10.0.0.1")},
		{Interface: "eth0", Group: netip.MustParseAddr("ff02::1%eth0")},
		{Interface: "eth0", Ports: MaxSyncPorts + 1},
		{Interface: "eth0", Ports: -1},
		{Interface: "eth0", Port: 65535, Ports: 2},
		{Interface: "eth0", SyncID: 256},
		{Interface: "eth0", MaxLen: -1},
	} {
		if l, err := Listen(cfg); !errors.Is(err, ErrConfig) {
			t.Errorf("Listen(%+v) = %v, %v; want ErrConfig", cfg, l, err)
			if l != nil {
				l.Close()
			}
		}
	}
	if _, err := Listen(ListenerConfig{Interface: "hdnosuch0"}); err == nil || !strings.Contains(err.Error(), "hdnosuch0") {
		t.Errorf("Listen on a missing interface: %v", err)
	}
}

func TestListenerFor(t *testing.T) {
	d := DaemonConfig{Role: Backup, Interface: "sync0", SyncID: 7, MaxLen: 1472,
		Group: netip.MustParseAddr("239.1.2.3"), Port: 9000, TTL: 2}
	want := ListenerConfig{Interface: "sync0", Group: d.Group, Port: 9000, Ports: 2, SyncID: 7, MaxLen: 1472}
	if got := ListenerFor(d, 2); fmt.Sprintf("%+v", got) != fmt.Sprintf("%+v", want) {
		t.Errorf("ListenerFor = %+v, want %+v", got, want)
	}
}

// TestListenerSocketDrops: datagrams the kernel drops because the
// listener's buffer is full (here: OnEntry holds the reader up) are counted
// from SO_RXQ_OVFL, and with those read they account for all sent.
func TestListenerSocketDrops(t *testing.T) {
	s := newSyncLab(t)
	release := make(chan struct{})
	l := listen(t, s.backup, ListenerConfig{Interface: "sync0", ReadBuffer: 1, // the kernel's minimum
		OnEntry: func(time.Time, Conn) { <-release }})
	m := newSender(t, s.master, "sync0", DefaultGroup)
	msg := encode(t, Message{Version: 1, Conns: []Conn{conn4}})
	const sent = 50
	for range sent - 1 {
		m.send(DefaultPort, msg)
	}
	time.Sleep(100 * time.Millisecond)
	close(release)
	time.Sleep(100 * time.Millisecond)
	m.send(DefaultPort, msg) // carries the drop count, if the backlog did not
	var st ListenerStats
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if st = l.Stats(); st.Messages+st.SocketDrops >= sent {
			break
		}
	}
	if st.SocketDrops == 0 || st.Messages+st.SocketDrops != sent || st.Ports[0].SocketDrops != st.SocketDrops {
		t.Errorf("%d datagrams read, %d dropped by the socket (port: %+v); want some dropped and %d in all",
			st.Messages, st.SocketDrops, st.Ports, sent)
	}
	t.Logf("%d read, %d dropped by the kernel", st.Messages, st.SocketDrops)
}
