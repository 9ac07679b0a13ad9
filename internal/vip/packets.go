package vip

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/ndp"
)

// kind is the kind of one announcement packet.
type kind uint8

const (
	kindARPRequest kind = iota // gratuitous ARP, request form
	kindARPReply               // gratuitous ARP, reply form
	kindNA                     // IPv6 unsolicited neighbour advertisement
)

func (k kind) String() string {
	switch k {
	case kindARPRequest:
		return "garp-request"
	case kindARPReply:
		return "garp-reply"
	case kindNA:
		return "unsolicited-na"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// announcement is one prepared packet: for ARP a whole Ethernet frame (sent
// on an AF_PACKET socket), for NA the ICMPv6 message (sent on a raw ICMPv6
// socket; the kernel adds the IPv6 header and the checksum).
type announcement struct {
	vip  netip.Addr
	kind kind
	b    []byte
}

// allNodes is ff02::1, where unsolicited neighbour advertisements go.
var allNodes = netip.IPv6LinkLocalAllNodes()

// buildAnnouncements prepares the packets of one announcement round for
// every VIP, in order: for an IPv4 VIP the request form then the reply form
// of a gratuitous ARP, for an IPv6 VIP one unsolicited neighbour
// advertisement.
//
// Gratuitous ARP (both forms carry SPA = TPA = VIP and SHA = mac, and go to
// the Ethernet broadcast address):
//   - request: THA = ff:ff:ff:ff:ff:ff, like keepalived (vrrp_arp.c) and
//     MetalLB;
//   - reply: THA = mac (RFC 2002 §4.6). Linux only treats an ARP reply as
//     gratuitous when THA equals SHA (net/ipv4/arp.c, arp_is_garp), and only
//     a gratuitous packet overrides a neighbour entry that changed less than
//     locktime (default 1 s) ago; with THA = broadcast, as MetalLB sends it,
//     the reply form would be ignored by such an entry.
//
// Neighbour advertisement: Solicited = false, Override = true, Target =
// VIP, with a Target link-layer address option = mac (RFC 4861 §7.2.6).
func buildAnnouncements(mac net.HardwareAddr, vips []netip.Prefix) ([]announcement, error) {
	if len(mac) != 6 {
		return nil, fmt.Errorf("vip: hardware address %q is not a 6-byte Ethernet address", mac)
	}
	out := make([]announcement, 0, 2*len(vips))
	for _, p := range vips {
		ip := p.Addr()
		if ip.Is4() {
			for _, k := range []kind{kindARPRequest, kindARPReply} {
				op, tha := arp.OperationRequest, ethernet.Broadcast
				if k == kindARPReply {
					op, tha = arp.OperationReply, mac
				}
				pkt, err := arp.NewPacket(op, mac, ip, tha, ip)
				if err != nil {
					return nil, fmt.Errorf("vip: build %s for %s: %w", k, ip, err)
				}
				payload, err := pkt.MarshalBinary()
				if err != nil {
					return nil, fmt.Errorf("vip: build %s for %s: %w", k, ip, err)
				}
				f := &ethernet.Frame{
					Destination: ethernet.Broadcast,
					Source:      mac,
					EtherType:   ethernet.EtherTypeARP,
					Payload:     payload,
				}
				b, err := f.MarshalBinary()
				if err != nil {
					return nil, fmt.Errorf("vip: build %s for %s: %w", k, ip, err)
				}
				out = append(out, announcement{vip: ip, kind: k, b: b})
			}
			continue
		}
		na := &ndp.NeighborAdvertisement{
			Override:      true,
			TargetAddress: ip,
			Options:       []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: mac}},
		}
		b, err := ndp.MarshalMessage(na)
		if err != nil {
			return nil, fmt.Errorf("vip: build %s for %s: %w", kindNA, ip, err)
		}
		out = append(out, announcement{vip: ip, kind: kindNA, b: b})
	}
	return out, nil
}
