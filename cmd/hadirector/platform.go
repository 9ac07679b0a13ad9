package main

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sort"
	"sync/atomic"
	"time"

	"github.com/hadirector/hadirector/internal/config"
	"github.com/hadirector/hadirector/internal/control"
	"github.com/hadirector/hadirector/internal/director"
	"github.com/hadirector/hadirector/internal/heartbeat"
	"github.com/hadirector/hadirector/internal/vip"
	"github.com/hadirector/hadirector/internal/vrrp"
)

// platform is the set of real sockets, links and VIP announcers the engine
// runs on, built from the config for this node. Packets go to the engine
// once it exists (engine is set after New; until then they are dropped).
type platform struct {
	opts   director.Options
	engine atomic.Pointer[director.Engine]
	links  map[string]heartbeat.Link
	// liveness connections, one per UDP link: they see the peer's process
	// die within a millisecond (its kernel closes the connection).
	liveness []*heartbeat.Liveness
	// nodeLoss probes the peer by ARP when every link to it goes silent
	// (nil without links); link health callbacks may come before it is
	// set, hence the atomic.
	nodeLoss atomic.Pointer[nodeLoss]
	sockets  []*heartbeat.VRRPSocket
	close    []func() error
	log      *slog.Logger
}

// Bye tells the peers this is a graceful stop, not a crash.
func (p *platform) Bye() {
	for _, l := range p.liveness {
		if err := l.Bye(); err != nil {
			p.log.Debug("liveness bye", "err", err)
		}
	}
}

func (p *platform) deliver(pkt director.Packet) {
	if e := p.engine.Load(); e != nil {
		e.Deliver(pkt)
	}
}

// Close closes everything that was opened (VIPs stay as the machines left
// them: released after a graceful stop).
func (p *platform) Close() error {
	var errs []error
	for i := len(p.close) - 1; i >= 0; i-- {
		errs = append(errs, p.close[i]())
	}
	return errors.Join(errs...)
}

// buildPlatform opens what node needs in cfg. On error everything opened so
// far is closed again: a failed start changes nothing.
func buildPlatform(cfg *config.Config, node string, log *slog.Logger) (_ *platform, err error) {
	p := &platform{log: log, links: map[string]heartbeat.Link{},
		opts: director.Options{Instances: map[string]director.InstanceIO{}, Links: map[string]director.Link{}}}
	defer func() {
		if err != nil {
			p.Close()
		}
	}()
	self := cfg.Node(node)

	// The extra links first: instances name them.
	used := map[string]bool{}
	for _, in := range cfg.Instances {
		for _, l := range in.Links {
			used[l] = true
		}
	}
	for i := range cfg.Links {
		l := &cfg.Links[i]
		if !used[l.Name] {
			continue
		}
		link, err := p.openLink(cfg, self, l)
		if err != nil {
			return nil, fmt.Errorf("link %s: %w", l.Name, err)
		}
		p.links[l.Name] = link
		p.opts.Links[l.Name] = link
		p.close = append(p.close, link.Close)
		if p.opts.LinkInterval == 0 || l.Interval.D() < p.opts.LinkInterval {
			p.opts.LinkInterval = l.Interval.D()
		}
	}
	p.opts.LinkHealth = p.linkHealth
	p.opts.SocketDrops = p.socketDrops
	if peer := otherNode(cfg, self); peer != nil && len(p.links) > 0 {
		names := make([]string, 0, len(p.links))
		for n := range p.links {
			names = append(names, n)
		}
		lost := func(addrs []netip.Addr) {
			if e := p.engine.Load(); e != nil {
				e.PeerLost(addrs, "master's node is gone (every heartbeat link silent, no ARP answer)")
			}
		}
		lastRx := func(name string) time.Time {
			if l, ok := p.links[name]; ok {
				return l.Health().LastRx
			}
			return time.Time{}
		}
		if nl := newNodeLoss(cfg, peer, names, lastRx, lost, log); nl != nil {
			closeProbers := nl.openProbers()
			p.close = append(p.close, func() error { closeProbers(); return nil })
			p.nodeLoss.Store(nl)
			p.opts.NodeLoss = nl.status
		}
	}
	if len(p.liveness) == 0 {
		if err := p.defaultLiveness(cfg, self); err != nil {
			return nil, err
		}
	}

	// One VRRP socket per interface and family, shared by its instances.
	type sockKey struct {
		ifname string
		v6     bool
	}
	sockets := map[sockKey]*heartbeat.VRRPSocket{}
	multicast := map[sockKey]bool{}
	for i := range cfg.Instances {
		in := &cfg.Instances[i]
		k := sockKey{in.Interface, in.Family() == config.IPv6}
		multicast[k] = multicast[k] || !in.Unicast
	}
	for i := range cfg.Instances {
		in := &cfg.Instances[i]
		k := sockKey{in.Interface, in.Family() == config.IPv6}
		sock := sockets[k]
		if sock == nil {
			// Manual: the engine reads the socket itself (director/waiter.go).
			sc := heartbeat.VRRPSocketConfig{Interface: in.Interface, IPv6: k.v6, Multicast: multicast[k], Manual: true}
			if !k.v6 {
				src, ok := self.Interface(in.Interface).FirstAddr(config.IPv4)
				if !ok {
					return nil, fmt.Errorf("instance %s: node %s has no IPv4 address on %s", in.Name, node, in.Interface)
				}
				sc.Source = src
			}
			if sock, err = heartbeat.ListenVRRP(sc); err != nil {
				return nil, fmt.Errorf("instance %s: %w", in.Name, err)
			}
			sockets[k] = sock
			p.sockets = append(p.sockets, sock)
			p.opts.Readers = append(p.opts.Readers, newVRRPReader(sock))
			p.close = append(p.close, sock.Close)
		}
		prefixes := make([]netip.Prefix, len(in.VIPs))
		for j, v := range in.VIPs {
			prefixes[j] = v.Prefix
		}
		// VIPs of this instance left by a crashed run: gone, unless this
		// node is the address owner and becomes master at once.
		if cfg.PriorityOf(in, node) != 255 {
			if removed, err := vip.RemoveStale(in.Interface, prefixes); err != nil {
				log.Warn("removing stale VIPs", "instance", in.Name, "err", err)
			} else if len(removed) > 0 {
				log.Warn("removed VIPs left by an earlier run", "instance", in.Name, "vips", fmt.Sprint(removed))
			}
		}
		vc := vip.Config{Interface: in.Interface, VIPs: prefixes, Repeat: in.GARPRepeat,
			SecondBurstDelay: in.GARPDelay.D(), Refresh: in.GARPRefresh.D()}
		if vc.SecondBurstDelay == 0 {
			vc.SecondBurstDelay = vip.Disabled
		}
		ann, err := vip.New(vc, log.With("instance", in.Name))
		if err != nil {
			return nil, fmt.Errorf("instance %s: %w", in.Name, err)
		}
		p.close = append(p.close, ann.Close)
		io := director.InstanceIO{Socket: sock, VIPs: ann, Links: in.Links}
		if in.Unicast {
			io.Peers = cfg.Peers(in, node)
		}
		p.opts.Instances[in.Name] = io
	}
	return p, nil
}

// openLink opens one heartbeat link to the other node of the pair.
func (p *platform) openLink(cfg *config.Config, self *config.Node, l *config.Link) (heartbeat.Link, error) {
	var peer *config.Node
	for i := range cfg.Nodes {
		if n := &cfg.Nodes[i]; n.Name != self.Name {
			if peer != nil {
				return nil, errors.New("a heartbeat link joins two directors; this cluster has more")
			}
			peer = n
		}
	}
	if peer == nil {
		return nil, errors.New("a heartbeat link needs a second director in the cluster")
	}
	var key []byte
	if l.KeyFile != "" {
		var err error
		if key, err = heartbeat.LoadKey(l.KeyFile); err != nil {
			return nil, err
		}
	}
	onRx := func(r heartbeat.Received) {
		if director.IsKeepalive(r.Payload) {
			// The link has counted it as life; the engine would only
			// drop it, after a wake-up per frame.
			return
		}
		p.deliver(director.Packet{Link: l.Name, Payload: r.Payload, At: r.At})
	}
	onHealth := func(h heartbeat.LinkHealth) {
		if nl := p.nodeLoss.Load(); nl != nil {
			nl.health(h)
		}
		if h.Up {
			p.log.Info("heartbeat link up", "link", h.Name)
		} else {
			p.log.Warn("heartbeat link DOWN: the peer is not heard on it", "link", h.Name, "last_rx", h.LastRx, "err", h.LastError)
		}
	}
	onQuiet := func(h heartbeat.LinkHealth) {
		if nl := p.nodeLoss.Load(); nl != nil {
			nl.quiet(h)
		}
	}
	domain := cfg.Cluster.Name + "/" + l.Name
	switch l.Type {
	case config.LinkUDP:
		local, ok := firstAddr(self.Interface(l.Interface))
		if !ok {
			return nil, fmt.Errorf("node %s has no address on %s", self.Name, l.Interface)
		}
		remote, ok := peer.Interface(l.Interface).FirstAddr(config.FamilyOf(local))
		if !ok {
			return nil, fmt.Errorf("node %s has no %s address on %s", peer.Name, config.FamilyOf(local), l.Interface)
		}
		link, err := heartbeat.NewUDPLink(heartbeat.UDPConfig{Name: l.Name, NodeID: self.Name, PeerID: peer.Name,
			Local: local, Peer: remote, Port: l.Port, Key: key, Domain: domain, Interval: l.Interval.D(),
			OnReceive: onRx, OnHealth: onHealth, OnQuiet: onQuiet})
		if err != nil {
			return nil, err
		}
		// The liveness connection rides on the same addresses, port number
		// (TCP) and key (its own derivation).
		if err := p.openLiveness(self, peer, local, remote, l.Port, key, domain+"/liveness"); err != nil {
			link.Close()
			return nil, err
		}
		return link, nil
	case config.LinkSerial:
		return heartbeat.NewSerialLink(heartbeat.SerialConfig{Name: l.Name, NodeID: self.Name, PeerID: peer.Name,
			Device: l.Device, Baud: l.Baud, Key: key, Domain: domain, Interval: l.Interval.D(),
			OnReceive: onRx, OnHealth: onHealth, OnQuiet: onQuiet})
	}
	return nil, fmt.Errorf("unknown link type %q", l.Type)
}

// otherNode is the other director of a pair; nil unless there are exactly
// two nodes.
func otherNode(cfg *config.Config, self *config.Node) *config.Node {
	if len(cfg.Nodes) != 2 {
		return nil
	}
	for i := range cfg.Nodes {
		if cfg.Nodes[i].Name != self.Name {
			return &cfg.Nodes[i]
		}
	}
	return nil
}

func firstAddr(ifc *config.Interface) (netip.Addr, bool) {
	if ifc == nil || len(ifc.Addresses) == 0 {
		return netip.Addr{}, false
	}
	return ifc.Addresses[0].Addr(), true
}

func (p *platform) linkHealth() []control.LinkStatus {
	var out []control.LinkStatus
	for _, l := range p.links {
		h := l.Health()
		ls := control.LinkStatus{Name: h.Name, Kind: h.Kind, Up: h.Up, Since: h.Since, LastRx: h.LastRx,
			RxFrames: h.RxFrames, TxFrames: h.TxFrames, Transitions: h.Transitions}
		for r, n := range h.Drops {
			if ls.Drops == nil {
				ls.Drops = map[string]uint64{}
			}
			ls.Drops[r.String()] = n
		}
		out = append(out, ls)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// nodeAddrs are all of a node's own addresses (any may be its VRRP source).
func nodeAddrs(n *config.Node) []netip.Addr {
	var out []netip.Addr
	for _, ifc := range n.Interfaces {
		for _, a := range ifc.Addresses {
			out = append(out, a.Addr())
		}
	}
	return out
}

// socketDrops sums what the VRRP sockets dropped, named as the codec's
// drop reasons so status shows one vocabulary.
func (p *platform) socketDrops() map[string]uint64 {
	out := map[string]uint64{}
	for _, s := range p.sockets {
		st := s.Stats()
		out[vrrp.DropBadTTL.String()] += st.BadTTL
		out[vrrp.DropOwnAdvert.String()] += st.Own
		out[vrrp.DropTruncated.String()] += st.Malformed
	}
	return out
}

// openLiveness holds a connection to the peer daemon; its kernel closing it
// means the peer's process died, and the engine takes over at once.
func (p *platform) openLiveness(self, peer *config.Node, local, remote netip.Addr, port int, key []byte, domain string) error {
	peerAddrs := nodeAddrs(peer)
	live, err := heartbeat.NewLiveness(heartbeat.LivenessConfig{NodeID: self.Name, PeerID: peer.Name,
		Local: local, Peer: remote, Port: port, Key: key, Domain: domain,
		OnPeer: func(ev heartbeat.LivenessEvent) {
			switch ev.Kind {
			case heartbeat.LivenessLost:
				p.log.Warn("peer's process is gone (liveness connection closed by its kernel)", "peer", peer.Name, "err", ev.Err)
				if e := p.engine.Load(); e != nil {
					go e.PeerLost(peerAddrs, "") // OnPeer must not block
				}
			case heartbeat.LivenessConnected:
				p.log.Info("liveness connection up", "peer", peer.Name)
			}
		}})
	if err != nil {
		return fmt.Errorf("liveness: %w", err)
	}
	p.liveness = append(p.liveness, live)
	p.close = append(p.close, live.Close)
	return nil
}

// defaultLiveness gives a pair without a UDP heartbeat link the same fast
// detection of a dead master process, over the first IPv4 VRRP interface.
// Without a key file it authenticates nothing: the key derives from the
// cluster name (not a secret; it keeps clusters apart), which is no weaker
// than VRRPv3 itself on that segment, and a forged close costs at most a
// takeover that the election undoes. Configure a UDP link (with key_file)
// for an authenticated one.
func (p *platform) defaultLiveness(cfg *config.Config, self *config.Node) error {
	if len(cfg.Nodes) != 2 {
		return nil
	}
	var peer *config.Node
	for i := range cfg.Nodes {
		if cfg.Nodes[i].Name != self.Name {
			peer = &cfg.Nodes[i]
		}
	}
	for _, in := range cfg.Instances {
		if in.Family() != config.IPv4 {
			continue
		}
		local, ok1 := self.Interface(in.Interface).FirstAddr(config.IPv4)
		remote, ok2 := peer.Interface(in.Interface).FirstAddr(config.IPv4)
		if !ok1 || !ok2 {
			continue
		}
		key := sha256.Sum256([]byte("hadirector liveness without a key file: " + cfg.Cluster.Name))
		return p.openLiveness(self, peer, local, remote, config.DefaultUDPLinkPort, key[:], cfg.Cluster.Name+"/liveness/"+in.Interface)
	}
	return nil
}

// vrrpReader lets the engine read a Manual VRRP socket. Its callback is
// made once: a closure per Drain would be an allocation per advert.
type vrrpReader struct {
	s  *heartbeat.VRRPSocket
	fn func(director.Packet)
	cb func(heartbeat.VRRPPacket)
}

func newVRRPReader(s *heartbeat.VRRPSocket) *vrrpReader {
	r := &vrrpReader{s: s}
	r.cb = func(pk heartbeat.VRRPPacket) {
		r.fn(director.Packet{Interface: pk.Interface, Src: pk.Src, Dst: pk.Dst, Payload: pk.Payload, At: pk.At})
	}
	return r
}

func (r *vrrpReader) Fd() int { return r.s.Fd() }

func (r *vrrpReader) Drain(fn func(director.Packet)) bool {
	r.fn = fn
	more := r.s.Drain(r.cb)
	r.fn = nil
	return more
}
