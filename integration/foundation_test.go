package integration

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hadirector/hadirector/integration/netlab"
)

// pairConfig is one cluster file for two directors on a shared front
// segment with a direct cable between them.
const pairConfig = `
[cluster]
name = "scenario"

[[node]]
name = "lb1"
priority = 150
[[node.interface]]
name = "eth0"
addresses = ["10.77.0.11/24"]
[[node.interface]]
name = "eth1"
addresses = ["10.255.0.1/30"]

[[node]]
name = "lb2"
priority = 100
[[node.interface]]
name = "eth0"
addresses = ["10.77.0.12/24"]
[[node.interface]]
name = "eth1"
addresses = ["10.255.0.2/30"]

[[link]]
name = "crossover"
type = "udp"
interface = "eth1"
key_file = "%s"

[[vrrp_instance]]
name = "front"
vrid = 77
interface = "eth0"
vips = ["10.77.0.100/24"]
advert_interval = "100ms"
priority = { lb2 = 120 }
links = ["crossover"]
`

// TestTwoDirectorsFromOneFile: two `hadirector run` processes, each in its
// own network namespace, start from the same cluster file; each finds its
// own node and reports it over its control socket. A daemon told to be the
// other node is refused, because this host does not carry that node's
// addresses.
func TestTwoDirectorsFromOneFile(t *testing.T) {
	lab := netlab.NewForTest(t, "hdf")
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()

	front, err := lab.AddBridge("front")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "cluster.toml")
	key := filepath.Join(dir, "hb.key")
	if err := os.WriteFile(key, []byte("0123456789abcdef0123456789abcdef"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(pairConfig, key)), 0o644); err != nil {
		t.Fatal(err)
	}
	nodes := map[string]*netlab.Node{}
	for _, name := range []string{"lb1", "lb2"} {
		if nodes[name], err = lab.AddNode(name); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := lab.Connect(nodes["lb1"], front, "eth0", "10.77.0.11/24"); err != nil {
		t.Fatal(err)
	}
	if _, err := lab.Connect(nodes["lb2"], front, "eth0", "10.77.0.12/24"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := lab.Link(nodes["lb1"], "eth1", []string{"10.255.0.1/30"}, nodes["lb2"], "eth1", []string{"10.255.0.2/30"}); err != nil {
		t.Fatal(err)
	}

	procs := map[string]*netlab.Process{}
	for _, name := range []string{"lb1", "lb2"} {
		socket := filepath.Join(dir, name+".sock")
		p, err := nodes[name].Start(ctx, hadirector, "run", "--config", cfg, "--node", name, "--socket", socket)
		if err != nil {
			t.Fatal(err)
		}
		procs[name] = p
	}
	wantPrio := map[string]int{"lb1": 150, "lb2": 120}
	for _, name := range []string{"lb1", "lb2"} {
		st := statusOf(ctx, t, filepath.Join(dir, name+".sock"))
		if st.Node != name || st.Cluster != "scenario" || st.ConfigFile != cfg {
			t.Errorf("%s reports node %q of cluster %q from %s", name, st.Node, st.Cluster, st.ConfigFile)
		}
		if len(st.Instances) != 1 || st.Instances[0].Priority != wantPrio[name] || st.Instances[0].VRID != 77 {
			t.Errorf("%s instances: %+v", name, st.Instances)
		}
	}

	// The election: lb1 (150) is master and holds the VIP, lb2 (120) is
	// backup and does not; the extra link is up both ways.
	vip := netip.MustParsePrefix("10.77.0.100/24")
	waitState(ctx, t, filepath.Join(dir, "lb1.sock"), "MASTER")
	waitState(ctx, t, filepath.Join(dir, "lb2.sock"), "BACKUP")
	if !hasAddr(t, nodes["lb1"], "eth0", vip) || hasAddr(t, nodes["lb2"], "eth0", vip) {
		t.Errorf("VIP on lb1: %v, on lb2: %v; want only lb1", hasAddr(t, nodes["lb1"], "eth0", vip), hasAddr(t, nodes["lb2"], "eth0", vip))
	}
	for _, name := range []string{"lb1", "lb2"} {
		waitLinkUp(ctx, t, filepath.Join(dir, name+".sock"), "crossover")
	}
	if st := statusOf(ctx, t, filepath.Join(dir, "lb2.sock")); st.Instances[0].Master != "10.77.0.11" {
		t.Errorf("lb2 sees master %q, want 10.77.0.11", st.Instances[0].Master)
	}

	// Graceful stop of the master: lb2 takes over and holds the VIP, lb1
	// exits 0 and no longer holds it.
	if err := procs["lb1"].Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-procs["lb1"].Done():
		if err := procs["lb1"].Wait(); err != nil {
			t.Errorf("lb1 exited with %v after SIGTERM", err)
		}
	case <-ctx.Done():
		t.Fatal("lb1 did not stop after SIGTERM")
	}
	waitState(ctx, t, filepath.Join(dir, "lb2.sock"), "MASTER")
	if hasAddr(t, nodes["lb1"], "eth0", vip) || !hasAddr(t, nodes["lb2"], "eth0", vip) {
		t.Errorf("after the handover: VIP on lb1: %v, on lb2: %v; want only lb2", hasAddr(t, nodes["lb1"], "eth0", vip), hasAddr(t, nodes["lb2"], "eth0", vip))
	}
	delete(procs, "lb1")

	// lb1's identity inside lb2's namespace: refused, nothing started.
	out, err := nodes["lb2"].CombinedOutput(ctx, hadirector, "run", "--config", cfg, "--node", "lb1", "--socket", filepath.Join(dir, "wrong.sock"))
	if err == nil || !strings.Contains(string(out), `node "lb1": address 10.77.0.11/24 is not on eth0 on this host`) {
		t.Errorf("lb1 in lb2's namespace: err=%v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(dir, "wrong.sock")); err == nil {
		t.Error("the wrongly identified daemon started")
	}

	for name, p := range procs {
		if err := p.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		select {
		case <-p.Done():
			if err := p.Wait(); err != nil {
				t.Errorf("%s exited with %v after SIGTERM", name, err)
			}
		case <-ctx.Done():
			t.Fatalf("%s did not stop after SIGTERM", name)
		}
	}
}

// waitState waits until the daemon's first instance is in state.
func waitState(ctx context.Context, t *testing.T, socket, state string) {
	t.Helper()
	for {
		st := statusOf(ctx, t, socket)
		if len(st.Instances) > 0 && st.Instances[0].State == state {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: state %v, want %s", socket, st.Instances, state)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func waitLinkUp(ctx context.Context, t *testing.T, socket, link string) {
	t.Helper()
	for {
		st := statusOf(ctx, t, socket)
		for _, l := range st.Links {
			if l.Name == link && l.Up {
				return
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: link %s not up: %+v", socket, link, st.Links)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// hasAddr says whether the node's interface carries p.
func hasAddr(t *testing.T, n *netlab.Node, ifname string, p netip.Prefix) bool {
	t.Helper()
	link, err := n.Netlink().LinkByName(ifname)
	if err != nil {
		t.Fatal(err)
	}
	addrs, err := n.Netlink().AddrList(link, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if ap, ok := netip.AddrFromSlice(a.IP); ok && ap.Unmap() == p.Addr() {
			return true
		}
	}
	return false
}
