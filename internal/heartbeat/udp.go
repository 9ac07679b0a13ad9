package heartbeat

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultUDPPort is IANA's "ha-cluster" port, as in the config.
const DefaultUDPPort = 694

// gtsmTTL is the TTL / hop limit frames are sent with and must arrive with
// (RFC 5082): a packet that crossed a router has less, and cannot be made
// to have more.
const gtsmTTL = 255

// UDPConfig configures a UDP link.
type UDPConfig struct {
	// Name is the link's name (the config's [[link]] name).
	Name string
	// NodeID is this node's id, sent in every frame (1..64 bytes).
	NodeID string
	// PeerID, if set, is the only sender id accepted.
	PeerID string
	// Local is this node's address on the link's interface; the socket is
	// bound to it. An IPv6 link-local address needs its zone ("fe80::1%eth1").
	Local netip.Addr
	// Peer is the other node's address, of the same family. Frames from
	// any other address or port are dropped (DropWrongSource).
	Peer netip.Addr
	// Port is used on both ends (0 means DefaultUDPPort).
	Port int
	// Key is the shared HMAC key (LoadKey reads a key file), ≥ 16 bytes.
	Key []byte
	// Domain separates links and clusters that share a key; both ends
	// must use the same. "" means Name. The daemon passes
	// "<cluster>/<link>".
	Domain string
	// Interval is the heartbeat interval the peer sends at (1ms..10s).
	Interval time.Duration
	// Misses: the link is down after DownAfter(Interval, Misses) without a
	// valid frame. 0 means DefaultMisses.
	Misses int
	// EpochTolerance and MaxClockSkew: see OpenerConfig.
	EpochTolerance time.Duration
	MaxClockSkew   time.Duration
	// OnReceive gets each verified payload (see the package doc on
	// callbacks). Nil discards payloads (health is still tracked).
	OnReceive func(Received)
	// OnHealth is called on every up/down transition, with the new state.
	OnHealth func(LinkHealth)
	// OnQuiet, if set, is called once per silence when an up link has
	// heard nothing for QuietAfter(Interval): before it is down.
	OnQuiet func(LinkHealth)
}

// UDPLink is a heartbeat link over a UDP socket between two node
// addresses. See the package documentation for its security properties.
type UDPLink struct {
	c      common
	local  netip.AddrPort
	peer   netip.AddrPort
	conn   *net.UDPConn
	rc     syscall.RawConn
	to     sockaddr // peer, in the kernel's layout
	sealer *Sealer
	opener *Opener
	stats  counters
	tr     *tracker

	sendMu    sync.Mutex
	sendBuf   []byte
	sendTO    time.Duration
	sendFrame []byte             // under sendMu: the frame writeFn sends
	sendErrno syscall.Errno      // under sendMu: writeFn's result
	writeFn   func(uintptr) bool // made once: a closure per Send would be an allocation

	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
	wg        sync.WaitGroup
}

var _ Link = (*UDPLink)(nil)

// NewUDPLink binds the socket and starts the receive and watchdog
// goroutines. The link starts down.
func NewUDPLink(cfg UDPConfig) (*UDPLink, error) {
	c := common{
		name: cfg.Name, nodeID: cfg.NodeID, peerID: cfg.PeerID, domain: cfg.Domain,
		interval: cfg.Interval, misses: cfg.Misses,
		epochTolerance: cfg.EpochTolerance, maxSkew: cfg.MaxClockSkew,
		onReceive: cfg.OnReceive, onHealth: cfg.OnHealth, onQuiet: cfg.OnQuiet,
	}
	if err := checkCommon("udp", &c); err != nil {
		return nil, err
	}
	if err := checkKey(cfg.Key); err != nil {
		return nil, fmt.Errorf("heartbeat: udp link %s: %w", c.name, err)
	}
	port := cfg.Port
	if port == 0 {
		port = DefaultUDPPort
	}
	if port < 1 || port > 65535 {
		return nil, fmt.Errorf("heartbeat: udp link %s: port %d out of range", c.name, port)
	}
	local, peer := cfg.Local.Unmap(), cfg.Peer.Unmap()
	if !local.IsValid() || !peer.IsValid() || local.IsUnspecified() || peer.IsUnspecified() {
		return nil, fmt.Errorf("heartbeat: udp link %s: need a local and a peer unicast address (have %v, %v)", c.name, cfg.Local, cfg.Peer)
	}
	if local.Is4() != peer.Is4() {
		return nil, fmt.Errorf("heartbeat: udp link %s: local %v and peer %v are of different families", c.name, local, peer)
	}
	if peer.IsMulticast() || local.IsMulticast() {
		return nil, fmt.Errorf("heartbeat: udp link %s: multicast address", c.name)
	}
	if peer.Zone() == "" && local.Zone() != "" && peer.IsLinkLocalUnicast() {
		peer = peer.WithZone(local.Zone())
	}
	if z := peer.Zone(); z != "" {
		// Resolve the zone now, in the caller's network namespace: Go's
		// zone cache resolves names at send time, in whatever namespace
		// the sending thread is in.
		if _, err := strconv.Atoi(z); err != nil {
			ifi, err := net.InterfaceByName(z)
			if err != nil {
				return nil, fmt.Errorf("heartbeat: udp link %s: zone of %v: %w", c.name, peer, err)
			}
			peer = peer.WithZone(strconv.Itoa(ifi.Index))
		}
	}
	if local.WithZone("") == peer.WithZone("") {
		return nil, fmt.Errorf("heartbeat: udp link %s: local and peer are both %v", c.name, local)
	}

	l := &UDPLink{
		c:       c,
		local:   netip.AddrPortFrom(local, uint16(port)),
		peer:    netip.AddrPortFrom(peer, uint16(port)),
		sendBuf: make([]byte, 0, MaxFrameSize),
		sendTO:  max(c.interval, 20*time.Millisecond),
	}
	var err error
	if l.sealer, err = NewSealer(cfg.Key, c.domain, c.nodeID); err != nil {
		return nil, err
	}
	if l.opener, err = NewOpener(OpenerConfig{
		Key: cfg.Key, Domain: c.domain, Self: c.nodeID, Peer: c.peerID,
		EpochTolerance: c.epochTolerance, MaxClockSkew: c.maxSkew,
	}); err != nil {
		return nil, err
	}
	network := "udp6"
	if local.Is4() {
		network = "udp4"
	}
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			if network == "udp4" {
				serr = errors.Join(
					unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_TTL, gtsmTTL),
					unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_RECVTTL, 1))
			} else {
				serr = errors.Join(
					unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_UNICAST_HOPS, gtsmTTL),
					unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_RECVHOPLIMIT, 1))
			}
		})
		return errors.Join(err, serr)
	}}
	pc, err := lc.ListenPacket(context.Background(), network, l.local.String())
	if err != nil {
		return nil, fmt.Errorf("heartbeat: udp link %s: %w", c.name, err)
	}
	l.conn = pc.(*net.UDPConn)
	if l.rc, err = l.conn.SyscallConn(); err != nil {
		l.conn.Close()
		return nil, fmt.Errorf("heartbeat: udp link %s: %w", c.name, err)
	}
	l.to = makeSockaddr(l.peer)
	l.writeFn = func(fd uintptr) bool {
		for {
			l.sendErrno = rawSendmsg(fd, l.sendFrame, nil, &l.to)
			if l.sendErrno != unix.EINTR {
				return true // EAGAIN included: Send decides whether to wait
			}
		}
	}
	l.tr = newTracker("udp", &l.c, &l.stats)
	l.wg.Add(1)
	go func() { defer l.wg.Done(); l.receive() }()
	return l, nil
}

// Name is the link's name.
func (l *UDPLink) Name() string { return l.c.name }

// LocalAddr and PeerAddr are the two endpoints.
func (l *UDPLink) LocalAddr() netip.AddrPort { return l.local }

// PeerAddr is the peer's endpoint.
func (l *UDPLink) PeerAddr() netip.AddrPort { return l.peer }

// Epoch is this link's boot epoch (a new one per NewUDPLink).
func (l *UDPLink) Epoch() uint64 { return l.sealer.Epoch() }

// DownAfter is how long the link stays up without valid frames.
func (l *UDPLink) DownAfter() time.Duration { return l.tr.downAfter }

// Health returns a snapshot.
func (l *UDPLink) Health() LinkHealth { return l.tr.snapshot() }

// Send seals payload into a frame and sends it to the peer as one datagram.
// Frames leave in the order of their sequence numbers. It allocates nothing
// and normally makes one raw system call (see rawio.go); only when the
// socket's buffer is full does it wait, up to a bound, for room.
func (l *UDPLink) Send(payload []byte) error {
	if l.closed.Load() {
		return ErrClosed
	}
	l.sendMu.Lock()
	defer l.sendMu.Unlock()
	frame, err := l.sealer.Seal(l.sendBuf[:0], payload)
	if err != nil {
		return err
	}
	l.sendFrame = frame
	err = l.rc.Write(l.writeFn)
	l.sendFrame = nil
	switch errno := l.sendErrno; {
	case err != nil:
	case errno == unix.EAGAIN:
		// The socket buffer is full: wait for room, but not for long.
		_ = l.conn.SetWriteDeadline(time.Now().Add(l.sendTO))
		_, err = l.conn.WriteToUDPAddrPort(frame, l.peer)
		_ = l.conn.SetWriteDeadline(time.Time{})
	case errno != 0:
		err = os.NewSyscallError("sendmsg", errno)
	}
	if err != nil {
		if errors.Is(err, net.ErrClosed) {
			return ErrClosed
		}
		l.stats.txErrors.Add(1)
		l.tr.setErr(err)
		return fmt.Errorf("heartbeat: udp link %s: %w", l.c.name, err)
	}
	l.stats.txFrames.Add(1)
	l.stats.txBytes.Add(uint64(len(payload)))
	return nil
}

// Close stops the goroutines and closes the socket.
func (l *UDPLink) Close() error {
	l.closeOnce.Do(func() {
		l.closed.Store(true)
		l.closeErr = l.conn.Close()
		l.tr.stop()
		l.wg.Wait()
	})
	return l.closeErr
}

func (l *UDPLink) receive() {
	buf := make([]byte, MaxFrameSize)
	oob := make([]byte, 2*unix.CmsgSpace(4))
	var from sockaddr
	var n, oobn, flags int
	var errno syscall.Errno
	recv := func(fd uintptr) bool {
		for {
			n, oobn, flags, errno = rawRecvmsg(fd, buf, oob, &from)
			if errno != unix.EINTR {
				return errno != unix.EAGAIN
			}
		}
	}
	peer := l.peer.Addr().WithZone("")
	for {
		err := l.rc.Read(recv)
		now := time.Now()
		if err == nil && errno != 0 {
			err = os.NewSyscallError("recvmsg", errno)
		}
		if err != nil {
			if errors.Is(err, net.ErrClosed) || l.closed.Load() {
				return
			}
			l.tr.setErr(err)
			select { // do not spin on a persistent error
			case <-l.tr.done:
				return
			case <-time.After(10 * time.Millisecond):
			}
			continue
		}
		if src := from.addrPort(); src.Addr().Unmap() != peer || src.Port() != l.peer.Port() {
			l.stats.drop(DropWrongSource)
			continue
		}
		if ttl, ok := receivedTTL(oob[:oobn]); !ok || ttl != gtsmTTL {
			l.stats.drop(DropBadTTL)
			continue
		}
		if flags&unix.MSG_TRUNC != 0 {
			l.stats.drop(DropOversized)
			continue
		}
		f, r := l.opener.Open(buf[:n])
		if r != DropNone {
			l.stats.drop(r)
			continue
		}
		l.stats.rxFrames.Add(1)
		l.stats.rxBytes.Add(uint64(len(f.Payload)))
		l.tr.valid(now, 0)
		if l.c.onReceive != nil {
			l.c.onReceive(Received{
				Link: l.c.name, From: l.fromID(f.From), Payload: bytes.Clone(f.Payload),
				At: now, SentAt: time.Unix(0, f.SentAt), Epoch: f.Epoch, Seq: f.Seq,
			})
		}
	}
}

// fromID is the sender id as a string, without an allocation when it is
// the configured peer's (the only one accepted then).
func (l *UDPLink) fromID(id []byte) string {
	if string(id) == l.c.peerID {
		return l.c.peerID
	}
	return string(id)
}

// receivedTTL finds the IPv4 TTL or IPv6 hop limit among the control
// messages of one datagram.
func receivedTTL(oob []byte) (int, bool) {
	for c := cmsgs(oob); ; {
		level, typ, data, rest, ok := c.next()
		if !ok {
			return 0, false
		}
		if (level == unix.IPPROTO_IP && typ == unix.IP_TTL) ||
			(level == unix.IPPROTO_IPV6 && typ == unix.IPV6_HOPLIMIT) {
			if len(data) >= 4 {
				return int(int32(binary.NativeEndian.Uint32(data))), true
			}
		}
		c = rest
	}
}
