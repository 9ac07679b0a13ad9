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
	c, err := arp.Dial(ifi)
	if err != nil {
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
		drained := false
		for {
			p, _, err := c.Read()
			if errors.Is(err, os.ErrDeadlineExceeded) {
				if drained {
					break // next try
				}
				// A read whose deadline has passed fails before it looks
				// at the socket: if this goroutine ran late (a loaded
				// machine), an answer may be waiting there. Look once
				// more, with a deadline still ahead.
				drained = true
				if err := c.SetDeadline(time.Now().Add(200 * time.Microsecond)); err != nil {
					return false, err
				}
				continue
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
