package heartbeat

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
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
// One socket sends and receives: the source address of each advert is set
// per packet with IP_PKTINFO / IPV6_PKTINFO. (A second socket bound to the
// source would also queue every unicast advert to us, unread; keepalived's
// issue #839 is such a queue growing.)

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
	conn    *net.IPConn
	done    chan struct{}
	once    sync.Once

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
	s := &VRRPSocket{cfg: cfg, ifindex: ifi.Index, conn: conn, done: make(chan struct{})}
	if err := s.setOptions(); err != nil {
		conn.Close()
		return nil, fmt.Errorf("vrrp socket on %s: %w", cfg.Interface, err)
	}
	go s.read()
	return s, nil
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

func (s *VRRPSocket) setOptions() error {
	raw, err := s.conn.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	set := func(what string, err error) {
		if err != nil && serr == nil {
			serr = fmt.Errorf("%s: %w", what, err)
		}
	}
	err = raw.Control(func(fd uintptr) {
		f := int(fd)
		set("SO_BINDTODEVICE", unix.SetsockoptString(f, unix.SOL_SOCKET, unix.SO_BINDTODEVICE, s.cfg.Interface))
		set("SO_RCVBUF", unix.SetsockoptInt(f, unix.SOL_SOCKET, unix.SO_RCVBUF, s.cfg.RecvBuffer))
		if !s.cfg.IPv6 {
			set("IP_TTL", unix.SetsockoptInt(f, unix.IPPROTO_IP, unix.IP_TTL, vrrpTTL))
			set("IP_MULTICAST_TTL", unix.SetsockoptInt(f, unix.IPPROTO_IP, unix.IP_MULTICAST_TTL, vrrpTTL))
			set("IP_MULTICAST_LOOP", unix.SetsockoptInt(f, unix.IPPROTO_IP, unix.IP_MULTICAST_LOOP, 0))
			mreq := &unix.IPMreqn{Ifindex: int32(s.ifindex), Address: s.cfg.Source.As4()}
			set("IP_MULTICAST_IF", unix.SetsockoptIPMreqn(f, unix.IPPROTO_IP, unix.IP_MULTICAST_IF, mreq))
			if s.cfg.Multicast {
				join := &unix.IPMreqn{Multiaddr: vrrpGroup4.As4(), Ifindex: int32(s.ifindex)}
				set("IP_ADD_MEMBERSHIP", unix.SetsockoptIPMreqn(f, unix.IPPROTO_IP, unix.IP_ADD_MEMBERSHIP, join))
			}
			return
		}
		// A link-local source is briefly tentative after the interface comes
		// up, and sendmsg with it in IPV6_PKTINFO fails (EINVAL); FREEBIND
		// lets the first adverts out.
		set("IPV6_FREEBIND", unix.SetsockoptInt(f, unix.IPPROTO_IPV6, unix.IPV6_FREEBIND, 1))
		set("IPV6_UNICAST_HOPS", unix.SetsockoptInt(f, unix.IPPROTO_IPV6, unix.IPV6_UNICAST_HOPS, vrrpTTL))
		set("IPV6_MULTICAST_HOPS", unix.SetsockoptInt(f, unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_HOPS, vrrpTTL))
		set("IPV6_MULTICAST_LOOP", unix.SetsockoptInt(f, unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_LOOP, 0))
		set("IPV6_MULTICAST_IF", unix.SetsockoptInt(f, unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_IF, s.ifindex))
		set("IPV6_RECVHOPLIMIT", unix.SetsockoptInt(f, unix.IPPROTO_IPV6, unix.IPV6_RECVHOPLIMIT, 1))
		set("IPV6_RECVPKTINFO", unix.SetsockoptInt(f, unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1))
		if s.cfg.Multicast {
			join := &unix.IPv6Mreq{Multiaddr: vrrpGroup6.As16(), Interface: uint32(s.ifindex)}
			set("IPV6_JOIN_GROUP", unix.SetsockoptIPv6Mreq(f, unix.IPPROTO_IPV6, unix.IPV6_JOIN_GROUP, join))
		}
	})
	if err != nil {
		return err
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

// Send sends one VRRP payload (an encoded advert, checksum included) to dst:
// the group or a unicast peer.
func (s *VRRPSocket) Send(payload []byte, dst netip.Addr) error {
	var oob []byte
	if s.cfg.IPv6 {
		oob = unix.PktInfo6(&unix.Inet6Pktinfo{Addr: s.cfg.Source.As16(), Ifindex: uint32(s.ifindex)})
	} else {
		oob = unix.PktInfo4(&unix.Inet4Pktinfo{Ifindex: int32(s.ifindex), Spec_dst: s.cfg.Source.As4()})
	}
	to := &net.IPAddr{IP: dst.AsSlice()}
	if dst.Is6() && (dst.IsLinkLocalMulticast() || dst.IsLinkLocalUnicast()) {
		// The zone is the index, not the name: Go resolves a zone name in
		// the calling thread's network namespace, which need not be the
		// socket's (the name may even exist there as another interface).
		to.Zone = strconv.Itoa(s.ifindex)
	}
	if _, _, err := s.conn.WriteMsgIP(payload, oob, to); err != nil {
		s.sendErrors.Add(1)
		return fmt.Errorf("vrrp send on %s to %s: %w", s.cfg.Interface, dst, err)
	}
	s.sent.Add(1)
	return nil
}

func (s *VRRPSocket) read() {
	defer close(s.done)
	buf := make([]byte, vrrpMaxRecv)
	oob := make([]byte, 128)
	for {
		n, oobn, _, from, err := s.conn.ReadMsgIP(buf, oob)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue // ENOBUFS and the like: the next read may work
		}
		at := time.Now()
		pkt, ok := s.decode(buf[:n], oob[:oobn], from)
		if !ok {
			continue
		}
		pkt.At = at
		s.received.Add(1)
		if s.cfg.OnPacket != nil {
			s.cfg.OnPacket(pkt)
		}
	}
}

// decode checks TTL and provenance and extracts the payload. IPv4 raw
// sockets deliver the IP header (ReadMsgIP does not strip it); IPv6 ones
// deliver hop limit and destination as ancillary data.
func (s *VRRPSocket) decode(b, oob []byte, from *net.IPAddr) (VRRPPacket, bool) {
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
		pkt.Payload = append([]byte(nil), b[ihl:]...)
	} else {
		ttl = -1
		msgs, err := unix.ParseSocketControlMessage(oob)
		if err != nil {
			s.malformed.Add(1)
			return pkt, false
		}
		for _, m := range msgs {
			switch {
			case m.Header.Level == unix.IPPROTO_IPV6 && m.Header.Type == unix.IPV6_HOPLIMIT && len(m.Data) >= 4:
				ttl = int(binary.NativeEndian.Uint32(m.Data))
			case m.Header.Level == unix.IPPROTO_IPV6 && m.Header.Type == unix.IPV6_PKTINFO && len(m.Data) >= unix.SizeofInet6Pktinfo:
				pkt.Dst = netip.AddrFrom16([16]byte(m.Data[:16]))
			}
		}
		src, _ := netip.AddrFromSlice(from.IP)
		pkt.Src = src.WithZone("")
		pkt.Payload = append([]byte(nil), b...)
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
	})
	return err
}
