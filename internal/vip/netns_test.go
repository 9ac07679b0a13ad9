package vip_test

// Scenarios in network namespaces (root): directors and a client on one
// bridge, built with netlab. The client captures every frame on its
// interface with an AF_PACKET socket and reads its own neighbour table.

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hadirector/hadirector/integration/netlab"
	"github.com/hadirector/hadirector/internal/vip"
	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/ndp"
	"github.com/mdlayher/packet"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

const labPrefix = "vipt"

var (
	vip4 = netip.MustParsePrefix("10.77.0.100/24")
	vip6 = netip.MustParsePrefix("fd77::100/64")
)

// testLab: client 10.77.0.1 / fd77::1, directors lb1, lb2, ... at
// 10.77.0.11, .12, ... / fd77::11, ::12, ..., all on eth0 on bridge lan.
type testLab struct {
	lab      *netlab.Lab
	client   *netlab.Node
	clientIf *netlab.Iface
	dirs     []*netlab.Node
	dirIfs   []*netlab.Iface
}

func newTestLab(t testing.TB, directors int) *testLab {
	t.Helper()
	lab := netlab.NewForTest(t, labPrefix)
	br, err := lab.AddBridge("lan")
	if err != nil {
		t.Fatal(err)
	}
	tl := &testLab{lab: lab}
	if tl.client, err = lab.AddNode("client"); err != nil {
		t.Fatal(err)
	}
	if tl.clientIf, err = lab.Connect(tl.client, br, "eth0", "10.77.0.1/24", "fd77::1/64"); err != nil {
		t.Fatal(err)
	}
	for i := range directors {
		d, err := lab.AddNode(fmt.Sprintf("lb%d", i+1))
		if err != nil {
			t.Fatal(err)
		}
		ifc, err := lab.Connect(d, br, "eth0", fmt.Sprintf("10.77.0.%d/24", 11+i), fmt.Sprintf("fd77::%d/64", 11+i))
		if err != nil {
			t.Fatal(err)
		}
		tl.dirs = append(tl.dirs, d)
		tl.dirIfs = append(tl.dirIfs, ifc)
	}
	return tl
}

// announcer creates an Announcer inside director i's namespace; Close is a
// Cleanup.
func (tl *testLab) announcer(t testing.TB, i int, cfg vip.Config) *vip.Announcer {
	t.Helper()
	return tl.announcerLog(t, i, cfg, testLogger(t))
}

func (tl *testLab) announcerLog(t testing.TB, i int, cfg vip.Config, log *slog.Logger) *vip.Announcer {
	t.Helper()
	if cfg.Interface == "" {
		cfg.Interface = "eth0"
	}
	var a *vip.Announcer
	err := tl.dirs[i].Do(func() (err error) {
		a, err = vip.New(cfg, log)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := a.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return a
}

type tbWriter struct{ tb testing.TB }

func (w tbWriter) Write(b []byte) (int, error) {
	w.tb.Log(string(bytes.TrimRight(b, "\n")))
	return len(b), nil
}

func testLogger(tb testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tbWriter{tb}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// frame is one captured frame, decoded if it is ARP or an ICMPv6 NA.
type frame struct {
	at       time.Time
	src, dst net.HardwareAddr
	arp      *arp.Packet
	na       *ndp.NeighborAdvertisement
	ip6Src   netip.Addr
	ip6Dst   netip.Addr
	hopLimit uint8
}

// capture records every frame seen on a node's interface.
type capture struct {
	mu     sync.Mutex
	frames []frame
	news   chan struct{} // poked on each decoded frame
}

func startCapture(t testing.TB, n *netlab.Node, ifname string) *capture {
	t.Helper()
	var c *packet.Conn
	err := n.Do(func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		c, err = packet.Listen(ifi, packet.Raw, unix.ETH_P_ALL, nil)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	cp := &capture{news: make(chan struct{}, 1)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 9000)
		for {
			nr, _, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			at := time.Now()
			if f, ok := decode(buf[:nr]); ok {
				f.at = at
				cp.mu.Lock()
				cp.frames = append(cp.frames, f)
				cp.mu.Unlock()
				select {
				case cp.news <- struct{}{}:
				default:
				}
			}
		}
	}()
	t.Cleanup(func() { c.Close(); <-done })
	return cp
}

func decode(b []byte) (frame, bool) {
	var ef ethernet.Frame
	if err := ef.UnmarshalBinary(b); err != nil {
		return frame{}, false
	}
	f := frame{src: ef.Source, dst: ef.Destination}
	switch ef.EtherType {
	case ethernet.EtherTypeARP:
		var p arp.Packet
		if err := p.UnmarshalBinary(ef.Payload); err != nil {
			return frame{}, false
		}
		f.arp = &p
		return f, true
	case ethernet.EtherTypeIPv6:
		h := ef.Payload
		if len(h) < 40 || h[6] != 58 { // ICMPv6 straight after the header
			return frame{}, false
		}
		plen := int(binary.BigEndian.Uint16(h[4:6]))
		if len(h) < 40+plen {
			return frame{}, false
		}
		m, err := ndp.ParseMessage(h[40 : 40+plen])
		if err != nil {
			return frame{}, false
		}
		na, ok := m.(*ndp.NeighborAdvertisement)
		if !ok {
			return frame{}, false
		}
		f.na = na
		f.hopLimit = h[7]
		f.ip6Src, _ = netip.AddrFromSlice(h[8:24])
		f.ip6Dst, _ = netip.AddrFromSlice(h[24:40])
		return f, true
	}
	return frame{}, false
}

// snapshot returns the frames captured so far that match.
func (c *capture) snapshot(match func(frame) bool) []frame {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []frame
	for _, f := range c.frames {
		if match(f) {
			out = append(out, f)
		}
	}
	return out
}

// waitFor waits until at least n matching frames were captured.
func (c *capture) waitFor(t testing.TB, n int, timeout time.Duration, match func(frame) bool) []frame {
	t.Helper()
	deadline := time.After(timeout)
	for {
		if got := c.snapshot(match); len(got) >= n {
			return got
		}
		select {
		case <-c.news:
		case <-deadline:
			got := c.snapshot(match)
			t.Fatalf("captured %d matching frames within %v, want %d", len(got), timeout, n)
			return nil
		}
	}
}

// garp matches a gratuitous ARP for ip from mac, of the given operation
// (0: either), with every field checked.
func garp(ip netip.Addr, mac net.HardwareAddr, op arp.Operation) func(frame) bool {
	return func(f frame) bool {
		p := f.arp
		if p == nil || !bytes.Equal(f.src, mac) || p.SenderIP != ip || p.TargetIP != ip {
			return false
		}
		if op != 0 && p.Operation != op {
			return false
		}
		return bytes.Equal(f.dst, ethernet.Broadcast) && bytes.Equal(p.SenderHardwareAddr, mac)
	}
}

// unsolNA matches an unsolicited NA for ip from mac.
func unsolNA(ip netip.Addr, mac net.HardwareAddr) func(frame) bool {
	return func(f frame) bool {
		return f.na != nil && bytes.Equal(f.src, mac) && f.na.TargetAddress == ip
	}
}

func after(t time.Time, m func(frame) bool) func(frame) bool {
	return func(f frame) bool { return !f.at.Before(t) && m(f) }
}

func fromMAC(mac net.HardwareAddr) func(frame) bool {
	return func(f frame) bool { return bytes.Equal(f.src, mac) && (f.arp != nil || f.na != nil) }
}

// neigh returns the client-side neighbour entry for ip (nil if none).
func neigh(t testing.TB, n *netlab.Node, ifc *netlab.Iface, ip netip.Addr) *netlink.Neigh {
	t.Helper()
	fam := netlink.FAMILY_V4
	if ip.Is6() {
		fam = netlink.FAMILY_V6
	}
	list, err := n.Netlink().NeighList(ifc.Index(), fam)
	if err != nil {
		t.Fatal(err)
	}
	for i := range list {
		if a, ok := netip.AddrFromSlice(list[i].IP); ok && a.Unmap() == ip {
			return &list[i]
		}
	}
	return nil
}

// waitNeigh waits until the node's entry for ip has hardware address mac.
func waitNeigh(t testing.TB, n *netlab.Node, ifc *netlab.Iface, ip netip.Addr, mac net.HardwareAddr, timeout time.Duration) *netlink.Neigh {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		e := neigh(t, n, ifc, ip)
		if e != nil && bytes.Equal(e.HardwareAddr, mac) {
			return e
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: neighbour entry for %s = %s, want %s", n, ip, describeNeigh(e), mac)
		}
		time.Sleep(time.Millisecond)
	}
}

func describeNeigh(e *netlink.Neigh) string {
	if e == nil {
		return "none"
	}
	return fmt.Sprintf("%s %s", e.HardwareAddr, neighState(e.State))
}

func neighState(s int) string {
	names := map[int]string{
		netlink.NUD_INCOMPLETE: "INCOMPLETE", netlink.NUD_REACHABLE: "REACHABLE", netlink.NUD_STALE: "STALE",
		netlink.NUD_DELAY: "DELAY", netlink.NUD_PROBE: "PROBE", netlink.NUD_FAILED: "FAILED",
		netlink.NUD_NOARP: "NOARP", netlink.NUD_PERMANENT: "PERMANENT",
	}
	if n, ok := names[s]; ok {
		return n
	}
	return fmt.Sprintf("state(%#x)", s)
}

var fakeMAC = net.HardwareAddr{0x02, 0xde, 0xad, 0xbe, 0xef, 0x01}

// setStale gives the client an old, wrong neighbour entry for ip.
func setStale(t testing.TB, n *netlab.Node, ifc *netlab.Iface, ip netip.Addr) {
	t.Helper()
	fam := netlink.FAMILY_V4
	if ip.Is6() {
		fam = netlink.FAMILY_V6
	}
	err := n.Netlink().NeighSet(&netlink.Neigh{
		LinkIndex: ifc.Index(), Family: fam, State: netlink.NUD_STALE,
		IP: net.IP(ip.AsSlice()), HardwareAddr: fakeMAC,
	})
	if err != nil {
		t.Fatal(err)
	}
	if e := neigh(t, n, ifc, ip); e == nil || !bytes.Equal(e.HardwareAddr, fakeMAC) {
		t.Fatalf("fake entry not set: %s", describeNeigh(e))
	}
}

// addrs lists the director's addresses on eth0 as prefix -> flags.
func addrs(t testing.TB, n *netlab.Node, ifc *netlab.Iface) map[netip.Prefix]netlink.Addr {
	t.Helper()
	link, err := n.Netlink().LinkByIndex(ifc.Index())
	if err != nil {
		t.Fatal(err)
	}
	list, err := n.Netlink().AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	out := map[netip.Prefix]netlink.Addr{}
	for _, a := range list {
		ip, _ := netip.AddrFromSlice(a.IP)
		bits, _ := a.Mask.Size()
		out[netip.PrefixFrom(ip.Unmap(), bits)] = a
	}
	return out
}

func addrDel(t testing.TB, n *netlab.Node, ifc *netlab.Iface, p netip.Prefix) {
	t.Helper()
	link, err := n.Netlink().LinkByIndex(ifc.Index())
	if err != nil {
		t.Fatal(err)
	}
	a := &netlink.Addr{IPNet: &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
	if err := n.Netlink().AddrDel(link, a); err != nil {
		t.Fatalf("delete %s: %v", p, err)
	}
}

func addrAdd(t testing.TB, n *netlab.Node, ifc *netlab.Iface, p netip.Prefix) {
	t.Helper()
	link, err := n.Netlink().LinkByIndex(ifc.Index())
	if err != nil {
		t.Fatal(err)
	}
	a := &netlink.Addr{IPNet: &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
	if p.Addr().Is6() {
		a.Flags = unix.IFA_F_NODAD
	}
	if err := n.Netlink().AddrAdd(link, a); err != nil {
		t.Fatalf("add %s: %v", p, err)
	}
}

// TestTakeIPv4: Take adds the VIP and sends both GARP forms, Repeat of
// each in the first burst and again in the second; the client's stale
// entry for the VIP moves to the director's MAC.
func TestTakeIPv4(t *testing.T) {
	tl := newTestLab(t, 1)
	d, dif, mac := tl.dirs[0], tl.dirIfs[0], tl.dirIfs[0].MAC()
	cp := startCapture(t, tl.client, "eth0")
	setStale(t, tl.client, tl.clientIf, vip4.Addr())

	const repeat, interval, second = 3, 5 * time.Millisecond, 200 * time.Millisecond
	a := tl.announcer(t, 0, vip.Config{VIPs: []netip.Prefix{vip4}, Label: "eth0:vip",
		Repeat: repeat, Interval: interval, SecondBurstDelay: second})
	if a.Held() {
		t.Fatal("held before Take")
	}
	t0 := time.Now()
	if err := a.Take(); err != nil {
		t.Fatal(err)
	}
	if !a.Held() {
		t.Fatal("not held after Take")
	}

	got, ok := addrs(t, d, dif)[vip4]
	if !ok {
		t.Fatalf("VIP %s not on %s after Take: %v", vip4, dif, addrs(t, d, dif))
	}
	if got.Label != "eth0:vip" || got.Scope != unix.RT_SCOPE_UNIVERSE {
		t.Errorf("VIP label %q scope %d, want eth0:vip, global", got.Label, got.Scope)
	}

	e := waitNeigh(t, tl.client, tl.clientIf, vip4.Addr(), mac, time.Second)
	t.Logf("client's entry for %s after Take: %s (was %s STALE)", vip4.Addr(), describeNeigh(e), fakeMAC)

	all := garp(vip4.Addr(), mac, 0)
	cp.waitFor(t, 4*repeat, 2*time.Second, all)
	time.Sleep(2 * second) // anything more would be a bug
	frames := cp.snapshot(all)
	var first, later []frame
	for _, f := range frames {
		if f.at.Sub(t0) < second-20*time.Millisecond {
			first = append(first, f)
		} else {
			later = append(later, f)
		}
	}
	check := func(name string, fs []frame) {
		var req, rep int
		for _, f := range fs {
			switch f.arp.Operation {
			case arp.OperationRequest:
				req++
				if !bytes.Equal(f.arp.TargetHardwareAddr, ethernet.Broadcast) {
					t.Errorf("%s: request THA %s, want broadcast", name, f.arp.TargetHardwareAddr)
				}
			case arp.OperationReply:
				rep++
				if !bytes.Equal(f.arp.TargetHardwareAddr, mac) {
					t.Errorf("%s: reply THA %s, want the sender's MAC", name, f.arp.TargetHardwareAddr)
				}
			}
		}
		if req != repeat || rep != repeat {
			t.Errorf("%s: %d requests and %d replies, want %d of each", name, req, rep, repeat)
		}
		if len(fs) > 0 {
			t.Logf("%s: %d frames from +%v to +%v after Take was called", name, len(fs),
				fs[0].at.Sub(t0).Round(time.Microsecond), fs[len(fs)-1].at.Sub(t0).Round(time.Microsecond))
		}
	}
	check("first burst", first)
	check("second burst", later)
	if len(later) > 0 && later[0].at.Sub(t0) < second {
		t.Errorf("second burst began %v after Take, before the %v delay", later[0].at.Sub(t0), second)
	}
	if len(first) == repeat*2 {
		if span := first[len(first)-1].at.Sub(first[0].at); span < (repeat-1)*interval-2*time.Millisecond {
			t.Errorf("first burst spans %v, want at least (repeat-1)*interval = %v", span, (repeat-1)*interval)
		}
	}
	st := a.Stats()
	if st.ARPRequests != 2*repeat || st.ARPReplies != 2*repeat || st.Bursts != 2 || st.Errors != 0 || !st.Held {
		t.Errorf("stats: %+v", st)
	}
}

// TestTakeIPv6: the unsolicited NA is right on the wire and moves the
// client's stale entry.
func TestTakeIPv6(t *testing.T) {
	tl := newTestLab(t, 1)
	d, dif, mac := tl.dirs[0], tl.dirIfs[0], tl.dirIfs[0].MAC()
	cp := startCapture(t, tl.client, "eth0")
	setStale(t, tl.client, tl.clientIf, vip6.Addr())

	// A second VIP the client has no entry for: an unsolicited NA does not
	// create one (accept_untracked_na = 0, the default).
	other := netip.MustParsePrefix("fd77::101/64")

	const repeat = 4
	a := tl.announcer(t, 0, vip.Config{VIPs: []netip.Prefix{vip6, other}, Repeat: repeat, SecondBurstDelay: vip.Disabled})
	if err := a.Take(); err != nil {
		t.Fatal(err)
	}
	got, ok := addrs(t, d, dif)[vip6]
	if !ok {
		t.Fatalf("VIP %s not on %s after Take", vip6, dif)
	}
	if got.Flags&unix.IFA_F_NODAD == 0 || got.Flags&(unix.IFA_F_TENTATIVE|unix.IFA_F_DADFAILED) != 0 {
		t.Errorf("VIP flags %#x: want nodad, not tentative or dadfailed", got.Flags)
	}

	e := waitNeigh(t, tl.client, tl.clientIf, vip6.Addr(), mac, time.Second)
	t.Logf("client's entry for %s after Take: %s (was %s STALE)", vip6.Addr(), describeNeigh(e), fakeMAC)

	fs := cp.waitFor(t, repeat, time.Second, unsolNA(vip6.Addr(), mac))
	time.Sleep(100 * time.Millisecond)
	if n := len(cp.snapshot(unsolNA(vip6.Addr(), mac))); n != repeat {
		t.Errorf("%d NAs, want %d", n, repeat)
	}
	f := fs[0]
	wantDst := net.HardwareAddr{0x33, 0x33, 0, 0, 0, 1}
	if !bytes.Equal(f.dst, wantDst) || f.ip6Dst != netip.IPv6LinkLocalAllNodes() || f.ip6Src != vip6.Addr() || f.hopLimit != 255 {
		t.Errorf("NA: eth dst %s, %s -> %s, hop limit %d; want %s, %s -> ff02::1, 255",
			f.dst, f.ip6Src, f.ip6Dst, f.hopLimit, wantDst, vip6.Addr())
	}
	if !f.na.Override || f.na.Solicited || f.na.Router {
		t.Errorf("NA flags: override=%v solicited=%v router=%v", f.na.Override, f.na.Solicited, f.na.Router)
	}
	if len(f.na.Options) != 1 {
		t.Fatalf("NA options: %v", f.na.Options)
	}
	if lla, ok := f.na.Options[0].(*ndp.LinkLayerAddress); !ok || lla.Direction != ndp.Target || !bytes.Equal(lla.Addr, mac) {
		t.Errorf("NA option %+v, want target link-layer address %s", f.na.Options[0], mac)
	}
	if v, err := tl.client.ReadSysctl("net.ipv6.conf.eth0.accept_untracked_na"); err == nil && v == "0" {
		cp.waitFor(t, repeat, time.Second, unsolNA(other.Addr(), mac))
		if e := neigh(t, tl.client, tl.clientIf, other.Addr()); e != nil {
			t.Errorf("accept_untracked_na=0: an unsolicited NA created the entry %s", describeNeigh(e))
		}
	} else {
		t.Logf("accept_untracked_na not 0 here (%q, %v): not checking entry creation", v, err)
	}
	if st := a.Stats(); st.NeighborAdverts != 2*repeat || st.ARPRequests != 0 || st.Errors != 0 {
		t.Errorf("stats: %+v", st)
	}
}

// TestRelease: Release removes the VIPs and nothing is sent after it, not
// the second burst nor the refresh.
func TestRelease(t *testing.T) {
	tl := newTestLab(t, 1)
	d, dif, mac := tl.dirs[0], tl.dirIfs[0], tl.dirIfs[0].MAC()
	cp := startCapture(t, tl.client, "eth0")
	a := tl.announcer(t, 0, vip.Config{VIPs: []netip.Prefix{vip4, vip6}, Repeat: 2,
		Interval: 20 * time.Millisecond, SecondBurstDelay: 300 * time.Millisecond, Refresh: 50 * time.Millisecond})
	if err := a.Take(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(120 * time.Millisecond) // burst done, refreshes under way
	before := len(cp.snapshot(fromMAC(mac)))
	if before == 0 {
		t.Fatal("nothing captured before Release")
	}
	if err := a.Release(); err != nil {
		t.Fatal(err)
	}
	released := time.Now()
	st := a.Stats()
	if a.Held() || st.Held {
		t.Error("held after Release")
	}
	have := addrs(t, d, dif)
	for _, p := range []netip.Prefix{vip4, vip6} {
		if _, ok := have[p]; ok {
			t.Errorf("%s still on %s after Release", p, dif)
		}
	}
	time.Sleep(500 * time.Millisecond)
	// A frame written before Release returned may be read a little later.
	if late := cp.snapshot(after(released.Add(10*time.Millisecond), fromMAC(mac))); len(late) > 0 {
		t.Errorf("%d announcements after Release, the first at +%v", len(late), late[0].at.Sub(released))
	}
	st2 := a.Stats()
	if st2.Rounds != st.Rounds || st2.ARPRequests != st.ARPRequests || st2.NeighborAdverts != st.NeighborAdverts {
		t.Errorf("counters moved after Release: %+v -> %+v", st, st2)
	}
	if err := a.Announce(); !errors.Is(err, vip.ErrNotHeld) {
		t.Errorf("Announce after Release = %v, want ErrNotHeld", err)
	}
	// A deletion now is nobody's business.
	addrAdd(t, d, dif, vip4)
	addrDel(t, d, dif, vip4)
	time.Sleep(50 * time.Millisecond)
	if _, ok := addrs(t, d, dif)[vip4]; ok {
		t.Error("VIP put back while released")
	}
	if err := a.Release(); err != nil { // idempotent
		t.Errorf("second Release: %v", err)
	}
	t.Logf("%d announcements before Release, none after; stats %+v", before, st2)
}

// watchAddrs subscribes to address events in n's namespace.
func watchAddrs(tb testing.TB, n *netlab.Node) <-chan netlink.AddrUpdate {
	tb.Helper()
	h, err := netns.GetFromPath(n.Path())
	if err != nil {
		tb.Fatal(err)
	}
	ch := make(chan netlink.AddrUpdate, 256)
	done := make(chan struct{})
	if err := netlink.AddrSubscribeWithOptions(ch, done, netlink.AddrSubscribeOptions{Namespace: &h}); err != nil {
		h.Close()
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		close(done)
		for range ch {
		}
		h.Close()
	})
	return ch
}

// readd deletes p on the director and returns the time from just before
// the deletion request to the RTM_NEWADDR event of p coming back.
func readd(tb testing.TB, d *netlab.Node, dif *netlab.Iface, events <-chan netlink.AddrUpdate, p netip.Prefix) time.Duration {
	tb.Helper()
	mark := time.Now()
	addrDel(tb, d, dif, p)
	timeout := time.After(2 * time.Second)
	deleted := false // events are ordered: ours is the NEWADDR after our DELADDR
	for {
		select {
		case u := <-events:
			if u.LinkIndex != dif.Index() || !u.LinkAddress.IP.Equal(net.IP(p.Addr().AsSlice())) {
				continue
			}
			if !u.NewAddr {
				deleted = true
			} else if deleted {
				return time.Since(mark)
			}
		case <-timeout:
			tb.Fatalf("%s not back within 2s", p)
		}
	}
}

func drain(ch <-chan netlink.AddrUpdate) {
	for {
		select {
		case <-ch:
		default:
			return
		}
	}
}

// TestReadd: a VIP deleted behind the Announcer's back comes back, is
// announced and counted, with the netlink event watch only (the poll is
// off). It prints the time from the deletion to the VIP's RTM_NEWADDR.
func TestReadd(t *testing.T) {
	tl := newTestLab(t, 1)
	d, dif, mac := tl.dirs[0], tl.dirIfs[0], tl.dirIfs[0].MAC()
	cp := startCapture(t, tl.client, "eth0")
	a := tl.announcer(t, 0, vip.Config{VIPs: []netip.Prefix{vip4, vip6}, Repeat: 1,
		SecondBurstDelay: vip.Disabled, CheckInterval: vip.Disabled})
	events := watchAddrs(t, d)
	if err := a.Take(); err != nil {
		t.Fatal(err)
	}
	const rounds = 20
	lat := map[netip.Prefix][]time.Duration{}
	for range rounds {
		for _, p := range []netip.Prefix{vip4, vip6} {
			drain(events)
			mark := time.Now()
			lat[p] = append(lat[p], readd(t, d, dif, events, p))
			m := garp(p.Addr(), mac, arp.OperationRequest)
			if p.Addr().Is6() {
				m = unsolNA(p.Addr(), mac)
			}
			cp.waitFor(t, 1, time.Second, after(mark, m))
		}
	}
	have := addrs(t, d, dif)
	for _, p := range []netip.Prefix{vip4, vip6} {
		if _, ok := have[p]; !ok {
			t.Errorf("%s missing at the end", p)
		}
	}
	// The last re-add is counted after its address and packets are out:
	// give the counter a moment to catch up before judging it.
	st := a.Stats()
	for deadline := time.Now().Add(2 * time.Second); st.Readds < 2*rounds && time.Now().Before(deadline); st = a.Stats() {
		time.Sleep(time.Millisecond)
	}
	if st.Readds != 2*rounds || st.Errors != 0 {
		t.Errorf("Readds = %d, Errors = %d (%s), want %d and 0", st.Readds, st.Errors, st.LastError, 2*rounds)
	}
	for _, p := range []netip.Prefix{vip4, vip6} {
		ds := lat[p]
		slices.Sort(ds)
		t.Logf("re-add latency %s (deletion requested -> RTM_NEWADDR seen), %d runs: min %v, median %v, max %v",
			p, len(ds), ds[0].Round(time.Microsecond), ds[len(ds)/2].Round(time.Microsecond), ds[len(ds)-1].Round(time.Microsecond))
	}
}

// BenchmarkReadd: time from deleting the VIP behind the Announcer's back
// to its RTM_NEWADDR (the Announcer put it back).
func BenchmarkReadd(b *testing.B) {
	tl := newTestLab(b, 1)
	d, dif := tl.dirs[0], tl.dirIfs[0]
	a := tl.announcerLog(b, 0, vip.Config{VIPs: []netip.Prefix{vip4}, Repeat: 1,
		SecondBurstDelay: vip.Disabled, CheckInterval: vip.Disabled}, nil)
	events := watchAddrs(b, d)
	if err := a.Take(); err != nil {
		b.Fatal(err)
	}
	var sum time.Duration
	b.ResetTimer()
	for range b.N {
		drain(events)
		sum += readd(b, d, dif, events, vip4)
	}
	b.ReportMetric(float64(sum.Microseconds())/float64(b.N), "µs/readd")
}

// TestTakePartialThenPoll: a VIP that cannot be added at Take (IPv6 is
// disabled on the interface) makes Take return an error, but the
// Announcer holds the rest and its periodic check adds the missing VIP once
// that is possible again; no netlink event names it, so this is the poll's
// work alone.
func TestTakePartialThenPoll(t *testing.T) {
	tl := newTestLab(t, 1)
	d, dif, mac := tl.dirs[0], tl.dirIfs[0], tl.dirIfs[0].MAC()
	cp := startCapture(t, tl.client, "eth0")
	if err := d.Sysctl("net.ipv6.conf.eth0.disable_ipv6", "1"); err != nil {
		t.Fatal(err)
	}
	a := tl.announcer(t, 0, vip.Config{VIPs: []netip.Prefix{vip4, vip6}, Repeat: 1,
		SecondBurstDelay: vip.Disabled, CheckInterval: 50 * time.Millisecond})
	err := a.Take()
	if err == nil {
		t.Fatal("Take succeeded with IPv6 disabled")
	}
	t.Logf("Take with IPv6 disabled: %v", err)
	if !a.Held() {
		t.Fatal("not held after a partial Take")
	}
	if _, ok := addrs(t, d, dif)[vip4]; !ok {
		t.Fatal("IPv4 VIP not added")
	}
	cp.waitFor(t, 1, time.Second, garp(vip4.Addr(), mac, arp.OperationRequest))
	enabled := time.Now()
	if err := d.Sysctl("net.ipv6.conf.eth0.disable_ipv6", "0"); err != nil {
		t.Fatal(err)
	}
	cp.waitFor(t, 1, 2*time.Second, after(enabled, unsolNA(vip6.Addr(), mac)))
	if _, ok := addrs(t, d, dif)[vip6]; !ok {
		t.Fatal("IPv6 VIP not added by the poll")
	}
	if st := a.Stats(); st.Readds != 1 {
		t.Errorf("Readds = %d, want 1", st.Readds)
	}
	time.Sleep(150 * time.Millisecond) // a few polls: nothing more to do
	if st := a.Stats(); st.Readds != 1 {
		t.Errorf("Readds = %d after more polls, want still 1", st.Readds)
	}
}

// TestRemoveStale removes the listed VIPs and nothing else.
func TestRemoveStale(t *testing.T) {
	tl := newTestLab(t, 1)
	d, dif := tl.dirs[0], tl.dirIfs[0]
	other := netip.MustParsePrefix("10.77.0.200/24")
	oldLen := netip.MustParsePrefix("10.77.0.101/32") // a VIP left with another prefix length
	for _, p := range []netip.Prefix{vip4, vip6, other, oldLen} {
		addrAdd(t, d, dif, p)
	}
	var removed []netip.Prefix
	err := d.Do(func() (err error) {
		removed, err = vip.RemoveStale("eth0", []netip.Prefix{vip4, vip6, netip.MustParsePrefix("10.77.0.101/24"), netip.MustParsePrefix("10.77.0.102/24")})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(removed, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	want := []netip.Prefix{vip4, oldLen, vip6}
	if !slices.Equal(removed, want) {
		t.Errorf("removed %v, want %v", removed, want)
	}
	have := addrs(t, d, dif)
	for _, p := range want {
		if _, ok := have[p]; ok {
			t.Errorf("%s still there", p)
		}
	}
	for _, p := range append(dif.Addrs(), other) {
		if _, ok := have[p]; !ok {
			t.Errorf("%s was removed, but it is not a VIP", p)
		}
	}
	// Nothing to remove: no error. Unknown interface: ErrNoInterface.
	err = d.Do(func() (err error) {
		removed, err = vip.RemoveStale("eth0", []netip.Prefix{vip4})
		return err
	})
	if err != nil || len(removed) != 0 {
		t.Errorf("second RemoveStale: %v, %v", removed, err)
	}
	err = d.Do(func() error { _, err := vip.RemoveStale("nope0", []netip.Prefix{vip4}); return err })
	if !errors.Is(err, vip.ErrNoInterface) {
		t.Errorf("RemoveStale on a missing interface: %v, want ErrNoInterface", err)
	}
	err = d.Do(func() error {
		_, err := vip.New(vip.Config{Interface: "nope0", VIPs: []netip.Prefix{vip4}}, nil)
		return err
	})
	if !errors.Is(err, vip.ErrNoInterface) {
		t.Errorf("New on a missing interface: %v, want ErrNoInterface", err)
	}
	t.Logf("missing interface: %v", err)
}

// TestFailover: two directors. The client talks to the VIP on lb1 (its
// entry is REACHABLE with lb1's MAC, updated just now); lb2 takes over,
// well within the kernel's 1 s locktime, and the client's entry moves to
// lb2 for both families.
func TestFailover(t *testing.T) {
	tl := newTestLab(t, 2)
	macA, macB := tl.dirIfs[0].MAC(), tl.dirIfs[1].MAC()
	cfg := vip.Config{VIPs: []netip.Prefix{vip4, vip6}, SecondBurstDelay: vip.Disabled}
	a := tl.announcer(t, 0, cfg)
	b := tl.announcer(t, 1, cfg)
	if err := b.Release(); err != nil { // start-up as backup
		t.Fatal(err)
	}
	if err := a.Take(); err != nil {
		t.Fatal(err)
	}
	// The client sends to the VIPs, so it resolves them to lb1.
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	for _, p := range []netip.Prefix{vip4, vip6} {
		c, err := tl.client.DialContext(ctx, "udp", netip.AddrPortFrom(p.Addr(), 9).String())
		if err != nil {
			t.Fatal(err)
		}
		_, _ = c.Write([]byte("hello"))
		c.Close()
		e := waitNeigh(t, tl.client, tl.clientIf, p.Addr(), macA, 2*time.Second)
		t.Logf("before failover: client's entry for %s = %s (lb1 is %s)", p.Addr(), describeNeigh(e), macA)
	}
	t0 := time.Now()
	if err := b.Take(); err != nil {
		t.Fatal(err)
	}
	took := time.Since(t0)
	for _, p := range []netip.Prefix{vip4, vip6} {
		e := waitNeigh(t, tl.client, tl.clientIf, p.Addr(), macB, time.Second)
		t.Logf("after lb2's Take (which took %v): client's entry for %s = %s (lb2 is %s), seen %v after Take was called",
			took.Round(time.Microsecond), p.Addr(), describeNeigh(e), macB, time.Since(t0).Round(time.Microsecond))
	}
	if err := a.Release(); err != nil {
		t.Fatal(err)
	}
	for _, p := range []netip.Prefix{vip4, vip6} {
		if e := neigh(t, tl.client, tl.clientIf, p.Addr()); e == nil || !bytes.Equal(e.HardwareAddr, macB) {
			t.Errorf("after lb1's Release: client's entry for %s = %s", p.Addr(), describeNeigh(e))
		}
	}
}

// TestLinkFlap: while held, the link goes down (which flushes IPv6
// addresses) and up again: the VIPs are there afterwards and announced
// after the link came up. The first burst may be lost while the bridge
// port on the other side comes back (like a switch port), so the link
// coming up also schedules a second burst.
func TestLinkFlap(t *testing.T) {
	tl := newTestLab(t, 1)
	d, dif, mac := tl.dirs[0], tl.dirIfs[0], tl.dirIfs[0].MAC()
	cp := startCapture(t, tl.client, "eth0")
	a := tl.announcer(t, 0, vip.Config{VIPs: []netip.Prefix{vip4, vip6}, Repeat: 2,
		SecondBurstDelay: 200 * time.Millisecond, CheckInterval: vip.Disabled})
	if err := a.Take(); err != nil {
		t.Fatal(err)
	}
	link, err := d.Netlink().LinkByIndex(dif.Index())
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(250 * time.Millisecond) // after Take's second burst
	if err := d.Netlink().LinkSetDown(link); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if a.Held() != true {
		t.Fatal("not held")
	}
	up := time.Now()
	if err := d.Netlink().LinkSetUp(link); err != nil {
		t.Fatal(err)
	}
	cp.waitFor(t, 2, 3*time.Second, after(up, garp(vip4.Addr(), mac, arp.OperationRequest)))
	cp.waitFor(t, 2, 3*time.Second, after(up, unsolNA(vip6.Addr(), mac)))
	have := addrs(t, d, dif)
	for _, p := range []netip.Prefix{vip4, vip6} {
		if _, ok := have[p]; !ok {
			t.Errorf("%s missing after the link flap", p)
		}
	}
	st := a.Stats()
	if st.Errors != 0 {
		t.Errorf("%d errors, the last: %s", st.Errors, st.LastError)
	}
	t.Logf("stats: %+v", st)
}

// TestKernelARPSemantics documents, with hand-made packets, how the Linux
// receiver treats gratuitous ARP; the package's choices rest on it.
func TestKernelARPSemantics(t *testing.T) {
	tl := newTestLab(t, 1)
	mac := tl.dirIfs[0].MAC()
	var pc *packet.Conn
	err := tl.dirs[0].Do(func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		pc, err = packet.Listen(ifi, packet.Raw, unix.ETH_P_ARP, nil)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	ip := netip.MustParseAddr("10.77.0.150")
	send := func(op arp.Operation, tha net.HardwareAddr) {
		t.Helper()
		p, err := arp.NewPacket(op, mac, ip, tha, ip)
		if err != nil {
			t.Fatal(err)
		}
		pb, _ := p.MarshalBinary()
		fb, _ := (&ethernet.Frame{Destination: ethernet.Broadcast, Source: mac, EtherType: ethernet.EtherTypeARP, Payload: pb}).MarshalBinary()
		if _, err := pc.WriteTo(fb, &packet.Addr{HardwareAddr: ethernet.Broadcast}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	entry := func() string { return describeNeigh(neigh(t, tl.client, tl.clientIf, ip)) }
	del := func() {
		_ = tl.client.Netlink().NeighDel(&netlink.Neigh{LinkIndex: tl.clientIf.Index(), Family: netlink.FAMILY_V4, IP: net.IP(ip.AsSlice())})
	}

	// 1. No entry, arp_accept=0 (default): a GARP creates nothing.
	if v, _ := tl.client.ReadSysctl("net.ipv4.conf.eth0.arp_accept"); v != "0" {
		t.Fatalf("arp_accept = %s, want the default 0", v)
	}
	send(arp.OperationRequest, ethernet.Broadcast)
	send(arp.OperationReply, mac)
	if e := neigh(t, tl.client, tl.clientIf, ip); e != nil {
		t.Errorf("arp_accept=0: a GARP created the entry %s", describeNeigh(e))
	}
	// arp_accept=1: it does.
	if err := tl.client.Sysctl("net.ipv4.conf.eth0.arp_accept", "1"); err != nil {
		t.Fatal(err)
	}
	send(arp.OperationRequest, ethernet.Broadcast)
	if e := neigh(t, tl.client, tl.clientIf, ip); e == nil || !bytes.Equal(e.HardwareAddr, mac) {
		t.Errorf("arp_accept=1: entry %s, want one created with %s", describeNeigh(e), mac)
	}
	t.Logf("arp_accept=1 after a GARP request: %s", entry())
	del()
	if err := tl.client.Sysctl("net.ipv4.conf.eth0.arp_accept", "0"); err != nil {
		t.Fatal(err)
	}

	// 2. An entry changed less than locktime (1 s) ago: a reply with THA =
	// broadcast (not gratuitous for Linux) is ignored; a reply with THA =
	// SHA, or a request with SPA = TPA, overrides it.
	for _, tc := range []struct {
		name    string
		op      arp.Operation
		tha     net.HardwareAddr
		updates bool
	}{
		{"reply THA=broadcast", arp.OperationReply, ethernet.Broadcast, false},
		{"reply THA=SHA", arp.OperationReply, mac, true},
		{"request THA=broadcast", arp.OperationRequest, ethernet.Broadcast, true},
	} {
		setStale(t, tl.client, tl.clientIf, ip)
		send(tc.op, tc.tha)
		e := neigh(t, tl.client, tl.clientIf, ip)
		updated := e != nil && bytes.Equal(e.HardwareAddr, mac)
		if updated != tc.updates {
			t.Errorf("%s within locktime: entry %s, updated=%v, want %v", tc.name, describeNeigh(e), updated, tc.updates)
		}
		t.Logf("%s, entry set to %s just before: now %s", tc.name, fakeMAC, describeNeigh(e))
		del()
	}
}

// TestNoGoroutineLeak: after Close, the goroutine count settles back.
func TestNoGoroutineLeak(t *testing.T) {
	tl := newTestLab(t, 1)
	base := runtime.NumGoroutine()
	for range 3 {
		var a *vip.Announcer
		err := tl.dirs[0].Do(func() (err error) {
			a, err = vip.New(vip.Config{Interface: "eth0", VIPs: []netip.Prefix{vip4, vip6},
				Interval: time.Millisecond, SecondBurstDelay: 20 * time.Millisecond, Refresh: 10 * time.Millisecond,
				CheckInterval: 10 * time.Millisecond}, nil)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := a.Take(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(30 * time.Millisecond)
		if err := a.Close(); err != nil {
			t.Fatal(err)
		}
		if err := a.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
		if err := a.Take(); !errors.Is(err, vip.ErrClosed) {
			t.Errorf("Take after Close = %v, want ErrClosed", err)
		}
	}
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > base {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines after Close, %d before:\n%s", runtime.NumGoroutine(), base, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Close does not touch addresses: the VIPs stay until Release or
	// RemoveStale.
	if _, ok := addrs(t, tl.dirs[0], tl.dirIfs[0])[vip4]; !ok {
		t.Error("Close removed the VIP")
	}
}

// takeToFirstGARP measures, n times, the time from calling Take to the
// client reading the first gratuitous ARP (in user space, so it includes
// the capture goroutine's wake-up).
func takeToFirstGARP(tb testing.TB, n int) []time.Duration {
	tl := newTestLab(tb, 1)
	mac := tl.dirIfs[0].MAC()
	cp := startCapture(tb, tl.client, "eth0")
	a := tl.announcerLog(tb, 0, vip.Config{VIPs: []netip.Prefix{vip4}, Repeat: 1, SecondBurstDelay: vip.Disabled}, nil)
	m := garp(vip4.Addr(), mac, 0)
	var out []time.Duration
	for range n {
		t0 := time.Now()
		if err := a.Take(); err != nil {
			tb.Fatal(err)
		}
		fs := cp.waitFor(tb, 1, time.Second, after(t0, m))
		out = append(out, fs[0].at.Sub(t0))
		if err := a.Release(); err != nil {
			tb.Fatal(err)
		}
	}
	return out
}

// TestTakeToFirstGARPLatency prints the figure (it asserts nothing about
// it).
func TestTakeToFirstGARPLatency(t *testing.T) {
	ds := takeToFirstGARP(t, 50)
	slices.Sort(ds)
	t.Logf("Take() called -> first GARP read by the client, %d runs: min %dµs, median %dµs, p90 %dµs, max %dµs",
		len(ds), ds[0].Microseconds(), ds[len(ds)/2].Microseconds(), ds[len(ds)*9/10].Microseconds(), ds[len(ds)-1].Microseconds())
}

func BenchmarkTakeToFirstGARP(b *testing.B) {
	ds := takeToFirstGARP(b, b.N)
	var sum time.Duration
	for _, d := range ds {
		sum += d
	}
	b.ReportMetric(float64(sum.Microseconds())/float64(len(ds)), "µs/first-garp")
}
