package heartbeat

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// VRRP's own transport: raw IP protocol 112 on one interface, one socket per
// interface and address family, shared by every instance there (the engine
// demultiplexes by VRID). Adverts are sent to the group (224.0.0.18,
// ff02::12) or to unicast peers, always with TTL / hop limit 255, and a
// packet that arrives with any other TTL was routed, so it did not come from
// this link and is dropped (RFC 5798 §5.1.1.3, §7.1).
//
// Two sockets per interface and family, as keepalived has (fd_in, fd_out):
// one receives (it is in Go's network poller and joins the group); the
// other only sends, and is never polled. A socket in the poller that sends
// wakes the poller with EPOLLOUT each time the kernel frees the sent packet,
// a useless wake-up per advert. The sending socket binds to nothing (the
// source address of each advert is set per packet with IP_PKTINFO /
// IPV6_PKTINFO) and has a filter that accepts no packet, so it queues
// nothing: a raw socket gets a copy of every VRRP packet, and an unread
// queue growing is keepalived's issue #839.

// VRRP protocol constants the socket needs (the codec is in internal/vrrp).
const (
	vrrpProto   = 112
	vrrpTTL     = 255
	vrrpMaxRecv = 1500
)

var (
	vrrpGroup4 = netip.MustParseAddr("224.0.0.18")
	vrrpGroup6 = netip.MustParseAddr("ff02::12")
)

// VRRPSocketConfig configures ListenVRRP.
type VRRPSocketConfig struct {
	Interface string
	IPv6      bool
	// Source is this node's address adverts are sent from: its primary IPv4
	// address on the interface, or (IPv6, RFC 5798 §5.1.2.1) its link-local
	// address, which is looked up when Source is not set.
	Source netip.Addr
	// Multicast joins the VRRP group; unicast-only instances leave it off so
	// that they do not hear other clusters' adverts.
	Multicast bool
	// OnPacket receives every packet with TTL 255, on the socket's reader
	// goroutine, in order. It must not block.
	OnPacket func(VRRPPacket)
	// Manual: no reader goroutine; the owner waits for Fd to be readable
	// and calls Drain (the engine does, to save a goroutine hop per
	// packet). OnPacket is not used then.
	Manual bool
	// RecvBuffer bounds the kernel's receive queue (default 256 KiB).
	RecvBuffer int
}

// VRRPPacket is one received VRRP packet (the IP payload).
type VRRPPacket struct {
	Interface string
	Src, Dst  netip.Addr
	Payload   []byte // owned by the receiver
	At        time.Time
}

// VRRPStats counts what the socket received, sent and dropped.
type VRRPStats struct {
	Received, Sent, SendErrors uint64
	BadTTL                     uint64 // TTL / hop limit not 255: routed, not from this link
	Own                        uint64 // our own packets (looped back)
	Malformed                  uint64 // truncated IP header, not protocol 112
}

// VRRPSocket is the raw VRRP socket of one interface and family.
type VRRPSocket struct {
	cfg     VRRPSocketConfig
	ifindex int
	conn    *net.IPConn // receives
	rc      syscall.RawConn
	oob     []byte // IP_PKTINFO / IPV6_PKTINFO of every send (read-only)

	recvFd int // Manual: the receiving (watched) descriptor
	// Manual: the quiet socket (routine.go), the routine adverts its
	// filter takes, and Drain's two queues (watched, quiet).
	quietFd  int
	routines map[any]routineAdvert
	// quietUsed: the quiet socket may hold packets (it has had a filter
	// that takes some since it was last found empty); when not, Drain
	// does not read it, and a master's turn costs one recvmmsg.
	quietUsed bool
	queues    [2]recvQueue
	// Manual: Drain's RawConn callback, made once (a closure per call
	// would be an allocation per advert), and its arguments.
	drainFd   func(fd uintptr)
	drainTo   func(VRRPPacket)
	drainMore bool

	sendMu sync.Mutex
	sendFd int // sends; -1 once closed (under sendMu)
	// IPv4: the sending socket has IP_HDRINCL, and each advert goes out
	// behind a header built here (under sendMu), as keepalived sends: the
	// kernel's own header path (fragmentation setup, a random IP ID per
	// packet) was about 3 % of an idle master's CPU samples.
	out  []byte
	ipID uint16
	// last: out is the whole packet the last Send sent, to lastTo, and
	// Resend may send it again (under sendMu).
	last   bool
	lastTo sockaddr
	done   chan struct{}
	once   sync.Once

	received, sent, sendErrors, badTTL, own, malformed atomic.Uint64
}

// ListenVRRP opens the socket and starts reading. It needs CAP_NET_RAW.
func ListenVRRP(cfg VRRPSocketConfig) (*VRRPSocket, error) {
	ifi, err := net.InterfaceByName(cfg.Interface)
	if err != nil {
		return nil, fmt.Errorf("vrrp socket: interface %q: %w", cfg.Interface, err)
	}
	if cfg.IPv6 && !cfg.Source.IsValid() {
		if cfg.Source, err = interfaceLinkLocal(ifi); err != nil {
			return nil, err
		}
	}
	if !cfg.Source.IsValid() || cfg.Source.Is4() == cfg.IPv6 {
		return nil, fmt.Errorf("vrrp socket on %s: source %v is not an %s address", cfg.Interface, cfg.Source, map[bool]string{false: "IPv4", true: "IPv6"}[cfg.IPv6])
	}
	if cfg.RecvBuffer == 0 {
		cfg.RecvBuffer = 256 << 10
	}
	network := "ip4:112"
	if cfg.IPv6 {
		network = "ip6:112"
	}
	conn, err := net.ListenIP(network, nil)
	if err != nil {
		return nil, fmt.Errorf("vrrp socket on %s: %w (raw sockets need CAP_NET_RAW)", cfg.Interface, err)
	}
	s := &VRRPSocket{cfg: cfg, ifindex: ifi.Index, conn: conn, sendFd: -1, recvFd: -1, quietFd: -1, done: make(chan struct{})}
	if cfg.Manual {
		for i := range s.queues {
			s.queues[i].batch = newRecvBatch(drainBatch, vrrpMaxRecv, 128)
			s.queues[i].pkts = make([]VRRPPacket, 0, drainBatch)
		}
		s.routines = map[any]routineAdvert{}
		s.drainFd = s.drain
	}
	if s.rc, err = conn.SyscallConn(); err == nil {
		var serr error
		err = s.rc.Control(func(fd uintptr) { serr = s.setOptions(int(fd), false) })
		err = errors.Join(err, serr)
	}
	if err == nil {
		s.sendFd, err = s.openSender()
	}
	if err == nil && cfg.Manual {
		if s.quietFd, err = s.openQuiet(); err == nil {
			s.queues[1].fd = uintptr(s.quietFd)
		}
	}
	if err != nil {
		conn.Close()
		if s.sendFd >= 0 {
			unix.Close(s.sendFd)
		}
		return nil, fmt.Errorf("vrrp socket on %s: %w", cfg.Interface, err)
	}
	if cfg.IPv6 {
		s.oob = unix.PktInfo6(&unix.Inet6Pktinfo{Addr: cfg.Source.As16(), Ifindex: uint32(s.ifindex)})
	} else {
		s.oob = unix.PktInfo4(&unix.Inet4Pktinfo{Ifindex: int32(s.ifindex), Spec_dst: cfg.Source.As4()})
	}
	if cfg.Manual {
		_ = s.rc.Control(func(fd uintptr) { s.recvFd = int(fd) })
		close(s.done)
	} else {
		go s.read()
	}
	return s, nil
}

const (
	drainMax   = 64 // packets per Drain
	drainBatch = 8  // packets per recvmmsg
)

// Fd is the receiving socket's descriptor (non-blocking), for a Manual
// socket's owner to wait on. It stays valid until Close.
func (s *VRRPSocket) Fd() int { return s.recvFd }

// Drain hands the packets queued on a Manual socket to fn, in order, and
// returns when none is left (at once if none is queued), or with more set
// after drainMax, so that a flood cannot hold its caller's other work back
// (the socket stays readable: the caller comes back). It reads with
// recvmmsg, so an idle backup's advert costs one call (recvmsg would need
// a second to learn that the queue is empty), and makes only raw,
// non-blocking system calls, for which a sleeping sysmon is not woken.
// A packet's Payload is Drain's buffer, valid only until fn returns.
func (s *VRRPSocket) Drain(fn func(VRRPPacket)) (more bool) {
	s.drainTo, s.drainMore = fn, false
	_ = s.rc.Control(s.drainFd)
	s.drainTo = nil
	return s.drainMore
}

func (s *VRRPSocket) drain(fd uintptr) {
	// Both queues in arrival order (routine.go). Packets read but not yet
	// delivered when the cap is reached stay for the next Drain (the
	// batch they alias is not read into before they are delivered).
	w, q := &s.queues[0], &s.queues[1]
	w.fd, w.dry, q.dry = fd, false, !s.quietUsed
	for range drainMax {
		w.fill(s)
		q.fill(s)
		next := w
		switch {
		case w.head == len(w.pkts) && q.head == len(q.pkts):
			if len(s.routines) == 0 {
				s.quietUsed = false // found empty with no filter taking any
			}
			return
		case w.head == len(w.pkts):
			next = q
		case q.head < len(q.pkts) && q.pkts[q.head].At.Before(w.pkts[w.head].At):
			next = q
		}
		pkt := next.pkts[next.head]
		next.head++
		s.received.Add(1)
		s.drainTo(pkt)
	}
	s.drainMore = true
}

func interfaceLinkLocal(ifi *net.Interface) (netip.Addr, error) {
	addrs, err := ifi.Addrs()
	if err != nil {
		return netip.Addr{}, fmt.Errorf("vrrp socket: addresses of %s: %w", ifi.Name, err)
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(ipn.IP); ok && ip.Is6() && ip.IsLinkLocalUnicast() {
				return ip, nil
			}
		}
	}
	return netip.Addr{}, fmt.Errorf("vrrp socket: %s has no IPv6 link-local address (VRRP over IPv6 sends from it)", ifi.Name)
}

// rawSocket opens a non-blocking raw VRRP socket of the socket's family;
// what names it in the error.
func (s *VRRPSocket) rawSocket(what string) (int, error) {
	family := unix.AF_INET
	if s.cfg.IPv6 {
		family = unix.AF_INET6
	}
	fd, err := unix.Socket(family, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, vrrpProto)
	if err != nil {
		return -1, fmt.Errorf("%s socket: %w (raw sockets need CAP_NET_RAW)", what, err)
	}
	return fd, nil
}

// openSender opens the sending socket (see the file comment).
func (s *VRRPSocket) openSender() (int, error) {
	fd, err := s.rawSocket("sending")
	if err != nil {
		return -1, err
	}
	if err := s.setOptions(fd, true); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("sending socket: %w", err)
	}
	return fd, nil
}

// dropAll is a socket filter that accepts no packet.
var dropAll = []unix.SockFilter{{Code: 0x06 /* BPF_RET|BPF_K */, K: 0}}

// setOptions sets up fd as the receiving or the sending socket.
func (s *VRRPSocket) setOptions(f int, send bool) error {
	var serr error
	set := func(what string, err error) {
		if err != nil && serr == nil {
			serr = fmt.Errorf("%s: %w", what, err)
		}
	}
	set("SO_BINDTODEVICE", unix.SetsockoptString(f, unix.SOL_SOCKET, unix.SO_BINDTODEVICE, s.cfg.Interface))
	if send {
		set("SO_ATTACH_FILTER", attachFilter(f, dropAll))
		set("SO_RCVBUF", unix.SetsockoptInt(f, unix.SOL_SOCKET, unix.SO_RCVBUF, 0)) // the kernel's minimum
		// Not even a copy of the group's adverts for the filter to drop
		// (best effort: kernels before 4.20 lack the IPv6 option).
		if s.cfg.IPv6 {
			_ = unix.SetsockoptInt(f, unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_ALL, 0)
		} else {
			_ = unix.SetsockoptInt(f, unix.IPPROTO_IP, unix.IP_MULTICAST_ALL, 0)
		}
	} else {
		set("SO_RCVBUF", unix.SetsockoptInt(f, unix.SOL_SOCKET, unix.SO_RCVBUF, s.cfg.RecvBuffer))
		if s.cfg.Manual {
			// Arrival times: Drain merges two queues by them, and the
			// engine reads routine adverts late (routine.go).
			set("SO_TIMESTAMPNS", unix.SetsockoptInt(f, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1))
		}
	}
	if !s.cfg.IPv6 {
		if send {
			// The header, TTL included, is built here (packet); the
			// multicast options below still route and loop.
			set("IP_HDRINCL", unix.SetsockoptInt(f, unix.IPPROTO_IP, unix.IP_HDRINCL, 1))
			set("IP_MULTICAST_LOOP", unix.SetsockoptInt(f, unix.IPPROTO_IP, unix.IP_MULTICAST_LOOP, 0))
			mreq := &unix.IPMreqn{Ifindex: int32(s.ifindex), Address: s.cfg.Source.As4()}
			set("IP_MULTICAST_IF", unix.SetsockoptIPMreqn(f, unix.IPPROTO_IP, unix.IP_MULTICAST_IF, mreq))
		} else if s.cfg.Multicast {
			join := &unix.IPMreqn{Multiaddr: vrrpGroup4.As4(), Ifindex: int32(s.ifindex)}
			set("IP_ADD_MEMBERSHIP", unix.SetsockoptIPMreqn(f, unix.IPPROTO_IP, unix.IP_ADD_MEMBERSHIP, join))
		}
		return serr
	}
	if send {
		// A link-local source is briefly tentative after the interface
		// comes up, and sendmsg with it in IPV6_PKTINFO fails (EINVAL);
		// FREEBIND lets the first adverts out.
		set("IPV6_FREEBIND", unix.SetsockoptInt(f, unix.IPPROTO_IPV6, unix.IPV6_FREEBIND, 1))
		set("IPV6_UNICAST_HOPS", unix.SetsockoptInt(f, unix.IPPROTO_IPV6, unix.IPV6_UNICAST_HOPS, vrrpTTL))
		set("IPV6_MULTICAST_HOPS", unix.SetsockoptInt(f, unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_HOPS, vrrpTTL))
		set("IPV6_MULTICAST_LOOP", unix.SetsockoptInt(f, unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_LOOP, 0))
		set("IPV6_MULTICAST_IF", unix.SetsockoptInt(f, unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_IF, s.ifindex))
		return serr
	}
	set("IPV6_RECVHOPLIMIT", unix.SetsockoptInt(f, unix.IPPROTO_IPV6, unix.IPV6_RECVHOPLIMIT, 1))
	set("IPV6_RECVPKTINFO", unix.SetsockoptInt(f, unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1))
	if s.cfg.Multicast {
		join := &unix.IPv6Mreq{Multiaddr: vrrpGroup6.As16(), Interface: uint32(s.ifindex)}
		set("IPV6_JOIN_GROUP", unix.SetsockoptIPv6Mreq(f, unix.IPPROTO_IPV6, unix.IPV6_JOIN_GROUP, join))
	}
	return serr
}

// Group is the VRRP multicast group of the socket's family.
func (s *VRRPSocket) Group() netip.Addr {
	if s.cfg.IPv6 {
		return vrrpGroup6
	}
	return vrrpGroup4
}

// Source is the address adverts are sent from (the checksum's pseudo-header
// needs it).
func (s *VRRPSocket) Source() netip.Addr { return s.cfg.Source }

// Interface is the socket's interface name.
func (s *VRRPSocket) Interface() string { return s.cfg.Interface }

// sendWait bounds how long Send waits for room in a full socket buffer (a
// stuck device queue): a late advert is worth little, and the engine waits.
const sendWait = 10 * time.Millisecond

// Send sends one VRRP payload (an encoded advert, checksum included) to dst:
// the group or a unicast peer. It allocates nothing and makes one raw
// system call (see rawio.go).
func (s *VRRPSocket) Send(payload []byte, dst netip.Addr) error {
	if !dst.IsValid() || dst.Is4() == s.cfg.IPv6 {
		return fmt.Errorf("vrrp socket on %s: cannot send to %v: not an address of the socket's family", s.cfg.Interface, dst)
	}
	to := makeSockaddr(netip.AddrPortFrom(dst.WithZone(""), 0))
	if dst.Is6() && (dst.IsLinkLocalMulticast() || dst.IsLinkLocalUnicast()) {
		// The zone is the socket's interface index, never a name: a name
		// would be resolved in the calling thread's network namespace,
		// which need not be the socket's (the name may even exist there
		// as another interface).
		to.raw.Scope_id = uint32(s.ifindex)
	}
	s.sendMu.Lock()
	var err error
	if s.sendFd < 0 {
		err = net.ErrClosed
	} else {
		s.lastTo, s.last = to, true
		if errno := s.sendLocked(s.packet(payload, dst), &s.lastTo); errno != 0 {
			err = os.NewSyscallError("sendmsg", errno)
		}
	}
	s.sendMu.Unlock()
	if err != nil {
		s.sendErrors.Add(1)
		return fmt.Errorf("vrrp send on %s to %s: %w", s.cfg.Interface, dst, err)
	}
	s.sent.Add(1)
	return nil
}

// Resend sends the packet of the last Send again, to the same destination
// (IPv4: with the next IP ID). It is an idle master's advert when nothing
// in it has changed, without building it again: the engine's advert pump
// calls it every advert interval, and it touches as little memory as it
// can (on a virtual machine woken every 10 ms, each cold page it touches
// costs as much as a system call). It fails if nothing was sent yet.
func (s *VRRPSocket) Resend() error {
	s.sendMu.Lock()
	var err error
	switch {
	case s.sendFd < 0:
		err = net.ErrClosed
	case !s.last:
		err = errors.New("nothing sent yet")
	default:
		if !s.cfg.IPv6 {
			binary.BigEndian.PutUint16(s.out[4:6], s.nextID())
		}
		if errno := s.sendLocked(s.out, &s.lastTo); errno != 0 {
			err = os.NewSyscallError("sendmsg", errno)
		}
	}
	s.sendMu.Unlock()
	if err != nil {
		s.sendErrors.Add(1)
		return fmt.Errorf("vrrp resend on %s: %w", s.cfg.Interface, err)
	}
	s.sent.Add(1)
	return nil
}

// nextID is the IPv4 header's next ID. Under sendMu.
func (s *VRRPSocket) nextID() uint16 {
	s.ipID++
	if s.ipID == 0 {
		s.ipID = 1 // 0 would have the kernel choose one
	}
	return s.ipID
}

// packet is what to send for payload, built in out for Resend: a copy of
// it (IPv6), or it behind an IPv4 header (TOS internetwork control, TTL
// 255, no fragment flags; the kernel fills in the length and the header
// checksum). Under sendMu.
func (s *VRRPSocket) packet(payload []byte, dst netip.Addr) []byte {
	if s.cfg.IPv6 {
		s.out = append(s.out[:0], payload...)
		return s.out
	}
	src, d := s.cfg.Source.As4(), dst.As4()
	h := s.out[:0]
	h = append(h, 0x45, 0xc0, 0, 0)
	h = binary.BigEndian.AppendUint16(h, s.nextID())
	h = append(h, 0, 0, vrrpTTL, vrrpProto, 0, 0)
	h = append(h, src[:]...)
	h = append(h, d[:]...)
	s.out = append(h, payload...)
	return s.out
}

func (s *VRRPSocket) sendLocked(payload []byte, to *sockaddr) syscall.Errno {
	deadline := time.Time{}
	for {
		errno := rawSendmsg(uintptr(s.sendFd), payload, s.oob, to)
		switch errno {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
		default:
			return errno
		}
		// Rare: wait for room, within a bound.
		if deadline.IsZero() {
			deadline = time.Now().Add(sendWait)
		}
		left := time.Until(deadline)
		if left <= 0 {
			return errno
		}
		pfd := []unix.PollFd{{Fd: int32(s.sendFd), Events: unix.POLLOUT}}
		if _, err := unix.Poll(pfd, int(left/time.Millisecond)+1); err != nil && err != unix.EINTR {
			return errno
		}
	}
}

func (s *VRRPSocket) read() {
	defer close(s.done)
	buf := make([]byte, vrrpMaxRecv)
	oob := make([]byte, 128)
	var from sockaddr
	var n, oobn int
	var errno syscall.Errno
	recv := func(fd uintptr) bool {
		for {
			n, oobn, _, errno = rawRecvmsg(fd, buf, oob, &from)
			if errno != unix.EINTR {
				return errno != unix.EAGAIN
			}
		}
	}
	for {
		if err := s.rc.Read(recv); err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if errno != 0 {
			continue // ENOBUFS and the like: the next read may work
		}
		at := time.Now()
		pkt, ok := s.decode(buf[:n], oob[:oobn], from.addrPort().Addr())
		if !ok {
			continue
		}
		pkt.Payload = bytes.Clone(pkt.Payload) // buf is read into again
		pkt.At = at
		s.received.Add(1)
		if s.cfg.OnPacket != nil {
			s.cfg.OnPacket(pkt)
		}
	}
}

// decode checks TTL and provenance and extracts the payload. IPv4 raw
// sockets deliver the IP header; IPv6 ones deliver hop limit and
// destination as ancillary data (from is the source recvmsg reported).
// The payload is a part of b.
func (s *VRRPSocket) decode(b, oob []byte, from netip.Addr) (VRRPPacket, bool) {
	pkt := VRRPPacket{Interface: s.cfg.Interface}
	var ttl int
	if !s.cfg.IPv6 {
		if len(b) < 20 || b[0]>>4 != 4 {
			s.malformed.Add(1)
			return pkt, false
		}
		ihl := int(b[0]&0x0f) * 4
		if ihl < 20 || len(b) < ihl || b[9] != vrrpProto {
			s.malformed.Add(1)
			return pkt, false
		}
		ttl = int(b[8])
		pkt.Src = netip.AddrFrom4([4]byte(b[12:16]))
		pkt.Dst = netip.AddrFrom4([4]byte(b[16:20]))
		pkt.Payload = b[ihl:]
	} else {
		ttl = -1
		for c := cmsgs(oob); ; {
			level, typ, data, rest, ok := c.next()
			if !ok {
				break
			}
			switch {
			case level == unix.IPPROTO_IPV6 && typ == unix.IPV6_HOPLIMIT && len(data) >= 4:
				ttl = int(binary.NativeEndian.Uint32(data))
			case level == unix.IPPROTO_IPV6 && typ == unix.IPV6_PKTINFO && len(data) >= unix.SizeofInet6Pktinfo:
				pkt.Dst = netip.AddrFrom16([16]byte(data[:16]))
			}
			c = rest
		}
		pkt.Src = from
		pkt.Payload = b
		if !pkt.Dst.IsValid() {
			s.malformed.Add(1)
			return pkt, false
		}
	}
	if pkt.Src == s.cfg.Source {
		s.own.Add(1)
		return pkt, false
	}
	if ttl != vrrpTTL {
		s.badTTL.Add(1)
		return pkt, false
	}
	return pkt, true
}

// Stats returns the counters.
func (s *VRRPSocket) Stats() VRRPStats {
	return VRRPStats{Received: s.received.Load(), Sent: s.sent.Load(), SendErrors: s.sendErrors.Load(),
		BadTTL: s.badTTL.Load(), Own: s.own.Load(), Malformed: s.malformed.Load()}
}

// Close stops reading and closes the socket; it waits for the reader.
func (s *VRRPSocket) Close() error {
	var err error
	s.once.Do(func() {
		err = s.conn.Close()
		<-s.done
		s.sendMu.Lock()
		if s.sendFd >= 0 {
			err = errors.Join(err, unix.Close(s.sendFd))
			s.sendFd = -1
		}
		s.sendMu.Unlock()
		// After conn's Close, which waits for a Drain in progress.
		if s.quietFd >= 0 {
			err = errors.Join(err, unix.Close(s.quietFd))
			s.quietFd = -1
		}
	})
	return err
}
