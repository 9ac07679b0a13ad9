package lvs

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/hadirector/hadirector/integration/netlab"
	"github.com/hadirector/hadirector/internal/ipvs"
)

// LabPrefix is the netlab prefix of every bed (namespaces lvs<id>-<node>).
const LabPrefix = "lvs"

// Bed is a built topology with its servers running. Its fields are set by
// New and must not be changed.
type Bed struct {
	Options // the plan, with defaults filled in

	Lab       *netlab.Lab
	Front     *netlab.Bridge     // client, directors' eth0 (and the real servers in DR)
	Back      *netlab.Bridge     // directors' eth1 and the real servers (NAT only; nil in DR)
	Client    *netlab.Node       // "client"
	LBs       []*netlab.Node     // the directors: "lb1" [, "lb2"]
	Reals     []*netlab.Node     // "rs1", "rs2", ...
	SorryNode *netlab.Node       // "sorry", or nil
	Servers   map[string]*Server // by node name (rsN, sorry); empty with NoServers

	tb      testing.TB // nil when built by Build
	http    *httpClient
	kmu     sync.Mutex
	kernels map[string]*ipvs.Kernel // by node name, opened on first use
}

// New builds the bed for o inside a fresh netlab lab and starts the real
// servers' programs (unless o.NoServers). Everything is removed when tb
// ends. It skips unless root (see netlab.NewForTest) and fails tb on any
// error.
//
// Interfaces: every node's first interface is eth0; in NAT the directors'
// back interface is eth1. Nothing is programmed in IPVS and no VIP is
// added: the daemon does that, or the test by hand ([Bed.AddVIP],
// [Bed.Ipvsadm]).
func New(tb testing.TB, o Options) *Bed {
	tb.Helper()
	lab := netlab.NewForTest(tb, LabPrefix)
	b, err := Build(lab, o)
	if err != nil {
		tb.Fatalf("lvs: %v", err)
	}
	b.tb = tb
	tb.Cleanup(b.Close) // before the lab goes (Cleanup is LIFO)
	return b
}

// Build is New outside a test (hadirector lab): it builds the bed for o in
// lab, which the caller owns and closes, and starts the real servers'
// programs. Close stops them; a failure half-way stops what was started.
func Build(lab *netlab.Lab, o Options) (*Bed, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	o = o.withDefaults()
	b := &Bed{Options: o, Lab: lab, Servers: map[string]*Server{}, kernels: map[string]*ipvs.Kernel{}}
	if err := b.build(); err != nil {
		return nil, fmt.Errorf("lvs: building the %s bed: %w", o.Mode, err)
	}
	b.http = newHTTPClient(b.Client)
	if !o.NoServers {
		for _, n := range b.serverNodes() {
			s, err := StartServer(n, n.Name(), HTTPPort, EchoPort)
			if err != nil {
				b.Close()
				return nil, fmt.Errorf("lvs: %w", err)
			}
			b.Servers[n.Name()] = s
		}
	}
	return b, nil
}

// Close stops the servers' programs and closes the IPVS handles; the
// namespaces are the lab's to remove.
func (b *Bed) Close() {
	for _, s := range b.Servers {
		s.Close()
	}
	b.closeKernels()
}

func (b *Bed) serverNodes() []*netlab.Node {
	out := append([]*netlab.Node(nil), b.Reals...)
	if b.SorryNode != nil {
		out = append(out, b.SorryNode)
	}
	return out
}

func (b *Bed) build() (err error) {
	l := b.Lab
	if b.Front, err = l.AddBridge("front"); err != nil {
		return err
	}
	if b.Mode == NAT {
		if b.Back, err = l.AddBridge("back"); err != nil {
			return err
		}
	}

	if b.Client, err = l.AddNode("client"); err != nil {
		return err
	}
	if _, err = l.Connect(b.Client, b.Front, "eth0", prefix(b.ClientAddr())); err != nil {
		return err
	}
	if b.Mode == NAT {
		// Not needed for the VIP (on-link); lets the client reach the
		// real servers directly through lb1, for diagnostics.
		back := netip.PrefixFrom(b.RealAddr(1), PrefixLen).Masked().String()
		if err = b.Client.AddRoute(back, b.DirectorAddr(1).String(), ""); err != nil {
			return err
		}
	}

	for i := 1; i <= b.Directors; i++ {
		n, err := l.AddNode(fmt.Sprintf("lb%d", i))
		if err != nil {
			return err
		}
		b.LBs = append(b.LBs, n)
		if _, err = l.Connect(n, b.Front, "eth0", prefix(b.DirectorAddr(i))); err != nil {
			return err
		}
		if b.Mode == NAT {
			if _, err = l.Connect(n, b.Back, "eth1", prefix(b.DirectorBackAddr(i))); err != nil {
				return err
			}
			if err = n.Sysctl("net.ipv4.ip_forward", "1"); err != nil {
				return err
			}
		}
	}

	for i, name := range b.RealNames() {
		n, err := b.addServerNode(name, b.RealAddr(i+1))
		if err != nil {
			return err
		}
		b.Reals = append(b.Reals, n)
	}
	if b.Sorry {
		if b.SorryNode, err = b.addServerNode("sorry", b.SorryAddr()); err != nil {
			return err
		}
	}
	return nil
}

func (b *Bed) addServerNode(name string, a netip.Addr) (*netlab.Node, error) {
	n, err := b.Lab.AddNode(name)
	if err != nil {
		return nil, err
	}
	seg := b.Back
	if b.Mode == DR {
		seg = b.Front
	}
	if _, err := b.Lab.Connect(n, seg, "eth0", prefix(a)); err != nil {
		return nil, err
	}
	switch b.Mode {
	case NAT:
		// Replies go back through the director, which un-NATs them.
		if err := n.AddRoute("default", b.gateway().String(), ""); err != nil {
			return nil, err
		}
	case DR:
		// The VIP on lo: the server accepts packets for it, never
		// answers ARP for it (arp_ignore=1: only for addresses on the
		// asking interface) and never uses it as an ARP source
		// (arp_announce=2). The kernel takes the max of "all" and the
		// interface's value.
		if err := addAddr(n, "lo", netip.PrefixFrom(b.VIP(), 32)); err != nil {
			return nil, err
		}
		for _, kv := range [][2]string{
			{"net.ipv4.conf.all.arp_ignore", "1"},
			{"net.ipv4.conf.all.arp_announce", "2"},
			{"net.ipv4.conf.eth0.arp_ignore", "1"},
			{"net.ipv4.conf.eth0.arp_announce", "2"},
		} {
			if err := n.Sysctl(kv[0], kv[1]); err != nil {
				return nil, err
			}
		}
	}
	return n, nil
}

// LB1 is the first director.
func (b *Bed) LB1() *netlab.Node { return b.LBs[0] }

// Node returns the node called name (client, lb1, lb2, rsN, sorry), or nil.
func (b *Bed) Node(name string) *netlab.Node { return b.Lab.Node(name) }

// Server returns the server running in node name (rsN or sorry); it fails
// the test if there is none (outside a test it returns nil).
func (b *Bed) Server(name string) *Server {
	s := b.Servers[name]
	if s == nil && b.tb != nil {
		b.tb.Helper()
		b.tb.Fatalf("lvs: no server %q in this bed", name)
	}
	return s
}

// AddVIP puts the VIP (/24, as the daemon's VRRP instance does) on the
// director's eth0, by hand: for tests that program IPVS without the daemon.
func (b *Bed) AddVIP(director *netlab.Node) error {
	return addAddr(director, "eth0", netip.PrefixFrom(b.VIP(), PrefixLen))
}

// AddBackVIP puts the real servers' floating gateway (NAT with two
// directors) on director's eth1 by hand, as the daemon's "back" instance
// does as master.
func (b *Bed) AddBackVIP(director *netlab.Node) error {
	return addAddr(director, "eth1", netip.PrefixFrom(b.BackVIP(), PrefixLen))
}

// DelVIP removes what AddVIP added.
func (b *Bed) DelVIP(director *netlab.Node) error {
	h := director.Netlink()
	link, err := h.LinkByName("eth0")
	if err != nil {
		return err
	}
	return h.AddrDel(link, nlAddr(netip.PrefixFrom(b.VIP(), PrefixLen)))
}

// HasAddr reports whether node has address a on interface ifname.
func HasAddr(node *netlab.Node, ifname string, a netip.Addr) (bool, error) {
	h := node.Netlink()
	link, err := h.LinkByName(ifname)
	if err != nil {
		return false, err
	}
	addrs, err := redump(func() ([]netlink.Addr, error) { return h.AddrList(link, netlink.FAMILY_ALL) })
	if err != nil {
		return false, err
	}
	for _, x := range addrs {
		if y, ok := netip.AddrFromSlice(x.IP); ok && y.Unmap() == a {
			return true, nil
		}
	}
	return false, nil
}

// SetLinkUp sets interface ifname of node up or down (e.g. to make a real
// server silently unreachable, with no RST).
func SetLinkUp(node *netlab.Node, ifname string, up bool) error {
	h := node.Netlink()
	link, err := h.LinkByName(ifname)
	if err != nil {
		return err
	}
	if up {
		return h.LinkSetUp(link)
	}
	return h.LinkSetDown(link)
}

// NeighMAC returns the MAC that node's neighbour table holds for a on
// ifname (nil if none): which host answered ARP for an address.
func NeighMAC(node *netlab.Node, ifname string, a netip.Addr) (net.HardwareAddr, error) {
	h := node.Netlink()
	link, err := h.LinkByName(ifname)
	if err != nil {
		return nil, err
	}
	ns, err := redump(func() ([]netlink.Neigh, error) { return h.NeighList(link.Attrs().Index, netlink.FAMILY_V4) })
	if err != nil {
		return nil, err
	}
	for _, n := range ns {
		if y, ok := netip.AddrFromSlice(n.IP); ok && y.Unmap() == a && len(n.HardwareAddr) > 0 {
			return n.HardwareAddr, nil
		}
	}
	return nil, nil
}

// ForgetNeigh deletes node's neighbour entry for a on ifname, if any (e.g.
// a FAILED one after an unanswered ARP).
func ForgetNeigh(node *netlab.Node, ifname string, a netip.Addr) error {
	h := node.Netlink()
	link, err := h.LinkByName(ifname)
	if err != nil {
		return err
	}
	err = h.NeighDel(&netlink.Neigh{LinkIndex: link.Attrs().Index, Family: netlink.FAMILY_V4, IP: net.IP(a.AsSlice())})
	if err != nil && !errors.Is(err, syscall.ENOENT) {
		return fmt.Errorf("lvs: %s: forget neighbour %s: %w", node.Name(), a, err)
	}
	return nil
}

func addAddr(node *netlab.Node, ifname string, p netip.Prefix) error {
	h := node.Netlink()
	link, err := h.LinkByName(ifname)
	if err != nil {
		return fmt.Errorf("lvs: %s: %w", node.Name(), err)
	}
	if err := h.AddrAdd(link, nlAddr(p)); err != nil {
		return fmt.Errorf("lvs: %s: add %s to %s: %w", node.Name(), p, ifname, err)
	}
	return nil
}

func nlAddr(p netip.Prefix) *netlink.Addr {
	return &netlink.Addr{IPNet: &net.IPNet{
		IP:   net.IP(p.Addr().AsSlice()),
		Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen()),
	}}
}

// Run runs a program in node to completion and returns its combined output
// (e.g. `ip -s link`, `ipvsadm -Lnc`); a failure includes the output.
func Run(ctx context.Context, node *netlab.Node, name string, args ...string) (string, error) {
	out, err := node.CombinedOutput(ctx, name, args...)
	if err != nil {
		return string(out), fmt.Errorf("%s: %s %v: %w\n%s", node.Name(), name, args, err, out)
	}
	return string(out), nil
}

// redump runs a netlink dump again when the kernel marked it interrupted
// by a concurrent change (ErrDumpInterrupted, a partial answer): with
// other tests' namespaces coming and going that happens now and then.
func redump[T any](dump func() ([]T, error)) ([]T, error) {
	for try := 1; ; try++ {
		out, err := dump()
		if !errors.Is(err, netlink.ErrDumpInterrupted) || try == 5 {
			return out, err
		}
	}
}
