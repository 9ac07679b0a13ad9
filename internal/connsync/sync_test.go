package connsync

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

	"github.com/hadirector/hadirector/internal/ipvs"
)

// TestSyncReachesBackup proves the decoder against the kernel (VM only), in
// a syncBed. Both directors have the NAT service VIP:80 → rs:8080; lb1 runs the master
// sync daemon, lb2 the backup, and a Go UDP socket in lb2 that shares
// 224.0.0.81:8848 with the kernel's (SO_REUSEADDR). A TCP connection through
// lb1 must appear in lb2's connection table as synced, and the decoder must
// read the same entry from the datagrams, in sync versions 1 and 0.
func TestSyncReachesBackup(t *testing.T) {
	needIPVS(t)
	const syncID = 5
	b := newSyncBed(t)
	lb1, lb2, client, vip, real := b.lb1, b.lb2, b.client, b.vip, b.real
	if err := openDaemons(t, lb1).Start(DaemonConfig{Role: Master, Interface: "sync0", SyncID: syncID}); err != nil {
		t.Fatal(err)
	}
	if err := openDaemons(t, lb2).Start(DaemonConfig{Role: Backup, Interface: "sync0", SyncID: syncID}); err != nil {
		t.Fatal(err)
	}
	datagrams := listenSync(t, lb2, "sync0")

	var counters Counters
	for _, version := range []int{1, 0} {
		t.Run(fmt.Sprintf("version %d", version), func(t *testing.T) {
			sysctl(t, lb1, "net/ipv4/vs/sync_version", strconv.Itoa(version))
			c := dialThrough(t, client, vip)
			want := Conn{Family: ipvs.IPv4, Protocol: ipvs.TCP, State: 1, Client: c, Virtual: vip, Real: real}
			if version == 1 {
				want.Timeout = 15 * time.Minute // the kernel's TCP ESTABLISHED timeout
			}

			got, m := awaitConn(t, datagrams, &counters, c)
			if m.Version != version || m.SyncID != syncID {
				t.Errorf("message version %d, sync ID %d; want %d, %d", m.Version, m.SyncID, version, syncID)
			}
			if got.StateName() != "ESTABLISHED" || got.Forwarding() != ipvs.NAT || got.Flags&FlagBackupMask != 0 {
				t.Errorf("entry state %s, forwarding %v, flags %#x: want an active ESTABLISHED NAT connection",
					got.StateName(), got.Forwarding(), got.Flags)
			}
			want.Flags = got.Flags // the master's internal flags (e.g. NOOUTPUT) are its own
			if fmt.Sprintf("%+v", got) != fmt.Sprintf("%+v", want) {
				t.Errorf("decoded entry\n got %+v\nwant %+v", got, want)
			}

			// The kernel's backup made the same entry.
			e := awaitProcConn(t, lb2, c)
			if e.virtual != vip || e.real != real || e.state != "ESTABLISHED" || e.origin != "SYNC" {
				t.Errorf("lb2's /proc/net/ip_vs_conn_sync entry %+v: want %v → %v ESTABLISHED, origin SYNC", e, vip, real)
			}
		})
	}
	s := counters.Stats()
	t.Logf("decoder counters: %d messages, %d entries, skipped %v, drops %v", s.Messages, s.Entries, s.Skipped, s.Drops)
	if s.Drops != [NumDropReasons]uint64{} || s.Skipped != [NumDropReasons]uint64{} {
		t.Errorf("the kernel's messages were dropped or skipped: %+v", s)
	}
}

// syncBed is the topology of the kernel sync tests, without sync daemons:
//
//	client 10.0.1.2 ── 10.0.1.1 lb1 (VIP 10.0.1.100) 10.0.2.1 ── 10.0.2.2 rs
//	                         sync0 10.9.0.1
//	                           │
//	                         sync0 10.9.0.2 lb2
//
// Both directors have the NAT service vip → real; rs runs an echo server on
// real.
type syncBed struct {
	lb1, lb2, client, rs string // namespace paths
	vip, real            netip.AddrPort
}

func newSyncBed(t *testing.T) syncBed {
	t.Helper()
	b := syncBed{lb1: newNetns(t), lb2: newNetns(t), client: newNetns(t), rs: newNetns(t),
		vip: netip.MustParseAddrPort("10.0.1.100:80"), real: netip.MustParseAddrPort("10.0.2.2:8080")}
	veth(t, b.lb1, "sync0", "10.9.0.1/24", b.lb2, "sync0", "10.9.0.2/24")
	veth(t, b.client, "eth0", "10.0.1.2/24", b.lb1, "front0", "10.0.1.1/24")
	veth(t, b.rs, "eth0", "10.0.2.2/24", b.lb1, "back0", "10.0.2.1/24")
	h := nlHandle(t, b.lb1)
	front, err := h.LinkByName("front0")
	if err != nil {
		t.Fatal(err)
	}
	vipPrefix, _ := netlink.ParseAddr("10.0.1.100/24")
	if err := h.AddrAdd(front, vipPrefix); err != nil {
		t.Fatal(err)
	}
	if err := nlHandle(t, b.rs).RouteAdd(&netlink.Route{Gw: net.ParseIP("10.0.2.1")}); err != nil {
		t.Fatal(err)
	}
	sysctl(t, b.lb1, "net/ipv4/ip_forward", "1") // the real server's replies pass lb1

	svc := ipvs.Service{Family: ipvs.IPv4, Protocol: ipvs.TCP, Addr: b.vip, Scheduler: "rr"}
	dst := ipvs.Destination{Addr: b.real, Weight: 1, Forwarding: ipvs.NAT}
	for _, ns := range []string{b.lb1, b.lb2} {
		k, err := ipvs.Open(ns)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { k.Close() })
		if err := k.AddService(svc); err != nil {
			t.Fatal(err)
		}
		if err := k.AddDestination(svc, dst); err != nil {
			t.Fatal(err)
		}
	}
	echoServer(t, b.rs, b.real)
	return b
}

// veth links nameA in namespace a with nameB in b, each with its prefix and up.
func veth(t *testing.T, a, nameA, prefixA, b, nameB, prefixB string) {
	t.Helper()
	nsB, err := netns.GetFromPath(b)
	if err != nil {
		t.Fatal(err)
	}
	defer nsB.Close()
	ha := nlHandle(t, a)
	if err := ha.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: nameA}, PeerName: nameB,
		PeerNamespace: netlink.NsFd(nsB)}); err != nil {
		t.Fatalf("veth %s-%s: %v", nameA, nameB, err)
	}
	configure(t, ha, nameA, prefixA)
	configure(t, nlHandle(t, b), nameB, prefixB)
}

func sysctl(t *testing.T, ns, key, value string) {
	t.Helper()
	// /proc/sys/net belongs to the namespace of the thread that opens it.
	if err := inNetns(ns, func() error { return os.WriteFile("/proc/sys/"+key, []byte(value), 0) }); err != nil {
		t.Fatalf("sysctl %s=%s: %v", key, value, err)
	}
}

// listenSync joins the sync group on ifname in namespace ns with a socket
// beside the kernel's backup and returns the datagrams it receives.
func listenSync(t *testing.T, ns, ifname string) <-chan []byte {
	t.Helper()
	var pc net.PacketConn
	err := inNetns(ns, func() error {
		lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
			})
			return errors.Join(err, serr)
		}}
		var err error
		pc, err = lc.ListenPacket(context.Background(), "udp4", netip.AddrPortFrom(DefaultGroup, DefaultPort).String())
		if err != nil {
			return err
		}
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		return ipv4.NewPacketConn(pc).JoinGroup(ifi, &net.UDPAddr{IP: DefaultGroup.AsSlice()})
	})
	if err != nil {
		t.Fatalf("listen for sync datagrams in %s: %v", ns, err)
	}
	t.Cleanup(func() { pc.Close() })
	ch := make(chan []byte, 64)
	go func() {
		defer close(ch)
		buf := make([]byte, 1<<16)
		for {
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			ch <- bytes.Clone(buf[:n])
		}
	}()
	return ch
}

func echoServer(t *testing.T, ns string, addr netip.AddrPort) {
	t.Helper()
	var ln net.Listener
	if err := inNetns(ns, func() (err error) { ln, err = net.Listen("tcp4", addr.String()); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
}

// dialThrough opens a TCP connection from namespace ns to vip and exchanges
// a few messages (the master syncs at the third inbound packet by default);
// it returns the client's address. The connection stays open for the test.
func dialThrough(t *testing.T, ns string, vip netip.AddrPort) netip.AddrPort {
	t.Helper()
	var c net.Conn
	if err := inNetns(ns, func() (err error) { c, err = net.DialTimeout("tcp4", vip.String(), 5*time.Second); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 5)
	for range 5 {
		if _, err := c.Write([]byte("ping\n")); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatalf("echo through the VIP: %v", err)
		}
	}
	return c.LocalAddr().(*net.TCPAddr).AddrPort()
}

// awaitConn decodes sync datagrams until one carries the connection from
// client (the master flushes a lone entry after 2-3 s).
func awaitConn(t *testing.T, datagrams <-chan []byte, counters *Counters, client netip.AddrPort) (Conn, Message) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	dec := Decoder{SyncID: 5}
	for {
		select {
		case b, ok := <-datagrams:
			if !ok {
				t.Fatal("sync listener closed")
			}
			var m Message
			err := dec.Decode(b, &m)
			counters.Observe(&m, err, time.Now())
			t.Logf("datagram of %d bytes (v%d, %d entries, err %v): %x", len(b), m.Version, len(m.Conns), err, b)
			if err != nil {
				t.Errorf("kernel datagram dropped: %v", err)
			}
			for _, c := range m.Conns {
				if c.Client == client {
					return c, m
				}
			}
		case <-timeout:
			t.Fatalf("no sync entry for %v within 10 s", client)
		}
	}
}

type procConn struct {
	proto                  string
	client, virtual, real  netip.AddrPort
	state, origin, expires string
}

// awaitProcConn waits for client's entry in ns's /proc/net/ip_vs_conn_sync.
func awaitProcConn(t *testing.T, ns string, client netip.AddrPort) procConn {
	t.Helper()
	var all []procConn
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		all = readProcConns(t, ns)
		for _, e := range all {
			if e.client == client {
				return e
			}
		}
	}
	t.Fatalf("no entry for %v in %s's /proc/net/ip_vs_conn_sync: %+v", client, ns, all)
	return procConn{}
}

// readProcConns reads the IPv4 entries of ns's /proc/net/ip_vs_conn_sync.
func readProcConns(t *testing.T, ns string) []procConn {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", filepath.Base(ns), "cat", "/proc/net/ip_vs_conn_sync").CombinedOutput()
	if err != nil {
		t.Fatalf("read ip_vs_conn_sync: %v: %s", err, out)
	}
	var all []procConn
	for _, line := range strings.Split(string(out), "\n") {
		if e, ok := parseProcConn(line); ok {
			all = append(all, e)
		}
	}
	return all
}

// parseProcConn parses an IPv4 line of /proc/net/ip_vs_conn_sync:
// "TCP 0A000102 C350 0A000164 0050 0A000202 1F90 ESTABLISHED SYNC 899".
func parseProcConn(line string) (procConn, bool) {
	f := strings.Fields(line)
	if len(f) != 10 || len(f[1]) != 8 {
		return procConn{}, false
	}
	ap := func(a, p string) (netip.AddrPort, bool) {
		x, err1 := strconv.ParseUint(a, 16, 32)
		y, err2 := strconv.ParseUint(p, 16, 16)
		ip := netip.AddrFrom4([4]byte{byte(x >> 24), byte(x >> 16), byte(x >> 8), byte(x)})
		return netip.AddrPortFrom(ip, uint16(y)), err1 == nil && err2 == nil
	}
	c, ok1 := ap(f[1], f[2])
	v, ok2 := ap(f[3], f[4])
	r, ok3 := ap(f[5], f[6])
	return procConn{proto: f[0], client: c, virtual: v, real: r, state: f[7], origin: f[8], expires: f[9]}, ok1 && ok2 && ok3
}
