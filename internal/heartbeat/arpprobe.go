package heartbeat

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/packet"
	"golang.org/x/sys/unix"
)

// ProbeARP asks target for its hardware address on interface ifname, up to
// tries times, waiting wait for each answer, and reports whether it
// answered. An ARP reply comes from the target's kernel, not from its
// daemon: it tells a node that is gone (powered off, every link down) from
// one whose heartbeat links merely went silent. That is what lets the
// backup take over within milliseconds when the whole master node is lost
// and its fast links stop, instead of waiting out the VRRP timer; a node
// that still answers keeps the RFC timer in charge.
//
// It opens a packet socket for the duration of the probe (ARPProber keeps
// one open), so it needs CAP_NET_RAW.
func ProbeARP(ifname string, target netip.Addr, tries int, wait time.Duration) (bool, error) {
	p, err := NewARPProber(ifname)
	if err != nil {
		return false, err
	}
	defer p.Close()
	return p.Probe(target, tries, wait)
}

// ARPProber is ProbeARP with its socket opened ahead of time, so that a
// probe costs only its requests and waits: opening the socket (an
// interface lookup, a socket, a filter, an address dump) takes a
// millisecond or more on a busy machine, when the probe is on the clock.
// The socket is never read between probes (no wake-ups); the ARP frames
// queued meanwhile are discarded when a probe starts. Safe for concurrent
// use (probes run one at a time).
type ARPProber struct {
	mu     sync.Mutex
	ifname string
	pc     *packet.Conn
	c      *arp.Client
	rc     syscall.RawConn
}

// NewARPProber opens a prober on interface ifname (CAP_NET_RAW).
func NewARPProber(ifname string) (*ARPProber, error) {
	p := &ARPProber{ifname: ifname}
	if err := p.open(); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *ARPProber) open() error {
	ifi, err := net.InterfaceByName(p.ifname)
	if err != nil {
		return fmt.Errorf("arp probe: %w", err)
	}
	pc, err := packet.Listen(ifi, packet.Raw, etherTypeARP, nil)
	if err != nil {
		return fmt.Errorf("arp probe on %s: %w", p.ifname, err)
	}
	c, err := arp.New(ifi, pc)
	if err != nil {
		pc.Close()
		return fmt.Errorf("arp probe on %s: %w", p.ifname, err)
	}
	rc, err := pc.SyscallConn()
	if err != nil {
		c.Close()
		return err
	}
	// Between probes nobody reads the socket: keep the backlog of other
	// hosts' ARP frames small, so the drain at a probe's start is short.
	_ = rc.Control(func(fd uintptr) { _ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 4096) })
	p.pc, p.c, p.rc = pc, c, rc
	return nil
}

// Close closes the socket.
func (p *ARPProber) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.c == nil {
		return nil
	}
	err := p.c.Close()
	p.c, p.pc, p.rc = nil, nil, nil
	return err
}

// Probe is ProbeARP on the prober's interface. A socket that fails (the
// interface was re-created, say) is reopened once.
func (p *ARPProber) Probe(target netip.Addr, tries int, wait time.Duration) (bool, error) {
	if !target.Is4() {
		return false, fmt.Errorf("arp probe: %s is not IPv4", target)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.c == nil {
		if err := p.open(); err != nil {
			return false, err
		}
	}
	alive, err := p.probe(target, tries, wait)
	if err != nil {
		p.c.Close()
		p.c, p.pc, p.rc = nil, nil, nil
		if err = p.open(); err != nil {
			return false, err
		}
		alive, err = p.probe(target, tries, wait)
	}
	return alive, err
}

func (p *ARPProber) probe(target netip.Addr, tries int, wait time.Duration) (bool, error) {
	// What queued since the last probe is old news.
	if _, err := drainARP(p.pc, netip.Addr{}); err != nil {
		return false, err
	}
	for range max(tries, 1) {
		deadline := time.Now().Add(wait)
		if err := p.c.Request(target); err != nil {
			if errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENETDOWN) {
				return false, nil // our side of the link is down: nobody answers through it
			}
			return false, fmt.Errorf("arp probe on %s: %w", p.ifname, err)
		}
		// Wait with ppoll on this thread rather than a read deadline: the
		// runtime's timers wake late by a millisecond or more when the
		// machine is busy, and the probe's two short waits are the whole
		// of a node-loss decision.
		for {
			answered, err := drainARP(p.pc, target)
			if answered || err != nil {
				return answered, err
			}
			left := time.Until(deadline)
			if left <= 0 {
				break
			}
			ts := unix.NsecToTimespec(left.Nanoseconds())
			if err := p.rc.Control(func(fd uintptr) {
				_, _ = unix.Ppoll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, &ts, nil)
			}); err != nil {
				return false, err
			}
		}
	}
	return false, nil
}

// etherTypeARP is the ARP EtherType, for the packet socket.
const etherTypeARP = 0x0806

// drainARP reads, without waiting, the frames already queued on pc and
// reports whether one is target's ARP reply.
func drainARP(pc *packet.Conn, target netip.Addr) (bool, error) {
	rc, err := pc.SyscallConn()
	if err != nil {
		return false, err
	}
	answered := false
	buf := make([]byte, 128)
	err = rc.Read(func(fd uintptr) bool {
		for !answered {
			n, _, err := unix.Recvfrom(int(fd), buf, unix.MSG_DONTWAIT)
			if err != nil {
				return true // EAGAIN: nothing more queued (or an error: give up)
			}
			var f ethernet.Frame
			var p arp.Packet
			if f.UnmarshalBinary(buf[:n]) != nil || p.UnmarshalBinary(f.Payload) != nil {
				continue
			}
			answered = p.Operation == arp.OperationReply && p.SenderIP == target
		}
		return true // never wait
	})
	return answered, err
}
