package healthcheck

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// ICMPSpec checks that Addr answers an ICMP (or ICMPv6) echo request.
type ICMPSpec struct {
	Addr netip.Addr
}

// Key implements CheckSpec.
func (s ICMPSpec) Key() string { return "icmp|" + s.Addr.String() }

// NewChecker implements CheckSpec. env.Pinger must be set.
func (s ICMPSpec) NewChecker(env *Env) (Checker, error) {
	if !s.Addr.IsValid() {
		return nil, errors.New("healthcheck: icmp check: no address")
	}
	if env == nil || env.Pinger == nil {
		return nil, errors.New("healthcheck: icmp check: no Pinger")
	}
	return &icmpChecker{p: env.Pinger, addr: s.Addr.Unmap()}, nil
}

type icmpChecker struct {
	p    *Pinger
	addr netip.Addr
}

func (c *icmpChecker) Check(ctx context.Context) Result {
	start := time.Now()
	rtt, err := c.p.Ping(ctx, c.addr)
	if err != nil {
		return failed(start, err.Error())
	}
	return Result{OK: true, Detail: "echo reply in " + rtt.Round(10*time.Microsecond).String(), Duration: time.Since(start)}
}

// Pinger sends ICMP echo requests for every ICMP probe of the process over
// one raw socket per address family (CAP_NET_RAW; the unprivileged "ping"
// sockets are disabled on many hosts), opened on first use, and matches
// replies to requests by (identifier, sequence) — a 32-bit counter split in
// two — and by a random per-Pinger cookie in the payload, so that thousands
// of concurrent probes share one socket and echo replies meant for other
// programs (which a raw socket sees too) are ignored. The sockets accept
// only echo replies (ICMP_FILTER / ICMP6_FILTER), so the reader goroutine
// does not wake for the rest of the host's ICMP traffic.
//
// Its methods are safe for concurrent use.
type Pinger struct {
	cookie [8]byte
	idBase uint16
	next   atomic.Uint32

	mu     sync.Mutex
	closed bool
	v4, v6 *pingSock
	opened int // sockets opened, for tests

	unmatched atomic.Uint64
}

type pingSock struct {
	conn *net.IPConn
	v6   bool
	done chan struct{}

	mu      sync.Mutex
	waiters map[uint32]*pingWaiter
}

type pingWaiter struct {
	to netip.Addr
	ch chan time.Time // buffered 1: the reply's arrival time
}

// NewPinger returns a Pinger; it opens no socket until needed (Open or the
// first Ping of each family).
func NewPinger() *Pinger {
	p := &Pinger{}
	var b [10]byte
	_, _ = rand.Read(b[:])
	copy(p.cookie[:], b[:8])
	p.idBase = binary.BigEndian.Uint16(b[8:])
	return p
}

// Open opens the socket of one family now, if it is not open yet, in the
// calling thread's network namespace (a socket stays in the namespace it
// was created in). Without Open, the first Ping opens it.
func (p *Pinger) Open(v6 bool) error {
	_, err := p.sock(v6)
	return err
}

// Sockets is how many sockets the Pinger has opened so far.
func (p *Pinger) Sockets() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.opened
}

// Unmatched counts echo replies received that matched no pending request
// (late replies after a timeout, or other programs' pings).
func (p *Pinger) Unmatched() uint64 { return p.unmatched.Load() }

func (p *Pinger) sock(v6 bool) (*pingSock, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, ErrClosed
	}
	sp := &p.v4
	if v6 {
		sp = &p.v6
	}
	if *sp != nil {
		return *sp, nil
	}
	s, err := openPingSock(v6)
	if err != nil {
		return nil, err
	}
	p.opened++
	*sp = s
	go s.read(p)
	return s, nil
}

func openPingSock(v6 bool) (*pingSock, error) {
	network, laddr := "ip4:icmp", &net.IPAddr{IP: net.IPv4zero}
	if v6 {
		network, laddr = "ip6:ipv6-icmp", &net.IPAddr{IP: net.IPv6unspecified}
	}
	conn, err := net.ListenIP(network, laddr)
	if err != nil {
		return nil, fmt.Errorf("icmp: opening a raw %s socket (needs CAP_NET_RAW): %w", network, err)
	}
	if v6 {
		var f ipv6.ICMPFilter
		f.SetAll(true)
		f.Accept(ipv6.ICMPTypeEchoReply)
		err = ipv6.NewPacketConn(conn).SetICMPFilter(&f)
	} else {
		var f ipv4.ICMPFilter
		f.SetAll(true)
		f.Accept(ipv4.ICMPTypeEchoReply)
		err = ipv4.NewPacketConn(conn).SetICMPFilter(&f)
	}
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("icmp: setting the ICMP filter on the %s socket: %w", network, err)
	}
	// Room for the replies of thousands of probes arriving together.
	_ = conn.SetReadBuffer(1 << 20)
	return &pingSock{conn: conn, v6: v6, done: make(chan struct{}), waiters: make(map[uint32]*pingWaiter)}, nil
}

// Close closes the sockets; pending and later Pings fail.
func (p *Pinger) Close() error {
	p.mu.Lock()
	socks := []*pingSock{p.v4, p.v6}
	p.closed = true
	p.mu.Unlock()
	var errs []error
	for _, s := range socks {
		if s != nil {
			errs = append(errs, s.conn.Close())
			<-s.done
		}
	}
	return errors.Join(errs...)
}

// Ping sends one echo request to addr and waits for the matching reply
// until ctx is done. It returns the round-trip time.
func (p *Pinger) Ping(ctx context.Context, addr netip.Addr) (time.Duration, error) {
	addr = addr.Unmap()
	s, err := p.sock(addr.Is6())
	if err != nil {
		return 0, err
	}
	key := p.next.Add(1)
	id, seq := uint16(key>>16)^p.idBase, uint16(key)
	w := &pingWaiter{to: addr, ch: make(chan time.Time, 1)}
	wkey := uint32(id)<<16 | uint32(seq)
	s.mu.Lock()
	s.waiters[wkey] = w
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.waiters, wkey)
		s.mu.Unlock()
	}()

	var pkt [icmpHeaderLen + len(p.cookie)]byte
	marshalEcho(pkt[:], s.v6, false, id, seq, p.cookie[:])
	dst := &net.IPAddr{IP: addr.AsSlice(), Zone: addr.Zone()}
	start := time.Now()
	if _, err := s.conn.WriteToIP(pkt[:], dst); err != nil {
		return 0, fmt.Errorf("sending echo request: %s", ioError(ctx, err, start))
	}
	select {
	case at := <-w.ch:
		return at.Sub(start), nil
	case <-ctx.Done():
		if ctx.Err() == context.DeadlineExceeded {
			return 0, fmt.Errorf("no echo reply: timeout after %v", time.Since(start).Round(time.Millisecond))
		}
		return 0, errors.New("canceled")
	}
}

// read dispatches replies until the socket is closed.
func (s *pingSock) read(p *Pinger) {
	defer close(s.done)
	buf := make([]byte, 1500)
	for {
		n, from, err := s.conn.ReadFromIP(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Transient (ENOBUFS, ...): keep reading, without spinning.
			time.Sleep(10 * time.Millisecond)
			continue
		}
		at := time.Now()
		id, seq, data, ok := parseEchoReply(buf[:n], s.v6)
		if !ok || len(data) < len(p.cookie) || string(data[:len(p.cookie)]) != string(p.cookie[:]) {
			p.unmatched.Add(1)
			continue
		}
		src, _ := netip.AddrFromSlice(from.IP)
		src = src.Unmap()
		s.mu.Lock()
		w := s.waiters[uint32(id)<<16|uint32(seq)]
		s.mu.Unlock()
		if w == nil || w.to.WithZone("") != src {
			p.unmatched.Add(1)
			continue
		}
		select {
		case w.ch <- at:
		default: // duplicate reply
		}
	}
}

// ICMP message layout (RFC 792, RFC 4443): type, code, checksum, then for
// echo messages identifier and sequence number, then the data.
const icmpHeaderLen = 8

const (
	icmp4EchoRequest = 8
	icmp4EchoReply   = 0
	icmp6EchoRequest = 128
	icmp6EchoReply   = 129
)

// marshalEcho writes an echo request (or reply) into b, which must be
// icmpHeaderLen+len(data) long. For ICMPv6 the checksum is left to the
// kernel (it covers a pseudo-header the socket fills in).
func marshalEcho(b []byte, v6, reply bool, id, seq uint16, data []byte) {
	typ := byte(icmp4EchoRequest)
	switch {
	case v6 && reply:
		typ = icmp6EchoReply
	case v6:
		typ = icmp6EchoRequest
	case reply:
		typ = icmp4EchoReply
	}
	b[0], b[1], b[2], b[3] = typ, 0, 0, 0
	binary.BigEndian.PutUint16(b[4:], id)
	binary.BigEndian.PutUint16(b[6:], seq)
	copy(b[icmpHeaderLen:], data)
	if !v6 {
		binary.BigEndian.PutUint16(b[2:], checksum(b))
	}
}

// parseEchoReply parses an ICMP message as read from a raw socket (no IP
// header) and returns its identifier, sequence number and data if it is an
// echo reply of the family with a valid checksum (IPv4; the ICMPv6 checksum
// covers a pseudo-header and is checked by the kernel).
func parseEchoReply(b []byte, v6 bool) (id, seq uint16, data []byte, ok bool) {
	if len(b) < icmpHeaderLen || b[1] != 0 {
		return 0, 0, nil, false
	}
	if v6 {
		if b[0] != icmp6EchoReply {
			return 0, 0, nil, false
		}
	} else if b[0] != icmp4EchoReply || checksum(b) != 0 {
		return 0, 0, nil, false
	}
	return binary.BigEndian.Uint16(b[4:]), binary.BigEndian.Uint16(b[6:]), b[icmpHeaderLen:], true
}

// checksum is the Internet checksum (RFC 1071) of b; over a message that
// carries its correct checksum it is 0.
func checksum(b []byte) uint16 {
	var sum uint32
	for len(b) >= 2 {
		sum += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}
