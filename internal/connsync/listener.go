package connsync

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"

	"github.com/hadirector/hadirector/internal/ipvs"
)

// The passive listener: a UDP socket per sync port beside the kernel's backup
// daemon, decoding what the peer's master sends.
//
// Why a plain UDP socket works beside the kernel's: the backup's receive
// socket (ip_vs_sync.c, make_receive_sock) is bound to group:port+id with
// sk_reuse set ("equivalent to the REUSEADDR option in user-space") and
// sk_bound_dev_if set to the sync interface, and it joins the group there. A
// user socket with SO_REUSEADDR may bind the same address whichever of the
// two binds first, and the kernel hands every multicast datagram to every
// socket bound to its group and port (__udp4_lib_mcast_deliver and its IPv6
// twin clone the packet per socket; SO_REUSEPORT's one-socket-per-datagram
// selection applies to unicast only). So neither socket takes datagrams from
// the other, and no packet socket is needed. The VM test
// (TestListenerBesideBackup) checks both against the master's UDP
// OutDatagrams count.
//
// The listener's socket is also bound to the interface (SO_BINDTODEVICE, as
// the kernel's is) and has IP_MULTICAST_ALL / IPV6_MULTICAST_ALL off, so it
// hears the group only on the sync interface, not on others where something
// else joined it.

// Listener defaults and limits.
const (
	// DefaultListenerReadBuffer is the receive buffer of each listener
	// socket unless ListenerConfig.ReadBuffer says otherwise: room for a
	// burst of about 700 full 1500-byte datagrams.
	DefaultListenerReadBuffer = 1 << 20
	// DefaultFirstSeenLimit bounds the first-seen table unless
	// ListenerConfig.FirstSeenLimit says otherwise: a few MB at most (an
	// entry takes about 200 bytes). A benchmark with more connections in
	// flight sets a larger limit.
	DefaultFirstSeenLimit = 1 << 14
	// MaxSyncPorts is the kernel's limit on net.ipv4.vs.sync_ports
	// (IPVS_SYNC_PORTS_MAX, 1 << 6).
	MaxSyncPorts = 64

	// maxSenders bounds the per-sender statistics; more senders than
	// this count in ListenerStats.OtherSenders.
	maxSenders = 16
	// v0Expiry is how long a first-seen entry from a v0 message (which has
	// no timeout) lives after its last sighting: the kernel's default TCP
	// ESTABLISHED timeout.
	v0Expiry = 15 * time.Minute
	// pruneEvery is how often at most a full first-seen table is swept
	// for expired entries.
	pruneEvery = time.Second
	// readErrorPause is the pause after a failed read, so that a
	// persistent socket error does not spin.
	readErrorPause = 100 * time.Millisecond
)

// ListenerConfig is what [Listen] needs: the backup daemon's view of the
// sync traffic. [ListenerFor] derives it from the backup's DaemonConfig.
type ListenerConfig struct {
	// Interface is the sync interface (the daemon's mcast_ifn); the
	// listener hears the group on this interface only.
	Interface string
	// Group is the multicast group: IPv4, or IPv6 (e.g. ff02::…) when the
	// daemons use an IPv6 group. The zero Addr means DefaultGroup.
	Group netip.Addr
	// Port is the first sync port; 0 means DefaultPort.
	Port uint16
	// Ports is the number of ports, the sysctl net.ipv4.vs.sync_ports of
	// the master: its thread i sends to Port+i. 0 means 1; at most
	// MaxSyncPorts.
	Ports int
	// SyncID drops (and counts as DropWrongSyncID) messages with another
	// sync ID, as a backup with this sync ID does; 0 accepts all. Only 8
	// bits travel, so more than 255 is refused.
	SyncID uint32
	// MaxLen drops (and counts as DropOversized) datagrams longer than
	// this, as the backup does with its sync maxlen; 0 means no limit.
	MaxLen int
	// ReadBuffer is each socket's receive buffer in bytes (SO_RCVBUFFORCE,
	// else SO_RCVBUF up to net.core.rmem_max). 0 means
	// DefaultListenerReadBuffer.
	ReadBuffer int
	// FirstSeenLimit bounds the first-seen table (see [Listener.FirstSeen]);
	// 0 means DefaultFirstSeenLimit, a negative value keeps no table.
	FirstSeenLimit int
	// OnEntry, if set, is called for every entry the backup applies (those
	// before a fault included, skipped ones excluded), with the time the
	// datagram arrived. It runs on the listener's receive goroutine of that
	// port (concurrently for different ports) and delays reading while it
	// runs: keep it short. c.PEName and c.PEData are valid only during the
	// call.
	OnEntry func(seen time.Time, c Conn)
}

// ListenerFor returns the config of a listener beside the backup daemon
// backup (as [Daemons.List] reports it, so that MaxLen is the one in
// effect), with syncPorts the namespace's net.ipv4.vs.sync_ports.
func ListenerFor(backup DaemonConfig, syncPorts int) ListenerConfig {
	return ListenerConfig{
		Interface: backup.Interface,
		Group:     backup.Group,
		Port:      backup.Port,
		Ports:     syncPorts,
		SyncID:    backup.SyncID,
		MaxLen:    int(backup.MaxLen),
	}
}

func (c *ListenerConfig) fill() error {
	if !c.Group.IsValid() {
		c.Group = DefaultGroup
	}
	if c.Port == 0 {
		c.Port = DefaultPort
	}
	if c.Ports == 0 {
		c.Ports = 1
	}
	if c.ReadBuffer == 0 {
		c.ReadBuffer = DefaultListenerReadBuffer
	}
	if c.FirstSeenLimit == 0 {
		c.FirstSeenLimit = DefaultFirstSeenLimit
	}
	switch {
	case c.Interface == "" || len(c.Interface) > ifNameMax || strings.ContainsRune(c.Interface, 0):
		return fmt.Errorf("%w: interface name %q (1 to %d bytes)", ErrConfig, c.Interface, ifNameMax)
	case !c.Group.IsMulticast() || c.Group.Zone() != "" || c.Group.Is4In6():
		return fmt.Errorf("%w: group %v is not a multicast address", ErrConfig, c.Group)
	case c.Ports < 1 || c.Ports > MaxSyncPorts:
		return fmt.Errorf("%w: %d sync ports (1 to %d)", ErrConfig, c.Ports, MaxSyncPorts)
	case int(c.Port)+c.Ports-1 > 0xffff:
		return fmt.Errorf("%w: ports %d to %d run past 65535", ErrConfig, c.Port, int(c.Port)+c.Ports-1)
	case c.SyncID > 0xff:
		return fmt.Errorf("%w: sync ID %d: only 8 bits reach the wire (0 to 255)", ErrConfig, c.SyncID)
	case c.MaxLen < 0 || c.ReadBuffer < 0:
		return fmt.Errorf("%w: negative MaxLen %d or ReadBuffer %d", ErrConfig, c.MaxLen, c.ReadBuffer)
	}
	return nil
}

// Listener decodes the sync datagrams a peer's master daemon sends, on the
// sync interface beside this node's backup daemon, and counts them. It never
// sends, and it does not hear this node's own master daemon (the kernel sends
// with multicast loopback off). Its methods are safe for concurrent use.
type Listener struct {
	cfg   ListenerConfig
	dec   Decoder
	conns []*net.UDPConn
	addrs []netip.AddrPort

	wg        sync.WaitGroup
	done      chan struct{}
	closing   atomic.Bool
	closeOnce sync.Once
	closeErr  error

	mu sync.Mutex
	st listenerState // guarded by mu
}

// listenerState is what the receive goroutines update.
type listenerState struct {
	stats        Stats
	bytes        uint64
	lastSeen     time.Time
	lastSender   netip.AddrPort
	bySyncID     [256]uint64
	byKind       map[EntryKind]uint64
	senders      map[netip.Addr]*SenderStats
	otherSenders uint64
	ports        []PortStats
	readErrors   uint64

	firstSeen map[ConnKey]firstSeen
	overflow  uint64
	lastPrune time.Time
}

type firstSeen struct{ first, expires time.Time }

// ListenerStats is a snapshot of a [Listener]'s counters, for `hadirector
// status` and Prometheus-style metrics. Counters only grow (until the
// listener is replaced); maps and slices are the snapshot's own.
type ListenerStats struct {
	// Stats are the decoder's counters: datagrams (Messages), applied
	// entries, skipped entries and dropped datagrams by reason (a wrong sync
	// ID is Drops[DropWrongSyncID]), and when a datagram was last accepted
	// or dropped.
	Stats
	Bytes uint64 // payload bytes of all datagrams
	// LastSeen is when the last datagram arrived, accepted or not (the
	// kernel's receive time, wall clock); zero if none has. See Age.
	LastSeen   time.Time
	LastSender netip.AddrPort // where it came from
	// BySyncID counts datagrams by the sync ID in their header (of those
	// at least 2 bytes long), whether or not the listener's SyncID matches.
	BySyncID map[uint8]uint64
	// ByKind counts applied entries by protocol, template or not, and state.
	ByKind map[EntryKind]uint64
	// Senders are the first distinct source addresses seen (at most 16),
	// sorted by address; datagrams from any other count in OtherSenders.
	// More than one sender means more than one master on the sync link.
	Senders      []SenderStats
	OtherSenders uint64
	// Ports are the per-port counters, in port order.
	Ports []PortStats
	// SocketDrops are datagrams the kernel dropped before the listener read
	// them, mostly because its receive buffer was full (the sum of
	// Ports[i].SocketDrops, from SO_RXQ_OVFL; reported with the next
	// datagram that gets through). The kernel's backup has its own buffer:
	// see Udp RcvbufErrors in /proc/net/snmp.
	SocketDrops uint64
	ReadErrors  uint64 // failed reads (other than by Close)
	// FirstSeen is the number of connections in the first-seen table;
	// FirstSeenOverflow counts new connections it had no room for.
	FirstSeen         int
	FirstSeenOverflow uint64
}

// Age is how long before now the last datagram arrived, or -1 if none has:
// the measurable part of the sync lag (messages carry no timestamps). With
// traffic on the master it stays below the master's 2 s flush time
// (IPVS_SYNC_FLUSH_TIME) plus the network; an idle master sends nothing.
func (s *ListenerStats) Age(now time.Time) time.Duration {
	if s.LastSeen.IsZero() {
		return -1
	}
	return now.Sub(s.LastSeen)
}

// EntryKind classifies applied entries in ListenerStats.ByKind.
type EntryKind struct {
	Protocol ipvs.Protocol // 0 (IPPROTO_IP) for fwmark templates
	Template bool
	State    uint16
}

// String is e.g. "TCP ESTABLISHED" or "template UDP ASSURED".
func (k EntryKind) String() string {
	c := Conn{Protocol: k.Protocol, State: k.State}
	if k.Template {
		c.Flags = FlagTemplate
	}
	p := k.Protocol.String()
	if k.Protocol == 0 {
		p = "IP"
	}
	if k.Template {
		p = "template " + p
	}
	return p + " " + c.StateName()
}

// SenderStats counts the datagrams from one source address.
type SenderStats struct {
	Addr     netip.Addr
	Messages uint64
	LastSeen time.Time
}

// PortStats counts the datagrams to one sync port.
type PortStats struct {
	Port        uint16
	Messages    uint64
	SocketDrops uint64 // see ListenerStats.SocketDrops
}

// ConnKey identifies a connection (or template) in the first-seen table:
// the tuple the backup looks it up by.
type ConnKey struct {
	Protocol              ipvs.Protocol
	Template              bool
	Client, Virtual, Real netip.AddrPort
}

// Key returns c's ConnKey.
func (c *Conn) Key() ConnKey {
	return ConnKey{Protocol: c.Protocol, Template: c.Template(), Client: c.Client, Virtual: c.Virtual, Real: c.Real}
}

// Listen starts a listener as cfg says, in the calling thread's network
// namespace (to listen in another, call it on a thread switched into that
// namespace: its sockets stay there). It opens one socket per port, each
// bound to group:port and the interface and joined to the group there, and
// reads them until Close. The kernel's backup daemon may start before or
// after it.
func Listen(cfg ListenerConfig) (*Listener, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	ifi, err := net.InterfaceByName(cfg.Interface)
	if err != nil {
		return nil, fmt.Errorf("connsync: sync listener on interface %q: %w", cfg.Interface, err)
	}
	l := &Listener{
		cfg:  cfg,
		dec:  Decoder{SyncID: uint8(cfg.SyncID), MaxLen: cfg.MaxLen},
		done: make(chan struct{}),
		st: listenerState{
			byKind:  make(map[EntryKind]uint64),
			senders: make(map[netip.Addr]*SenderStats),
		},
	}
	if cfg.FirstSeenLimit > 0 {
		l.st.firstSeen = make(map[ConnKey]firstSeen)
	}
	for i := range cfg.Ports {
		port := cfg.Port + uint16(i)
		c, err := listenPort(ifi, cfg.Group, port, cfg.ReadBuffer)
		if err != nil {
			for _, c := range l.conns {
				c.Close()
			}
			return nil, fmt.Errorf("connsync: sync listener on %s, %v port %d: %w", cfg.Interface, cfg.Group, port, err)
		}
		l.conns = append(l.conns, c)
		l.addrs = append(l.addrs, netip.AddrPortFrom(cfg.Group, port))
		l.st.ports = append(l.st.ports, PortStats{Port: port})
	}
	for i := range l.conns {
		l.wg.Add(1)
		go l.receive(i)
	}
	return l, nil
}

// listenPort opens the socket of one sync port.
func listenPort(ifi *net.Interface, group netip.Addr, port uint16, readBuffer int) (*net.UDPConn, error) {
	network := "udp4"
	if group.Is6() {
		network = "udp6"
	}
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) { serr = setupSocket(int(fd), ifi.Name, group.Is6(), readBuffer) })
		return errors.Join(err, serr)
	}}
	pc, err := lc.ListenPacket(context.Background(), network, netip.AddrPortFrom(group, port).String())
	if err != nil {
		return nil, err
	}
	c := pc.(*net.UDPConn)
	gaddr := &net.UDPAddr{IP: group.AsSlice()}
	if group.Is6() {
		err = ipv6.NewPacketConn(c).JoinGroup(ifi, gaddr)
	} else {
		err = ipv4.NewPacketConn(c).JoinGroup(ifi, gaddr)
	}
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("join the group: %w", err)
	}
	return c, nil
}

// setupSocket sets the options of a listener socket before its bind.
func setupSocket(fd int, ifname string, is6 bool, readBuffer int) error {
	set := func(level, opt, v int, name string) error {
		if err := unix.SetsockoptInt(fd, level, opt, v); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		return nil
	}
	// Share group:port with the kernel's backup socket (sk_reuse).
	if err := set(unix.SOL_SOCKET, unix.SO_REUSEADDR, 1, "SO_REUSEADDR"); err != nil {
		return err
	}
	if err := unix.SetsockoptString(fd, unix.SOL_SOCKET, unix.SO_BINDTODEVICE, ifname); err != nil {
		return fmt.Errorf("SO_BINDTODEVICE %s: %w", ifname, err)
	}
	// Only the memberships of this socket (on the sync interface) count.
	// Kernels before 4.20 lack the IPv6 option; SO_BINDTODEVICE suffices.
	if is6 {
		_ = unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_ALL, 0)
	} else if err := set(unix.IPPROTO_IP, unix.IP_MULTICAST_ALL, 0, "IP_MULTICAST_ALL"); err != nil {
		return err
	}
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, readBuffer) != nil {
		if err := set(unix.SOL_SOCKET, unix.SO_RCVBUF, readBuffer, "SO_RCVBUF"); err != nil {
			return err
		}
	}
	// Receive times and the socket's drop count come with each datagram.
	if err := set(unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1, "SO_TIMESTAMPNS"); err != nil {
		return err
	}
	return set(unix.SOL_SOCKET, unix.SO_RXQ_OVFL, 1, "SO_RXQ_OVFL")
}

// Addrs are the group:port addresses the listener's sockets are bound to.
func (l *Listener) Addrs() []netip.AddrPort { return slices.Clone(l.addrs) }

// Close stops the listener: it closes the sockets and returns once the
// receive goroutines have ended (an OnEntry call in progress finishes
// first). Stats and FirstSeen keep working. Calls after the first return
// its result.
func (l *Listener) Close() error {
	l.closeOnce.Do(func() {
		l.closing.Store(true)
		close(l.done)
		var errs []error
		for _, c := range l.conns {
			errs = append(errs, c.Close())
		}
		l.wg.Wait()
		l.closeErr = errors.Join(errs...)
	})
	return l.closeErr
}

// oobLen fits the SCM_TIMESTAMPNS and SO_RXQ_OVFL control messages.
var oobLen = unix.CmsgSpace(16) + unix.CmsgSpace(4)

// receive reads and decodes the datagrams of socket i until Close.
func (l *Listener) receive(i int) {
	defer l.wg.Done()
	c := l.conns[i]
	// One byte more than any UDP payload, so MSG_TRUNC never fires in
	// practice; the decoder checks the size field against n anyway.
	buf := make([]byte, maxMessageLen+1)
	oob := make([]byte, oobLen)
	var m Message
	for {
		n, oobn, flags, from, err := c.ReadMsgUDPAddrPort(buf, oob)
		if err != nil {
			if l.closing.Load() {
				return
			}
			l.mu.Lock()
			l.st.readErrors++
			l.mu.Unlock()
			select {
			case <-l.done:
				return
			case <-time.After(readErrorPause):
			}
			continue
		}
		seen, drops := parseControl(oob[:oobn])
		if seen.IsZero() {
			seen = time.Now()
		}
		if flags&unix.MSG_TRUNC != 0 {
			m.Version, m.SyncID, m.Conns = 0, 0, m.Conns[:0]
			err = drop(DropOversized, "datagram over %d bytes", len(buf)-1)
		} else {
			err = l.dec.Decode(buf[:n], &m)
		}
		syncID := -1
		if n >= 2 {
			syncID = int(buf[1])
		}
		l.observe(i, seen, from, n, syncID, drops, &m, err)
		if l.cfg.OnEntry != nil {
			for j := range m.Conns {
				if m.Conns[j].Skip == DropNone {
					l.cfg.OnEntry(seen, m.Conns[j])
				}
			}
		}
	}
}

// parseControl returns the receive time (zero if absent) and the socket's
// drop count (-1 if absent: the kernel sends it only once it is nonzero).
func parseControl(oob []byte) (seen time.Time, drops int64) {
	drops = -1
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return seen, drops
	}
	for _, cm := range msgs {
		if cm.Header.Level != unix.SOL_SOCKET {
			continue
		}
		switch {
		case cm.Header.Type == unix.SCM_TIMESTAMPNS && len(cm.Data) >= 16:
			sec := int64(binary.NativeEndian.Uint64(cm.Data))
			nsec := int64(binary.NativeEndian.Uint64(cm.Data[8:]))
			seen = time.Unix(sec, nsec)
		case cm.Header.Type == unix.SO_RXQ_OVFL && len(cm.Data) >= 4:
			drops = int64(binary.NativeEndian.Uint32(cm.Data))
		}
	}
	return seen, drops
}

// observe counts one datagram on port i.
func (l *Listener) observe(i int, seen time.Time, from netip.AddrPort, n, syncID int, drops int64, m *Message, err error) {
	// The zone (a link-local sender's interface) is the sync interface.
	from = netip.AddrPortFrom(from.Addr().Unmap().WithZone(""), from.Port())
	l.mu.Lock()
	defer l.mu.Unlock()
	st := &l.st
	st.stats.observe(m, err, seen)
	st.bytes += uint64(n)
	if syncID >= 0 {
		st.bySyncID[syncID]++
	}
	st.lastSeen, st.lastSender = seen, from
	p := &st.ports[i]
	p.Messages++
	if drops >= 0 {
		p.SocketDrops = uint64(drops) // cumulative: the socket's sk_drops
	}
	addr := from.Addr()
	if s := st.senders[addr]; s != nil {
		s.Messages++
		s.LastSeen = seen
	} else if len(st.senders) < maxSenders {
		st.senders[addr] = &SenderStats{Addr: addr, Messages: 1, LastSeen: seen}
	} else {
		st.otherSenders++
	}
	for j := range m.Conns {
		c := &m.Conns[j]
		if c.Skip != DropNone {
			continue
		}
		st.byKind[EntryKind{Protocol: c.Protocol, Template: c.Template(), State: c.State}]++
		if st.firstSeen != nil {
			l.noteFirstSeen(c, seen)
		}
	}
}

// noteFirstSeen records c in the first-seen table (l.mu held).
func (l *Listener) noteFirstSeen(c *Conn, seen time.Time) {
	st := &l.st
	k := c.Key()
	ttl := c.Timeout
	if ttl <= 0 {
		ttl = v0Expiry
	}
	if e, ok := st.firstSeen[k]; ok {
		e.expires = seen.Add(ttl)
		st.firstSeen[k] = e
		return
	}
	if len(st.firstSeen) >= l.cfg.FirstSeenLimit && seen.Sub(st.lastPrune) >= pruneEvery {
		st.lastPrune = seen
		for k, e := range st.firstSeen {
			if e.expires.Before(seen) {
				delete(st.firstSeen, k)
			}
		}
	}
	if len(st.firstSeen) >= l.cfg.FirstSeenLimit {
		st.overflow++
		return
	}
	st.firstSeen[k] = firstSeen{first: seen, expires: seen.Add(ttl)}
}

// FirstSeen returns when the listener first decoded an applied entry for
// the connection k, for measuring sync lag (first seen on the backup minus
// established on the client). An entry leaves the table when the table is
// full and the entry has not been seen for the timeout it carried (15 min
// for v0), or on ResetFirstSeen.
func (l *Listener) FirstSeen(k ConnKey) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.st.firstSeen[k]
	return e.first, ok
}

// ResetFirstSeen empties the first-seen table and its overflow count, e.g.
// between benchmark runs.
func (l *Listener) ResetFirstSeen() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.st.firstSeen != nil {
		clear(l.st.firstSeen)
	}
	l.st.overflow = 0
}

// Stats returns a snapshot of the listener's counters.
func (l *Listener) Stats() ListenerStats {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := &l.st
	s := ListenerStats{
		Stats:             st.stats,
		Bytes:             st.bytes,
		LastSeen:          st.lastSeen,
		LastSender:        st.lastSender,
		BySyncID:          make(map[uint8]uint64),
		ByKind:            make(map[EntryKind]uint64, len(st.byKind)),
		OtherSenders:      st.otherSenders,
		Ports:             slices.Clone(st.ports),
		ReadErrors:        st.readErrors,
		FirstSeen:         len(st.firstSeen),
		FirstSeenOverflow: st.overflow,
	}
	for id, n := range st.bySyncID {
		if n > 0 {
			s.BySyncID[uint8(id)] = n
		}
	}
	for k, n := range st.byKind {
		s.ByKind[k] = n
	}
	for _, snd := range st.senders {
		s.Senders = append(s.Senders, *snd)
	}
	slices.SortFunc(s.Senders, func(a, b SenderStats) int { return a.Addr.Compare(b.Addr) })
	for _, p := range s.Ports {
		s.SocketDrops += p.SocketDrops
	}
	return s
}
