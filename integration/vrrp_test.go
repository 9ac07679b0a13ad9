package integration

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hadirector/hadirector/integration/netlab"
	"github.com/hadirector/hadirector/internal/vrrp"
	"github.com/vishvananda/netlink"
)

// pair is two hadirector directors and a client on one bridge.
type pair struct {
	lab    *netlab.Lab
	front  *netlab.Bridge
	nodes  map[string]*netlab.Node
	ifaces map[string]*netlab.Iface // eth0 of each node
	procs  map[string]*netlab.Process
	dir    string
	cfg    string
	vip    netip.Prefix
}

const pairTemplate = `
[cluster]
name = "vrrp"

[[node]]
name = "lb1"
priority = 150
[[node.interface]]
name = "eth0"
addresses = ["10.55.0.11/24"]

[[node]]
name = "lb2"
priority = 100
[[node.interface]]
name = "eth0"
addresses = ["10.55.0.12/24"]

[[vrrp_instance]]
name = "front"
vrid = 55
interface = "eth0"
vips = ["10.55.0.200/24"]
advert_interval = "50ms"
garp_delay = "0s"
%s
`

func newPair(t *testing.T, instanceExtra string) *pair {
	t.Helper()
	lab := netlab.NewForTest(t, "hdv")
	p := &pair{lab: lab, nodes: map[string]*netlab.Node{}, ifaces: map[string]*netlab.Iface{}, procs: map[string]*netlab.Process{},
		dir: t.TempDir(), vip: netip.MustParsePrefix("10.55.0.200/24")}
	var err error
	if p.front, err = lab.AddBridge("front"); err != nil {
		t.Fatal(err)
	}
	for name, addr := range map[string]string{"lb1": "10.55.0.11/24", "lb2": "10.55.0.12/24", "client": "10.55.0.100/24"} {
		if p.nodes[name], err = lab.AddNode(name); err != nil {
			t.Fatal(err)
		}
		if p.ifaces[name], err = lab.Connect(p.nodes[name], p.front, "eth0", addr); err != nil {
			t.Fatal(err)
		}
	}
	p.cfg = filepath.Join(p.dir, "cluster.toml")
	if err := os.WriteFile(p.cfg, []byte(fmt.Sprintf(pairTemplate, instanceExtra)), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func (p *pair) socket(name string) string { return filepath.Join(p.dir, name+".sock") }

func (p *pair) start(ctx context.Context, t *testing.T, name string) {
	t.Helper()
	proc, err := p.nodes[name].Start(ctx, hadirector, "run", "--config", p.cfg, "--node", name, "--socket", p.socket(name))
	if err != nil {
		t.Fatal(err)
	}
	p.procs[name] = proc
	statusOf(ctx, t, p.socket(name))
}

func (p *pair) holds(t *testing.T, name string) bool { return hasAddr(t, p.nodes[name], "eth0", p.vip) }

// clientNeighbour is the MAC the client's neighbour table has for the VIP.
func (p *pair) clientNeighbour(t *testing.T) net.HardwareAddr {
	t.Helper()
	neighs, err := p.nodes["client"].Netlink().NeighList(0, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range neighs {
		if a, ok := netip.AddrFromSlice(n.IP); ok && a.Unmap() == p.vip.Addr() {
			return n.HardwareAddr
		}
	}
	return nil
}

// TestKilledMasterAndStaleVIP: a master killed with SIGKILL leaves its VIP
// configured (nothing can remove it); the backup takes over; when the killed
// director starts again (nopreempt, so it stays backup) it removes the
// stale VIP at start, so only the master holds it.
func TestKilledMasterAndStaleVIP(t *testing.T) {
	p := newPair(t, "preempt = false")
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	p.start(ctx, t, "lb1")
	waitState(ctx, t, p.socket("lb1"), "MASTER") // alone: master
	p.start(ctx, t, "lb2")
	waitState(ctx, t, p.socket("lb2"), "BACKUP")

	p.procs["lb1"].Signal(syscall.SIGKILL)
	<-p.procs["lb1"].Done()
	t0 := time.Now()
	waitState(ctx, t, p.socket("lb2"), "MASTER")
	t.Logf("lb2 master %v after lb1's SIGKILL (Master_Down_Interval at 50 ms, priority 100: 180.5 ms)", time.Since(t0).Round(time.Millisecond))
	if !p.holds(t, "lb1") || !p.holds(t, "lb2") {
		t.Fatalf("after SIGKILL: VIP on lb1 %v (left behind, expected), on lb2 %v", p.holds(t, "lb1"), p.holds(t, "lb2"))
	}

	os.Remove(p.socket("lb1"))
	p.start(ctx, t, "lb1")
	waitState(ctx, t, p.socket("lb1"), "BACKUP")
	if p.holds(t, "lb1") || !p.holds(t, "lb2") {
		t.Errorf("after lb1 restarted: VIP on lb1 %v, on lb2 %v; want only lb2", p.holds(t, "lb1"), p.holds(t, "lb2"))
	}
	time.Sleep(500 * time.Millisecond) // nopreempt: lb1 stays backup
	if st := statusOf(ctx, t, p.socket("lb1")); st.Instances[0].State != "BACKUP" || st.Instances[0].Master != "10.55.0.12" {
		t.Errorf("lb1 %s, master %q; want BACKUP under 10.55.0.12", st.Instances[0].State, st.Instances[0].Master)
	}
}

// TestSplitBrainHeals: the two directors cannot hear each other (their
// bridge ports are isolated; carrier stays up, the client reaches both), so
// both become master. When they hear each other again the lower one yields
// and the winner announces the VIP again, so the client's neighbour entry
// points at the winner.
func TestSplitBrainHeals(t *testing.T) {
	p := newPair(t, "")
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	p.start(ctx, t, "lb1")
	p.start(ctx, t, "lb2")
	waitState(ctx, t, p.socket("lb1"), "MASTER")
	waitState(ctx, t, p.socket("lb2"), "BACKUP")
	// The client talks to the VIP once, so it has a neighbour entry (a
	// gratuitous ARP updates an entry; with arp_accept=0 it creates none).
	if c, err := p.nodes["client"].DialContext(ctx, "tcp", "10.55.0.200:9"); err == nil {
		c.Close()
	}
	waitNeighbour(ctx, t, p, p.ifaces["lb1"].MAC())

	isolate := func(on bool) {
		for _, n := range []string{"lb1", "lb2"} {
			port, err := p.front.Netlink().LinkByName(p.ifaces[n].Port())
			if err != nil {
				t.Fatal(err)
			}
			if err := p.front.Netlink().LinkSetIsolated(port, on); err != nil {
				t.Fatal(err)
			}
		}
	}
	isolate(true)
	waitState(ctx, t, p.socket("lb2"), "MASTER")
	if !p.holds(t, "lb1") || !p.holds(t, "lb2") {
		t.Fatalf("split brain: VIP on lb1 %v, lb2 %v; want both", p.holds(t, "lb1"), p.holds(t, "lb2"))
	}
	// The client follows lb2: its gratuitous ARP updated the entry.
	waitNeighbour(ctx, t, p, p.ifaces["lb2"].MAC())

	// Wait past the winner's announce limit (one Master_Down_Interval),
	// then heal: lb2 yields, lb1 announces, the client comes back to lb1.
	time.Sleep(300 * time.Millisecond)
	isolate(false)
	waitState(ctx, t, p.socket("lb2"), "BACKUP")
	if st := statusOf(ctx, t, p.socket("lb1")); st.Instances[0].State != "MASTER" {
		t.Fatalf("lb1 is %s after the heal", st.Instances[0].State)
	}
	if p.holds(t, "lb2") {
		t.Error("lb2 still holds the VIP after yielding")
	}
	waitNeighbour(ctx, t, p, p.ifaces["lb1"].MAC())
}

func waitNeighbour(ctx context.Context, t *testing.T, p *pair, want net.HardwareAddr) {
	t.Helper()
	for {
		got := p.clientNeighbour(t)
		if got.String() == want.String() {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("client's neighbour entry for the VIP is %v, want %v", got, want)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// TestNotifyHooks: every transition runs the instance's notify program with
// keepalived's arguments, in order, including STOP on a graceful stop.
func TestNotifyHooks(t *testing.T) {
	dir, err := os.MkdirTemp("", "hd-hook")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755)
	hook := filepath.Join(dir, "notify.sh")
	script := "#!/bin/sh\necho \"$HADIRECTOR_NODE $1 $2 $3 $4 from=$HADIRECTOR_FROM vips=$HADIRECTOR_VIPS\" >> " + dir + "/events\n"
	if err := os.WriteFile(hook, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	p := newPair(t, fmt.Sprintf("notify = %q", hook))
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	p.start(ctx, t, "lb1")
	p.start(ctx, t, "lb2")
	waitState(ctx, t, p.socket("lb1"), "MASTER")
	waitState(ctx, t, p.socket("lb2"), "BACKUP")
	p.procs["lb1"].Signal(syscall.SIGTERM)
	<-p.procs["lb1"].Done()
	waitState(ctx, t, p.socket("lb2"), "MASTER")
	want := []string{
		"lb1 INSTANCE front BACKUP 150 from=STOP vips=10.55.0.200/24",
		"lb1 INSTANCE front MASTER 150 from=BACKUP vips=10.55.0.200/24",
		"lb1 INSTANCE front STOP 150 from=MASTER vips=10.55.0.200/24",
		"lb2 INSTANCE front BACKUP 100 from=STOP vips=10.55.0.200/24",
		"lb2 INSTANCE front MASTER 100 from=BACKUP vips=10.55.0.200/24",
	}
	for {
		b, _ := os.ReadFile(filepath.Join(dir, "events"))
		var lb1, lb2 []string
		for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			if strings.HasPrefix(l, "lb1 ") {
				lb1 = append(lb1, l)
			} else if strings.HasPrefix(l, "lb2 ") {
				lb2 = append(lb2, l)
			}
		}
		got := append(lb1, lb2...)
		if fmt.Sprint(got) == fmt.Sprint(want) {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("hook runs:\n%s\nwant (per node, in order):\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// TestLivenessBeatsTheTimer: with a UDP heartbeat link the directors also
// hold a liveness connection; when the master's process is SIGKILLed its
// kernel closes that connection and the backup takes over at once, not
// after Master_Down_Interval (3.6 s at 1 s adverts).
func TestLivenessBeatsTheTimer(t *testing.T) {
	t.Run("with a UDP link", func(t *testing.T) { livenessScenario(t, true) })
	// Without any link, a pair still holds a (keyless) liveness connection
	// over its VRRP interface.
	t.Run("without a link", func(t *testing.T) { livenessScenario(t, false) })
}

func livenessScenario(t *testing.T, withLink bool) {
	dir := t.TempDir()
	key := filepath.Join(dir, "hb.key")
	if err := os.WriteFile(key, []byte("0123456789abcdef0123456789abcdef"), 0o600); err != nil {
		t.Fatal(err)
	}
	extra := `links = ["hb"]

[[link]]
name = "hb"
type = "udp"
interface = "eth0"
interval = "10ms"
key_file = "` + key + `"`
	if !withLink {
		extra = ""
	}
	p := newPair(t, extra)
	cfg, _ := os.ReadFile(p.cfg)
	os.WriteFile(p.cfg, []byte(strings.Replace(string(cfg), `advert_interval = "50ms"`, `advert_interval = "1s"`, 1)), 0o644)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	p.start(ctx, t, "lb1")
	p.start(ctx, t, "lb2")
	waitState(ctx, t, p.socket("lb1"), "MASTER")
	waitState(ctx, t, p.socket("lb2"), "BACKUP")
	if withLink {
		waitLinkUp(ctx, t, p.socket("lb2"), "hb")
	} else {
		time.Sleep(200 * time.Millisecond) // the liveness connection is up within ms
	}

	p.procs["lb1"].Signal(syscall.SIGKILL)
	t0 := time.Now()
	waitState(ctx, t, p.socket("lb2"), "MASTER")
	took := time.Since(t0)
	t.Logf("lb2 master %v after lb1's SIGKILL (Master_Down_Interval: 3.609 s)", took.Round(time.Millisecond))
	if took > time.Second {
		t.Errorf("takeover took %v: the liveness connection did not speed it up", took)
	}
	st := statusOf(ctx, t, p.socket("lb2"))
	if !strings.Contains(st.Instances[0].LastReason, "liveness") {
		t.Errorf("lb2's transition reason %q does not name the liveness connection", st.Instances[0].LastReason)
	}
}

// TestForgedAdvertsAreDroppedAndCounted: an advert with priority 255 but
// TTL 64 (it was routed: not from this link) and one with a bad checksum
// change nothing and show up in status as drops.
func TestForgedAdvertsAreDroppedAndCounted(t *testing.T) {
	p := newPair(t, "")
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	p.start(ctx, t, "lb1")
	p.start(ctx, t, "lb2")
	waitState(ctx, t, p.socket("lb1"), "MASTER")
	waitState(ctx, t, p.socket("lb2"), "BACKUP")
	src, group := netip.MustParseAddr("10.55.0.100"), netip.MustParseAddr("224.0.0.18")
	send := func(ttl int, corrupt bool) {
		a := vrrpAdvert(255)
		b, err := a.Marshal(src, group)
		if err != nil {
			t.Fatal(err)
		}
		if corrupt {
			b[7] ^= 0xff
		}
		err = p.nodes["client"].Do(func() error {
			c, err := net.ListenIP("ip4:112", &net.IPAddr{IP: src.AsSlice()})
			if err != nil {
				return err
			}
			defer c.Close()
			raw, _ := c.SyscallConn()
			var serr error
			raw.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, syscall.IP_MULTICAST_TTL, ttl)
			})
			if serr != nil {
				return serr
			}
			_, err = c.WriteToIP(b, &net.IPAddr{IP: group.AsSlice()})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 3; i++ {
		send(64, false)
		send(255, true)
	}
	time.Sleep(200 * time.Millisecond)
	for _, n := range []string{"lb1", "lb2"} {
		st := statusOf(ctx, t, p.socket(n))
		if st.Drops["bad_ttl"] != 3 || st.Drops["bad_checksum"] != 3 {
			t.Errorf("%s drops %v, want bad_ttl=3 bad_checksum=3", n, st.Drops)
		}
	}
	if st := statusOf(ctx, t, p.socket("lb1")); st.Instances[0].State != "MASTER" {
		t.Errorf("lb1 is %s after forged adverts", st.Instances[0].State)
	}
	if st := statusOf(ctx, t, p.socket("lb2")); st.Instances[0].State != "BACKUP" || st.Instances[0].Master != "10.55.0.11" {
		t.Errorf("lb2 is %s under %s after forged adverts", st.Instances[0].State, st.Instances[0].Master)
	}
}

func vrrpAdvert(prio uint8) *vrrp.Advert {
	return &vrrp.Advert{Version: 3, VRID: 55, Priority: prio, Interval: 50 * time.Millisecond, Addrs: []netip.Addr{netip.MustParseAddr("10.55.0.200")}}
}

// TestNodeLossBeatsTheTimer: with a fast UDP link between the directors
// (its own cable, eth1), the loss of the whole master node (every
// interface down, then SIGKILL: no FIN gets out) is noticed when the link
// goes silent and the node answers no ARP on the VRRP interface, long
// before VRRP's Master_Down_Interval (3.6 s at 1 s adverts). A link that
// goes silent while the node still answers ARP changes nothing: the
// adverts on eth0 keep the master.
func TestNodeLossBeatsTheTimer(t *testing.T) {
	for _, nodeLost := range []bool{true, false} {
		name := "node lost"
		if !nodeLost {
			name = "link lost, node alive"
		}
		t.Run(name, func(t *testing.T) {
			p := newPair(t, "")
			if _, _, err := p.lab.Link(p.nodes["lb1"], "eth1", []string{"10.56.0.1/30"}, p.nodes["lb2"], "eth1", []string{"10.56.0.2/30"}); err != nil {
				t.Fatal(err)
			}
			key := filepath.Join(p.dir, "hb.key")
			if err := os.WriteFile(key, []byte("0123456789abcdef0123456789abcdef"), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg := `
[cluster]
name = "vrrp"
[[node]]
name = "lb1"
priority = 150
[[node.interface]]
name = "eth0"
addresses = ["10.55.0.11/24"]
[[node.interface]]
name = "eth1"
addresses = ["10.56.0.1/30"]
[[node]]
name = "lb2"
priority = 100
[[node.interface]]
name = "eth0"
addresses = ["10.55.0.12/24"]
[[node.interface]]
name = "eth1"
addresses = ["10.56.0.2/30"]
[[link]]
name = "hb"
type = "udp"
interface = "eth1"
interval = "5ms"
key_file = "` + key + `"
[[vrrp_instance]]
name = "front"
vrid = 55
interface = "eth0"
vips = ["10.55.0.200/24"]
advert_interval = "1s"
links = ["hb"]
`
			if err := os.WriteFile(p.cfg, []byte(cfg), 0o644); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
			defer cancel()
			p.start(ctx, t, "lb1")
			p.start(ctx, t, "lb2")
			waitState(ctx, t, p.socket("lb1"), "MASTER")
			waitState(ctx, t, p.socket("lb2"), "BACKUP")
			waitLinkUp(ctx, t, p.socket("lb2"), "hb")

			h := p.nodes["lb1"].Netlink()
			down := func(ifname string) {
				l, err := h.LinkByName(ifname)
				if err == nil {
					err = h.LinkSetDown(l)
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			t0 := time.Now()
			if !nodeLost {
				down("eth1")
				time.Sleep(2 * time.Second)
				st := statusOf(ctx, t, p.socket("lb2"))
				if st.Instances[0].State != "BACKUP" {
					t.Errorf("lb2 is %s 2 s after the link died while lb1 lives; want BACKUP", st.Instances[0].State)
				}
				// Late spells of the 5 ms link before the cut may add
				// probes that found the node alive; none found it lost.
				if nl := st.NodeLoss; nl == nil || nl.Alive == 0 || nl.LinksFailed == 0 || nl.Lost != 0 {
					t.Errorf("lb2's node-loss record after the link died: %+v; want the node found alive, the link failed, nothing lost", nl)
				}
				return
			}
			down("eth0")
			down("eth1")
			p.procs["lb1"].Signal(syscall.SIGKILL)
			waitState(ctx, t, p.socket("lb2"), "MASTER")
			took := time.Since(t0)
			t.Logf("lb2 master %v after lb1's node was lost (link 5 ms; Master_Down_Interval 3.609 s)", took.Round(time.Millisecond))
			if took > time.Second {
				t.Errorf("takeover took %v: the node-loss probe did not speed it up", took)
			}
			if nl := statusOf(ctx, t, p.socket("lb2")).NodeLoss; nl == nil || nl.Lost != 1 || nl.LastResult != "lost" {
				t.Errorf("lb2's node-loss record: %+v; want one loss, the last probe's", nl)
			}
		})
	}
}
