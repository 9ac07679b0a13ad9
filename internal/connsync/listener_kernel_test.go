package connsync

import (
	"fmt"
	"net/netip"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/hadirector/hadirector/internal/ipvs"
)

// TestListenerBesideBackup proves the Listener against the kernel (VM only):
// in a syncBed, lb1's master daemon syncs real IPVS connections to lb2,
// where the kernel's backup daemon and a Listener share the group and ports.
// Every datagram the master sent (lb1's UDP OutDatagrams) must reach the
// listener undropped, the listener must have decoded exactly the connections
// lb2's table got from sync, in the same state, and the backup must have
// them all. The listener binds before the kernel's socket in one case and
// after it in the other.
func TestListenerBesideBackup(t *testing.T) {
	needIPVS(t)
	for _, tc := range []besideBackup{
		// "1 2" syncs a connection at every other inbound packet: a
		// burst of datagrams rather than one per 40 connections.
		{"IPv4 group, 2 sync ports, listener first", DefaultGroup, 2, 200, "1 2", true},
		{"IPv6 group, backup first", netip.MustParseAddr("ff02::8848"), 1, 10, "3 50", false},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.run(t) })
	}
}

type besideBackup struct {
	name          string
	group         netip.Addr
	ports, conns  int
	threshold     string // net.ipv4.vs.sync_threshold of the master
	listenerFirst bool   // start the listener before the backup daemon
}

func (tc besideBackup) run(t *testing.T) {
	const syncID = 5
	group, ports, n := tc.group, tc.ports, tc.conns
	b := newSyncBed(t)
	sysctl(t, b.lb1, "net/ipv4/vs/sync_threshold", tc.threshold)
	for i, ns := range []string{b.lb1, b.lb2} {
		sysctl(t, ns, "net/ipv4/vs/sync_ports", strconv.Itoa(ports))
		if group.Is6() {
			// An IPv6 master needs a source address when it starts
			// (else EADDRNOTAVAIL), and sync0's link-local one is
			// still tentative: give it one without DAD.
			addNoDAD(t, ns, "sync0", fmt.Sprintf("fd00:9::%d/64", i+1))
		}
	}
	var (
		mu      sync.Mutex
		decoded = map[ConnKey]Conn{} // the last state of each entry
	)
	onEntry := func(_ time.Time, c Conn) {
		mu.Lock()
		defer mu.Unlock()
		decoded[c.Key()] = c
	}
	var l *Listener
	listen := func(cfg ListenerConfig) {
		cfg.OnEntry = onEntry
		if err := inNetns(b.lb2, func() (err error) { l, err = Listen(cfg); return err }); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
	}
	maxLen := 1500 - 28 // the backup's default: MTU - IP and UDP headers
	if group.Is6() {
		maxLen = 1500 - 48
	}
	want := ListenerConfig{Interface: "sync0", Group: group, Port: DefaultPort, Ports: ports, SyncID: syncID, MaxLen: maxLen}
	if tc.listenerFirst {
		listen(want)
	}
	d2 := openDaemons(t, b.lb2)
	if err := d2.Start(DaemonConfig{Role: Backup, Interface: "sync0", SyncID: syncID, Group: group}); err != nil {
		t.Fatal(err)
	}
	if err := openDaemons(t, b.lb1).Start(DaemonConfig{Role: Master, Interface: "sync0", SyncID: syncID, Group: group}); err != nil {
		t.Fatal(err)
	}
	// What the backup runs with is what the listener is given.
	listed, err := d2.List()
	if err != nil || len(listed) != 1 {
		t.Fatalf("backup daemons: %v, %v", listed, err)
	}
	if lc := ListenerFor(listed[0], ports); fmt.Sprintf("%+v", lc) != fmt.Sprintf("%+v", want) {
		t.Errorf("ListenerFor(%v) = %+v, want %+v", listed[0], lc, want)
	}
	if !tc.listenerFirst {
		listen(ListenerFor(listed[0], ports))
	}

	out0 := udpCounters(t, b.lb1, group.Is6())
	in0 := udpCounters(t, b.lb2, group.Is6())
	dialed := map[netip.AddrPort]time.Time{} // client address → when the dial started
	for range n {
		start := time.Now()
		dialed[dialThrough(t, b.client, b.vip)] = start
	}

	// Wait for every connection in the listener and in the backup's table.
	var table []procConn
	deadline := time.Now().Add(20 * time.Second)
	for {
		table = readProcConns(t, b.lb2)
		seen := 0
		for c := range dialed {
			if _, ok := l.FirstSeen(ConnKey{Protocol: ipvs.TCP, Client: c, Virtual: b.vip, Real: b.real}); ok {
				seen++
			}
		}
		if seen == n && len(table) >= n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 20 s the listener has %d and lb2's table %d of %d connections: %+v", seen, len(table), n, table)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// The backup's table holds exactly what the listener decoded.
	mu.Lock()
	if len(table) != n || len(decoded) != n {
		t.Errorf("lb2's table has %d entries, the listener decoded %d, %d connections were made", len(table), len(decoded), n)
	}
	for _, e := range table {
		c, ok := decoded[ConnKey{Protocol: ipvs.TCP, Client: e.client, Virtual: e.virtual, Real: e.real}]
		_, ours := dialed[e.client]
		switch {
		case !ok || !ours:
			t.Errorf("lb2's entry %+v: decoded %v, dialed %v", e, ok, ours)
		case e.proto != "TCP" || e.origin != "SYNC" || c.StateName() != e.state:
			t.Errorf("lb2's entry %+v (want TCP, origin SYNC), the listener's entry %s", e, c.StateName())
		}
	}
	mu.Unlock()

	// Every datagram the master sent reached the listener, undropped.
	var st ListenerStats
	var out1 map[string]uint64
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		st, out1 = l.Stats(), udpCounters(t, b.lb1, group.Is6())
		if st.Messages == out1["OutDatagrams"]-out0["OutDatagrams"] || time.Now().After(deadline) {
			break
		}
	}
	in1 := udpCounters(t, b.lb2, group.Is6())
	sent := out1["OutDatagrams"] - out0["OutDatagrams"]
	if st.Messages != sent || sent == 0 {
		t.Errorf("the master sent %d datagrams, the listener counted %d", sent, st.Messages)
	}
	if st.Drops != [NumDropReasons]uint64{} || st.Skipped != [NumDropReasons]uint64{} || st.SocketDrops != 0 ||
		st.ReadErrors != 0 || in1["RcvbufErrors"] != in0["RcvbufErrors"] {
		t.Errorf("drops: by reason %v, skipped %v, listener socket %d, read errors %d, lb2 RcvbufErrors %d → %d",
			st.Drops, st.Skipped, st.SocketDrops, st.ReadErrors, in0["RcvbufErrors"], in1["RcvbufErrors"])
	}
	if len(st.Ports) != ports {
		t.Fatalf("Ports %+v", st.Ports)
	}
	for _, p := range st.Ports {
		if p.Messages == 0 {
			t.Errorf("no datagrams on port %d of %d: %+v (the master's thread i sends to port+i)", p.Port, ports, st.Ports)
		}
	}
	if len(st.Senders) != 1 || (!group.Is6() && st.Senders[0].Addr != netip.MustParseAddr("10.9.0.1")) {
		t.Errorf("senders %+v", st.Senders)
	}

	// Lag: first seen by the listener minus the client's dial.
	var lags []time.Duration
	for c, start := range dialed {
		first, _ := l.FirstSeen(ConnKey{Protocol: ipvs.TCP, Client: c, Virtual: b.vip, Real: b.real})
		lags = append(lags, first.Sub(start))
	}
	slices.Sort(lags)
	t.Logf("master sent %d datagrams (%d bytes), listener counted %d on ports %+v, %d entries %v, from %v; "+
		"lb2 UDP InDatagrams +%d (the backup's socket and the listener's); %d connections in lb2's table, all decoded; "+
		"lag dial→first seen: min %v, median %v, max %v; age of the last datagram %v",
		sent, st.Bytes, st.Messages, st.Ports, st.Entries, st.ByKind, st.Senders, in1["InDatagrams"]-in0["InDatagrams"],
		len(table), lags[0].Round(time.Millisecond), lags[len(lags)/2].Round(time.Millisecond),
		lags[len(lags)-1].Round(time.Millisecond), st.Age(time.Now()).Round(time.Millisecond))
	if lags[0] < 0 {
		t.Errorf("a connection was seen before it was dialed: %v", lags[0])
	}

	if err := l.Close(); err != nil {
		t.Error(err)
	}
	if r := receivers(); r != 0 {
		t.Errorf("%d receive goroutines after Close", r)
	}
}

// addNoDAD adds an IPv6 address, usable at once, to the link in ns.
func addNoDAD(t *testing.T, ns, link, prefix string) {
	t.Helper()
	h := nlHandle(t, ns)
	l, err := h.LinkByName(link)
	if err != nil {
		t.Fatal(err)
	}
	a, err := netlink.ParseAddr(prefix)
	if err != nil {
		t.Fatal(err)
	}
	a.Flags = unix.IFA_F_NODAD
	if err := h.AddrAdd(l, a); err != nil {
		t.Fatalf("address %s on %s: %v", prefix, link, err)
	}
}

// udpCounters reads the UDP counters of ns's /proc/net/snmp ("Udp:"), or of
// /proc/net/snmp6 for IPv6 ("Udp6…"), without the prefix: "OutDatagrams".
func udpCounters(t *testing.T, ns string, v6 bool) map[string]uint64 {
	t.Helper()
	file := "/proc/net/snmp"
	if v6 {
		file += "6"
	}
	out, err := exec.Command("ip", "netns", "exec", filepath.Base(ns), "cat", file).CombinedOutput()
	if err != nil {
		t.Fatalf("read %s: %v: %s", file, err, out)
	}
	m := map[string]uint64{}
	lines := strings.Split(string(out), "\n")
	for i, line := range lines {
		f := strings.Fields(line)
		switch {
		case v6 && len(f) == 2 && strings.HasPrefix(f[0], "Udp6"):
			m[strings.TrimPrefix(f[0], "Udp6")], _ = strconv.ParseUint(f[1], 10, 64)
		case !v6 && len(f) > 1 && f[0] == "Udp:" && i+1 < len(lines):
			vals := strings.Fields(lines[i+1])
			if len(vals) != len(f) || vals[0] != "Udp:" || len(m) > 0 {
				continue // the values line, or a mismatch
			}
			for j := 1; j < len(f); j++ {
				m[f[j]], _ = strconv.ParseUint(vals[j], 10, 64)
			}
		}
	}
	if _, ok := m["OutDatagrams"]; !ok {
		t.Fatalf("no UDP OutDatagrams in %s:\n%s", file, out)
	}
	return m
}
