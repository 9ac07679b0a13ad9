// Package netlab builds throw-away network topologies out of Linux network
// namespaces, veth pairs and bridges, for hadirector's scenario tests and for
// the `hadirector lab` subcommand, and takes them down again.
//
// # What a Lab owns
//
// A Lab is named prefix + a random 6-character id (at most 14 characters, so
// the name itself is usable as, or inside, an interface name). It owns:
//
//   - one named network namespace per node, NetnsDir/<lab>-<node>
//     (`ip netns exec <lab>-<node> ...` works for debugging);
//   - one helper namespace per bridge, NetnsDir/<lab>-br-<bridge>, holding
//     the Linux bridge and the bridge-side ends of the veth pairs, so that
//     nothing at all is created in the caller's (root) namespace;
//   - the veth pairs and bridges inside those namespaces (they disappear with
//     the namespaces);
//   - processes started through Node.Start, Node.StartCmd and
//     Node.CombinedOutput, plus any other process found inside its namespaces
//     at Close time;
//   - its state file StateDir/<lab>.json, which records the owning process
//     (pid, start time, pid namespace, boot id) for Sweep.
//
// Interface names given by the caller live inside the node namespaces, so
// they cannot collide with other labs or with the host; bridge ports are
// named p1, p2, ... inside the bridge namespace, with an alias
// "<node>:<ifname>" for `ip -d link`.
//
// # Cleanup
//
// Close kills the lab's processes (SIGTERM to the process group, SIGKILL
// after the stop grace), SIGKILLs any other process still inside a lab
// namespace, deletes the namespaces like `ip netns delete` (which destroys
// their veths and bridges) and finally removes the state file. It is
// idempotent and retries what failed before; errors are joined.
//
// If the owning process dies without Close (SIGKILL, a panic in a goroutine
// other than the test goroutine, go test's -timeout), the processes the lab
// started receive SIGKILL from the kernel (PR_SET_PDEATHSIG), but the
// namespaces and the state file stay. Sweep removes the leftovers of labs
// whose recorded owner is dead; NewForTest calls it for its prefix.
//
// # Time bounds
//
// A Lab has no deadline of its own. Bounding a scenario is the caller's job:
// pass a context with a deadline to Node.Command, Node.Start,
// Node.DialContext and Node.WaitTCP. In tests, derive it from t.Context()
// (canceled right before Cleanup functions run) with a timeout well below go
// test's -timeout, because when -timeout fires the test binary panics from a
// timer goroutine and no Cleanup runs (Sweep then handles the leftovers on
// the next run).
//
// Everything here needs CAP_SYS_ADMIN and CAP_NET_ADMIN (in practice: root).
package netlab

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

const (
	// NetnsDir is where named network namespaces are bind-mounted; it is
	// the iproute2 location, so `ip netns` sees lab namespaces.
	NetnsDir = "/run/netns"
	// StateDir holds one <lab>.json owner record per live lab.
	StateDir = "/run/hadirector-netlab"
	// DefaultStopGrace is how long Close waits after SIGTERM before SIGKILL.
	DefaultStopGrace = 2 * time.Second

	maxPrefixLen = 8
	idLen        = 6
	maxIfname    = 15 // IFNAMSIZ - 1
	maxNodeName  = 40

	readyTimeout = 10 * time.Second // for new links to pass traffic
)

// ErrClosed is returned by operations on a Lab after Close.
var ErrClosed = errors.New("netlab: lab is closed")

// Lab is a set of namespaces, links and processes that is torn down as one.
// Its methods are safe for concurrent use; Close should not race with other
// calls on the same lab, its nodes or bridges.
type Lab struct {
	name      string
	grace     time.Duration
	statePath string

	closeMu sync.Mutex // serializes Close

	mu         sync.Mutex
	closed     bool
	namespaces []*namespace // in creation order; after Close: those whose removal failed
	nsNames    map[string]bool
	nodes      map[string]*Node
	bridges    map[string]*Bridge
	procs      map[*Process]struct{}
	portSeq    int
}

// Option configures New.
type Option func(*Lab)

// WithStopGrace sets how long Close (and Process.Stop via Close) waits
// between SIGTERM and SIGKILL. The default is DefaultStopGrace.
func WithStopGrace(d time.Duration) Option {
	return func(l *Lab) {
		if d >= 0 {
			l.grace = d
		}
	}
}

// New creates an empty lab named prefix + a short random id and records the
// calling process as its owner in StateDir. prefix must be 1-8 characters
// of [a-z0-9-] starting with a letter.
func New(prefix string, opts ...Option) (*Lab, error) {
	if err := checkPrefix(prefix); err != nil {
		return nil, err
	}
	l := &Lab{
		grace:   DefaultStopGrace,
		nsNames: map[string]bool{},
		nodes:   map[string]*Node{},
		bridges: map[string]*Bridge{},
		procs:   map[*Process]struct{}{},
	}
	for _, o := range opts {
		o(l)
	}
	if err := os.MkdirAll(StateDir, 0o755); err != nil {
		return nil, fmt.Errorf("netlab: %w", err)
	}
	rec, err := selfOwner()
	if err != nil {
		return nil, err
	}
	for range 20 {
		name := prefix + randomID()
		p, err := claimState(name, rec)
		if errors.Is(err, fs.ErrExist) || (err == nil && netnsInUse(name)) {
			if err == nil {
				_ = os.Remove(p)
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		l.name, l.statePath = name, p
		return l, nil
	}
	return nil, errors.New("netlab: could not find an unused lab name")
}

// Name is the lab's unique name (prefix + id); every namespace of the lab is
// named Name() + "-...".
func (l *Lab) Name() string { return l.name }

// String returns Name.
func (l *Lab) String() string { return l.name }

// Namespaces lists the names (under NetnsDir) of the namespaces the lab
// currently owns.
func (l *Lab) Namespaces() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]string, 0, len(l.namespaces))
	for _, ns := range l.namespaces {
		out = append(out, ns.name)
	}
	return out
}

// StatePath is the lab's owner record file.
func (l *Lab) StatePath() string { return l.statePath }

// Node returns the node called name, or nil.
func (l *Lab) Node(name string) *Node {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.nodes[name]
}

// Bridge returns the bridge called name, or nil.
func (l *Lab) Bridge(name string) *Bridge {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.bridges[name]
}

// Nodes returns all nodes sorted by name.
func (l *Lab) Nodes() []*Node {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]*Node, 0, len(l.nodes))
	for _, n := range l.nodes {
		out = append(out, n)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

// AddNode creates a node: a network namespace NetnsDir/<lab>-<name> with
// loopback up and IPv6 duplicate address detection disabled for every
// interface created in it later (net.ipv6.conf.{all,default}.accept_dad=0).
// name: 1-40 characters of [A-Za-z0-9_.-].
func (l *Lab) AddNode(name string) (*Node, error) {
	if err := checkName("node", name, maxNodeName); err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, ErrClosed
	}
	if l.nodes[name] != nil {
		return nil, fmt.Errorf("netlab: node %q already exists", name)
	}
	ns, err := l.newNamespaceLocked(l.name+"-"+name, func(ns *namespace) error {
		lo, err := ns.nl.LinkByName("lo")
		if err != nil {
			return err
		}
		if err := ns.nl.LinkSetUp(lo); err != nil {
			return fmt.Errorf("lo up: %w", err)
		}
		for _, kv := range [][2]string{
			{"net.ipv6.conf.all.accept_dad", "0"},
			{"net.ipv6.conf.default.accept_dad", "0"},
		} {
			if err := writeSysctl(kv[0], kv[1]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	n := &Node{lab: l, name: name, ns: ns}
	l.nodes[name] = n
	return n, nil
}

// AddBridge creates an L2 segment: a Linux bridge called name (also its
// interface name, so at most 15 characters) in its own helper namespace
// NetnsDir/<lab>-br-<name>. IPv6 is disabled in that namespace (the bridge
// and its ports carry no addresses and send no DAD/MLD noise) and multicast
// snooping is off, so VRRP-style multicast is always flooded.
func (l *Lab) AddBridge(name string) (*Bridge, error) {
	if err := checkName("bridge", name, maxIfname); err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, ErrClosed
	}
	if l.bridges[name] != nil {
		return nil, fmt.Errorf("netlab: bridge %q already exists", name)
	}
	b := &Bridge{lab: l, name: name}
	ns, err := l.newNamespaceLocked(l.name+"-br-"+name, func(ns *namespace) error {
		for _, kv := range [][2]string{
			{"net.ipv6.conf.all.disable_ipv6", "1"},
			{"net.ipv6.conf.default.disable_ipv6", "1"},
		} {
			if err := writeSysctl(kv[0], kv[1]); err != nil {
				return err
			}
		}
		off := false
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}, MulticastSnooping: &off}
		if err := ns.nl.LinkAdd(br); err != nil {
			return fmt.Errorf("add bridge %s: %w", name, err)
		}
		link, err := ns.nl.LinkByName(name)
		if err != nil {
			return err
		}
		b.index = link.Attrs().Index
		return ns.nl.LinkSetUp(link)
	})
	if err != nil {
		return nil, err
	}
	b.ns = ns
	l.bridges[name] = b
	return b, nil
}

func (l *Lab) newNamespaceLocked(nsName string, setup func(*namespace) error) (*namespace, error) {
	if l.nsNames[nsName] {
		return nil, fmt.Errorf("netlab: namespace %s already exists in this lab", nsName)
	}
	ns, err := createNamed(nsName, setup)
	if err != nil {
		return nil, err
	}
	l.nsNames[nsName] = true
	l.namespaces = append(l.namespaces, ns)
	return ns, nil
}

// Connect plugs node into bridge with a veth pair: the node end is called
// ifname inside the node's namespace and gets addrs (CIDR notation with the
// host address, IPv4 or IPv6, e.g. "10.0.0.2/24", "fd00::2/64"; IPv6
// addresses are added with IFA_F_NODAD and usable at once); the other end
// becomes a port of the bridge. When Connect returns, both ends are up and
// pass traffic (carrier processed, qdisc attached, bridge port forwarding).
func (l *Lab) Connect(node *Node, bridge *Bridge, ifname string, addrs ...string) (*Iface, error) {
	if err := checkName("interface", ifname, maxIfname); err != nil {
		return nil, err
	}
	prefixes, err := parseAddrs(addrs)
	if err != nil {
		return nil, err
	}
	if bridge == nil {
		return nil, errors.New("netlab: Connect: nil bridge")
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.checkUsableLocked(node, bridge); err != nil {
		return nil, err
	}
	if node.ifaceLocked(ifname) != nil {
		return nil, fmt.Errorf("netlab: node %s already has interface %s", node.name, ifname)
	}
	var port string
	for {
		l.portSeq++
		if port = fmt.Sprintf("p%d", l.portSeq); port != bridge.name {
			break
		}
	}
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: ifname},
		PeerName:      port,
		PeerNamespace: netlink.NsFd(int(bridge.ns.h)),
	}
	if err := node.ns.nl.LinkAdd(veth); err != nil {
		return nil, fmt.Errorf("netlab: add veth %s(%s)--%s(%s): %w", ifname, node.name, port, bridge.name, err)
	}
	iface, err := func() (*Iface, error) {
		pl, err := bridge.ns.nl.LinkByName(port)
		if err != nil {
			return nil, err
		}
		if err := bridge.ns.nl.LinkSetMasterByIndex(pl, bridge.index); err != nil {
			return nil, fmt.Errorf("enslave %s to %s: %w", port, bridge.name, err)
		}
		_ = bridge.ns.nl.LinkSetAlias(pl, node.name+":"+ifname) // cosmetic
		if err := bridge.ns.nl.LinkSetUp(pl); err != nil {
			return nil, fmt.Errorf("%s up: %w", port, err)
		}
		iface, err := configureIface(node, ifname, prefixes)
		if err != nil {
			return nil, err
		}
		if err := node.ns.waitReady(iface.index, false, readyTimeout); err != nil {
			return nil, err
		}
		if err := bridge.ns.waitReady(pl.Attrs().Index, true, readyTimeout); err != nil {
			return nil, err
		}
		return iface, nil
	}()
	if err != nil {
		deleteLink(node.ns.nl, ifname)
		return nil, fmt.Errorf("netlab: connect %s:%s to bridge %s: %w", node.name, ifname, bridge.name, err)
	}
	iface.bridge, iface.port = bridge, port
	node.ifaces = append(node.ifaces, iface)
	return iface, nil
}

// Link connects two nodes directly with a veth pair, ifA in a and ifB in b,
// configured like Connect does. a and b may be the same node.
func (l *Lab) Link(a *Node, ifA string, addrsA []string, b *Node, ifB string, addrsB []string) (*Iface, *Iface, error) {
	for _, n := range []string{ifA, ifB} {
		if err := checkName("interface", n, maxIfname); err != nil {
			return nil, nil, err
		}
	}
	pa, err := parseAddrs(addrsA)
	if err != nil {
		return nil, nil, err
	}
	pb, err := parseAddrs(addrsB)
	if err != nil {
		return nil, nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.checkUsableLocked(a, nil); err != nil {
		return nil, nil, err
	}
	if err := l.checkUsableLocked(b, nil); err != nil {
		return nil, nil, err
	}
	if a == b && ifA == ifB {
		return nil, nil, fmt.Errorf("netlab: link %s: both ends called %s", a.name, ifA)
	}
	if a.ifaceLocked(ifA) != nil || b.ifaceLocked(ifB) != nil {
		return nil, nil, fmt.Errorf("netlab: link %s:%s--%s:%s: interface name in use", a.name, ifA, b.name, ifB)
	}
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: ifA}, PeerName: ifB}
	if a != b {
		veth.PeerNamespace = netlink.NsFd(int(b.ns.h))
	}
	if err := a.ns.nl.LinkAdd(veth); err != nil {
		return nil, nil, fmt.Errorf("netlab: add veth %s:%s--%s:%s: %w", a.name, ifA, b.name, ifB, err)
	}
	ib, err := configureIface(b, ifB, pb)
	var ia *Iface
	if err == nil {
		ia, err = configureIface(a, ifA, pa)
	}
	if err == nil {
		err = a.ns.waitReady(ia.index, false, readyTimeout)
	}
	if err == nil {
		err = b.ns.waitReady(ib.index, false, readyTimeout)
	}
	if err != nil {
		deleteLink(a.ns.nl, ifA)
		return nil, nil, fmt.Errorf("netlab: link %s:%s--%s:%s: %w", a.name, ifA, b.name, ifB, err)
	}
	ia.peer, ib.peer = ib, ia
	a.ifaces = append(a.ifaces, ia)
	b.ifaces = append(b.ifaces, ib)
	return ia, ib, nil
}

func (l *Lab) checkUsableLocked(n *Node, b *Bridge) error {
	if l.closed {
		return ErrClosed
	}
	if n == nil || n.lab != l {
		return errors.New("netlab: node does not belong to this lab")
	}
	if b != nil && b.lab != l {
		return errors.New("netlab: bridge does not belong to this lab")
	}
	return nil
}

// configureIface brings ifname in n up and adds the addresses.
func configureIface(n *Node, ifname string, prefixes []netip.Prefix) (*Iface, error) {
	h := n.ns.nl
	link, err := h.LinkByName(ifname)
	if err != nil {
		return nil, err
	}
	if err := h.LinkSetUp(link); err != nil {
		return nil, fmt.Errorf("%s up: %w", ifname, err)
	}
	for _, p := range prefixes {
		a := &netlink.Addr{IPNet: &net.IPNet{
			IP:   net.IP(p.Addr().AsSlice()),
			Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen()),
		}}
		if p.Addr().Is6() {
			a.Flags = unix.IFA_F_NODAD
		}
		if err := h.AddrAdd(link, a); err != nil {
			return nil, fmt.Errorf("add %s to %s: %w", p, ifname, err)
		}
	}
	return &Iface{
		node:  n,
		name:  ifname,
		index: link.Attrs().Index,
		mac:   link.Attrs().HardwareAddr,
		addrs: prefixes,
	}, nil
}

func deleteLink(h *netlink.Handle, name string) {
	if link, err := h.LinkByName(name); err == nil {
		_ = h.LinkDel(link)
	}
}

func parseAddrs(addrs []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(addrs))
	for _, s := range addrs {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("netlab: address %q: want CIDR with host address, e.g. 10.0.0.2/24: %w", s, err)
		}
		if p.Addr().Zone() != "" {
			return nil, fmt.Errorf("netlab: address %q: zones are not allowed", s)
		}
		out = append(out, p)
	}
	return out, nil
}

// Close tears the lab down: tracked processes get SIGTERM (process group),
// then SIGKILL after the stop grace; any other process inside a lab
// namespace gets SIGKILL; the namespaces are deleted (with their veths and
// bridges); then the state file is removed. It returns all errors joined.
// Calling it again retries whatever failed and returns nil once everything
// is gone.
func (l *Lab) Close() error {
	l.closeMu.Lock()
	defer l.closeMu.Unlock()

	l.mu.Lock()
	l.closed = true
	procs := make([]*Process, 0, len(l.procs))
	for p := range l.procs {
		procs = append(procs, p)
	}
	nss := l.namespaces
	l.mu.Unlock()

	var errs []error
	var wg sync.WaitGroup
	var emu sync.Mutex
	for _, p := range procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := p.Stop(l.grace); err != nil {
				emu.Lock()
				errs = append(errs, err)
				emu.Unlock()
			}
		}()
	}
	wg.Wait()

	ids := map[nsID]bool{}
	for _, ns := range nss {
		ids[ns.id] = true
	}
	if _, err := killProcsIn(ids); err != nil {
		errs = append(errs, err)
	}

	var failed []*namespace
	for i := len(nss) - 1; i >= 0; i-- {
		ns := nss[i]
		ns.close()
		if err := removeNamed(ns.name); err != nil {
			errs = append(errs, err)
			failed = append(failed, ns)
		}
	}
	if len(failed) == 0 && l.statePath != "" {
		if err := os.Remove(l.statePath); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("netlab: %w", err))
		}
	}

	l.mu.Lock()
	l.namespaces = failed
	l.mu.Unlock()
	return errors.Join(errs...)
}

func (l *Lab) track(p *Process) { l.procs[p] = struct{}{} } // l.mu held

func (l *Lab) untrack(p *Process) {
	l.mu.Lock()
	delete(l.procs, p)
	l.mu.Unlock()
}

func (l *Lab) isClosed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closed
}

// Bridge is an L2 segment: a Linux bridge in its own helper namespace.
type Bridge struct {
	lab   *Lab
	name  string
	ns    *namespace
	index int
}

// Name is the bridge's name (also its interface name in its namespace).
func (b *Bridge) Name() string { return b.name }

// Netns is the helper namespace's name under NetnsDir.
func (b *Bridge) Netns() string { return b.ns.name }

// Netlink returns an rtnetlink handle bound to the bridge's namespace. It
// belongs to the lab: do not Close it, do not use it after Lab.Close.
func (b *Bridge) Netlink() *netlink.Handle { return b.ns.nl }

// String returns "bridge <name>".
func (b *Bridge) String() string { return "bridge " + b.name }

// Iface is a node's end of a veth pair made by Connect or Link.
type Iface struct {
	node   *Node
	name   string
	index  int
	mac    net.HardwareAddr
	addrs  []netip.Prefix
	bridge *Bridge
	port   string
	peer   *Iface
}

// Node is the node the interface is in.
func (i *Iface) Node() *Node { return i.node }

// Name is the interface name inside the node's namespace.
func (i *Iface) Name() string { return i.name }

// Index is the interface index inside the node's namespace.
func (i *Iface) Index() int { return i.index }

// MAC is the interface's hardware address.
func (i *Iface) MAC() net.HardwareAddr { return append(net.HardwareAddr(nil), i.mac...) }

// Addrs are the addresses the lab configured on the interface.
func (i *Iface) Addrs() []netip.Prefix { return append([]netip.Prefix(nil), i.addrs...) }

// IP4 is the first configured IPv4 address, or the zero Addr.
func (i *Iface) IP4() netip.Addr { return firstAddr(i.addrs, true) }

// IP6 is the first configured IPv6 address, or the zero Addr.
func (i *Iface) IP6() netip.Addr { return firstAddr(i.addrs, false) }

// Bridge is the bridge the interface is plugged into (nil for Link).
func (i *Iface) Bridge() *Bridge { return i.bridge }

// Port is the name of the bridge-side veth end in the bridge's namespace
// ("" for Link).
func (i *Iface) Port() string { return i.port }

// Peer is the other end of a Link (nil for Connect).
func (i *Iface) Peer() *Iface { return i.peer }

// String returns "<node>:<ifname>".
func (i *Iface) String() string { return i.node.name + ":" + i.name }

func firstAddr(ps []netip.Prefix, v4 bool) netip.Addr {
	for _, p := range ps {
		if p.Addr().Is4() == v4 {
			return p.Addr()
		}
	}
	return netip.Addr{}
}

func checkPrefix(p string) error {
	if len(p) == 0 || len(p) > maxPrefixLen || p[0] < 'a' || p[0] > 'z' {
		return fmt.Errorf("netlab: prefix %q: want 1-%d characters of [a-z0-9-] starting with a letter", p, maxPrefixLen)
	}
	for _, c := range p {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return fmt.Errorf("netlab: prefix %q: want 1-%d characters of [a-z0-9-] starting with a letter", p, maxPrefixLen)
		}
	}
	return nil
}

func checkName(kind, s string, max int) error {
	bad := len(s) == 0 || len(s) > max || s[0] == '.' || s[0] == '-'
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.') {
			bad = true
		}
	}
	if bad {
		return fmt.Errorf("netlab: %s name %q: want 1-%d characters of [A-Za-z0-9_.-], not starting with . or -", kind, s, max)
	}
	return nil
}

func randomID() string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, idLen)
	_, _ = rand.Read(b) // never fails on Linux
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

// netnsInUse reports whether some namespace file is already named like a
// namespace of lab name (e.g. made by something else with the same prefix).
func netnsInUse(name string) bool {
	ents, _ := os.ReadDir(NetnsDir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), name+"-") {
			return true
		}
	}
	return false
}

// claimState atomically creates StateDir/<name>.json holding rec: the record
// is written to a temporary file first and hard-linked into place, so the
// final file is never seen half-written and link(2) fails if it exists.
func claimState(name string, rec ownerRecord) (string, error) {
	b, err := json.Marshal(rec)
	if err != nil {
		return "", err
	}
	final := filepath.Join(StateDir, name+".json")
	tmp := filepath.Join(StateDir, fmt.Sprintf(".%s.%d.tmp", name, rec.PID))
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return "", fmt.Errorf("netlab: %w", err)
	}
	defer os.Remove(tmp)
	if err := os.Link(tmp, final); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return "", fs.ErrExist
		}
		return "", fmt.Errorf("netlab: %w", err)
	}
	return final, nil
}
