package heartbeat

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
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
// It opens a packet socket for the duration of the probe (nothing stays
// open between probes), so it needs CAP_NET_RAW.
func ProbeARP(ifname string, target netip.Addr, tries int, wait time.Duration) (bool, error) {
	if !target.Is4() {
		return false, fmt.Errorf("arp probe: %s is not IPv4", target)
	}
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return false, fmt.Errorf("arp probe: %w", err)
	}
	pc, err := packet.Listen(ifi, packet.Raw, etherTypeARP, nil)
	if err != nil {
		return false, fmt.Errorf("arp probe on %s: %w", ifname, err)
	}
	c, err := arp.New(ifi, pc)
	if err != nil {
		pc.Close()
		return false, fmt.Errorf("arp probe on %s: %w", ifname, err)
	}
	defer c.Close()
	for range max(tries, 1) {
		if err := c.SetDeadline(time.Now().Add(wait)); err != nil {
			return false, err
		}
		if err := c.Request(target); err != nil {
			if errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENETDOWN) {
				return false, nil // our side of the link is down: nobody answers through it
			}
			return false, fmt.Errorf("arp probe on %s: %w", ifname, err)
		}
		for {
			p, _, err := c.Read()
			if errors.Is(err, os.ErrDeadlineExceeded) {
				// A read whose deadline has passed fails before it looks
				// at the socket: if this goroutine ran late (a loaded
				// machine), the answer may be waiting there. Look without
				// waiting, then try again.
				if answered, err := drainARP(pc, target); answered || err != nil {
					return answered, err
				}
				break
			}
			if err != nil {
				return false, fmt.Errorf("arp probe on %s: %w", ifname, err)
			}
			if p.Operation == arp.OperationReply && p.SenderIP == target {
				return true, nil
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
	if err := pc.SetReadDeadline(time.Time{}); err != nil {
		return false, err
	}
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
