package ipvs

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"time"

	mobyipvs "github.com/moby/ipvs"
	"golang.org/x/sys/unix"
)

// Family is an address family of a virtual service.
type Family uint16

// Address families.
const (
	IPv4 Family = unix.AF_INET
	IPv6 Family = unix.AF_INET6
)

func (f Family) String() string {
	switch f {
	case IPv4:
		return "IPv4"
	case IPv6:
		return "IPv6"
	}
	return fmt.Sprintf("family(%d)", uint16(f))
}

// Protocol is the transport protocol of an address-based virtual service.
type Protocol uint16

// Protocols IPVS balances.
const (
	TCP  Protocol = unix.IPPROTO_TCP
	UDP  Protocol = unix.IPPROTO_UDP
	SCTP Protocol = unix.IPPROTO_SCTP
)

func (p Protocol) String() string {
	switch p {
	case TCP:
		return "TCP"
	case UDP:
		return "UDP"
	case SCTP:
		return "SCTP"
	}
	return fmt.Sprintf("proto(%d)", uint16(p))
}

// Forwarding is how IPVS hands packets to a destination (real server).
type Forwarding uint32

// Forwarding methods (IP_VS_CONN_F_* in include/uapi/linux/ip_vs.h).
const (
	NAT    Forwarding = mobyipvs.ConnectionFlagMasq        // masquerading: rewrite destination address
	Local  Forwarding = mobyipvs.ConnectionFlagLocalNode   // deliver to the director itself
	Tunnel Forwarding = mobyipvs.ConnectionFlagTunnel      // IP-in-IP encapsulation (TUN)
	DR     Forwarding = mobyipvs.ConnectionFlagDirectRoute // direct routing: rewrite the MAC only
)

func (f Forwarding) String() string {
	switch f {
	case NAT:
		return "nat"
	case Local:
		return "local"
	case Tunnel:
		return "tun"
	case DR:
		return "dr"
	}
	return fmt.Sprintf("fwd(%d)", uint32(f))
}

// ServiceFlags are the IP_VS_SVC_F_* service flags other than "persistent"
// (set from [Service.Persistence]) and "hashed" (kernel-internal).
type ServiceFlags uint32

// Service flags.
const (
	FlagOnePacket ServiceFlags = 0x0004 // one-packet scheduling (UDP)
	FlagSched1    ServiceFlags = 0x0008 // scheduler flag 1: sh/mh fallback
	FlagSched2    ServiceFlags = 0x0010 // scheduler flag 2: sh/mh port
	FlagSched3    ServiceFlags = 0x0020 // scheduler flag 3

	flagPersistent = 0x0001 // IP_VS_SVC_F_PERSISTENT
	flagHashed     = 0x0002 // IP_VS_SVC_F_HASHED, set by the kernel on every service
	knownFlags     = FlagOnePacket | FlagSched1 | FlagSched2 | FlagSched3
)

// Service is one IPVS virtual service: either address based (Protocol + Addr)
// or firewall-mark based (FWMark).
//
// Persistence granularity (the persistence netmask) is not modelled yet: the
// adapter always uses the whole client address (/32, /128).
type Service struct {
	// Family is IPv4 or IPv6. For address services 0 means "from Addr"
	// (a non-zero value must match Addr); for fwmark services 0 means IPv4.
	// Services read from the kernel always have it set.
	Family Family
	// Protocol is TCP, UDP or SCTP for address services, 0 for fwmark ones.
	Protocol Protocol
	// Addr is the virtual address and port (port 0: all ports, only
	// useful with persistence). Zero for fwmark services.
	Addr netip.AddrPort
	// FWMark is the firewall mark of a fwmark service, 0 otherwise.
	FWMark uint32
	// Scheduler is the IPVS scheduler name: rr, wrr, lc, wlc, sh, mh, ...
	// Required to add a service; the kernel loads ip_vs_<name> on demand.
	Scheduler string
	// Persistence is the persistence timeout in whole seconds; 0 = off.
	Persistence time.Duration
	// Flags are further service flags.
	Flags ServiceFlags
}

func (s Service) String() string {
	if s.FWMark != 0 {
		fam := s.Family
		if fam == 0 {
			fam = IPv4
		}
		return fmt.Sprintf("FWM %d %s", s.FWMark, fam)
	}
	return fmt.Sprintf("%s %s", s.Protocol, s.Addr)
}

// Destination is one real server of a virtual service. Its address family
// must be the service's (the netlink encoding used here cannot express
// mixed-family destinations).
type Destination struct {
	// Addr is the real server's address and port. For DR and TUN the
	// kernel ignores the port (packets keep the virtual port).
	Addr netip.AddrPort
	// Weight is 0..65535; 0 quiesces the destination (no new connections).
	Weight int
	// Forwarding is NAT, DR, Tunnel or Local.
	Forwarding Forwarding
	// UpperThreshold and LowerThreshold limit active connections; 0 = none.
	UpperThreshold uint32
	LowerThreshold uint32
}

func (d Destination) String() string {
	return fmt.Sprintf("%s (%s, weight %d)", d.Addr, d.Forwarding, d.Weight)
}

// errInvalid marks a service or destination hadirector refuses before
// sending it to the kernel.
var errInvalid = errors.New("invalid")

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errInvalid, fmt.Sprintf(format, args...))
}

// addrFamily returns the family of a (4in6-unmapped) address.
func addrFamily(a netip.Addr) Family {
	if a.Is4() {
		return IPv4
	}
	return IPv6
}

// hostMask is the persistence netmask for "whole client address", encoded
// the way moby/ipvs sends it (a native-endian u32 attribute): for IPv4 the
// kernel reads a __be32 mask (all ones is the same in both byte orders), for
// IPv6 a prefix length.
func hostMask(f Family) uint32 {
	if f == IPv6 {
		return 128
	}
	return math.MaxUint32
}

// serviceToMoby converts s for moby/ipvs. full: s is to be created (the
// kernel then needs the scheduler); otherwise only the key fields matter.
func serviceToMoby(s Service, full bool) (*mobyipvs.Service, error) {
	m := &mobyipvs.Service{}
	if s.FWMark != 0 {
		if s.Addr.IsValid() || s.Protocol != 0 {
			return nil, invalid("service %s: a fwmark service has no address or protocol", s)
		}
		fam := s.Family
		if fam == 0 {
			fam = IPv4
		}
		if fam != IPv4 && fam != IPv6 {
			return nil, invalid("service %s: unknown address family %s", s, fam)
		}
		m.AddressFamily = uint16(fam)
		m.FWMark = s.FWMark
	} else {
		if !s.Addr.IsValid() {
			return nil, invalid("service %s: needs an address or a firewall mark", s)
		}
		a := s.Addr.Addr().Unmap()
		if a.Zone() != "" {
			return nil, invalid("service %s: an IPVS address has no zone", s)
		}
		fam := addrFamily(a)
		if s.Family != 0 && s.Family != fam {
			return nil, invalid("service %s: family %s does not match the address", s, s.Family)
		}
		switch s.Protocol {
		case TCP, UDP, SCTP:
		default:
			return nil, invalid("service %s: protocol must be TCP, UDP or SCTP", s)
		}
		m.AddressFamily = uint16(fam)
		m.Protocol = uint16(s.Protocol)
		m.Address = net.IP(a.AsSlice())
		m.Port = s.Addr.Port()
	}
	if full && s.Scheduler == "" {
		return nil, invalid("service %s: no scheduler", s)
	}
	if len(s.Scheduler) > 15 { // IP_VS_SCHEDNAME_MAXLEN - 1
		return nil, invalid("service %s: scheduler name %q too long", s, s.Scheduler)
	}
	m.SchedName = s.Scheduler
	if s.Persistence < 0 || s.Persistence%time.Second != 0 || s.Persistence/time.Second > math.MaxUint32 {
		return nil, invalid("service %s: persistence %v is not a whole number of seconds", s, s.Persistence)
	}
	if s.Flags&^knownFlags != 0 {
		return nil, invalid("service %s: unknown flags %#x", s, uint32(s.Flags&^knownFlags))
	}
	m.Flags = uint32(s.Flags)
	if s.Persistence > 0 {
		m.Flags |= flagPersistent
		m.Timeout = uint32(s.Persistence / time.Second)
	}
	m.Netmask = hostMask(Family(m.AddressFamily))
	return m, nil
}

// serviceFromMoby converts a service read from the kernel.
func serviceFromMoby(m *mobyipvs.Service) (Service, error) {
	s := Service{
		Family:    Family(m.AddressFamily),
		FWMark:    m.FWMark,
		Scheduler: m.SchedName,
		Flags:     ServiceFlags(m.Flags &^ (flagPersistent | flagHashed)),
	}
	if s.Family != IPv4 && s.Family != IPv6 {
		return Service{}, fmt.Errorf("kernel service with unknown address family %d", m.AddressFamily)
	}
	if m.Flags&flagPersistent != 0 {
		s.Persistence = time.Duration(m.Timeout) * time.Second
	}
	if m.FWMark != 0 {
		return s, nil
	}
	a, err := addrFromMoby(m.Address, s.Family)
	if err != nil {
		return Service{}, fmt.Errorf("kernel service %d/%v:%d: %w", m.Protocol, m.Address, m.Port, err)
	}
	s.Protocol = Protocol(m.Protocol)
	s.Addr = netip.AddrPortFrom(a, m.Port)
	return s, nil
}

// addrFromMoby converts a net.IP from moby/ipvs (4 bytes for IPv4, 16 for
// IPv6) and checks it against the family the kernel reported.
func addrFromMoby(ip net.IP, fam Family) (netip.Addr, error) {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Addr{}, fmt.Errorf("bad address %v", []byte(ip))
	}
	if fam == IPv4 {
		a = a.Unmap()
	}
	if addrFamily(a) != fam || (fam == IPv6 && a.Is4In6()) {
		return netip.Addr{}, fmt.Errorf("address %v is not %s", a, fam)
	}
	return a, nil
}

// destinationToMoby converts d, a destination of a service of family fam.
func destinationToMoby(fam Family, d Destination) (*mobyipvs.Destination, error) {
	if !d.Addr.IsValid() {
		return nil, invalid("destination %s: no address", d)
	}
	a := d.Addr.Addr().Unmap()
	if a.Zone() != "" {
		return nil, invalid("destination %s: an IPVS address has no zone", d)
	}
	if addrFamily(a) != fam {
		return nil, invalid("destination %s: not %s like its service (mixed families are not supported)", d, fam)
	}
	if d.Weight < 0 || d.Weight > math.MaxUint16 {
		return nil, invalid("destination %s: weight %d outside 0..65535", d, d.Weight)
	}
	if d.Forwarding > DR {
		return nil, invalid("destination %s: unknown forwarding method %d", d, uint32(d.Forwarding))
	}
	return &mobyipvs.Destination{
		AddressFamily:   uint16(fam),
		Address:         net.IP(a.AsSlice()),
		Port:            d.Addr.Port(),
		Weight:          d.Weight,
		ConnectionFlags: uint32(d.Forwarding),
		UpperThreshold:  d.UpperThreshold,
		LowerThreshold:  d.LowerThreshold,
	}, nil
}

// destinationFromMoby converts a destination read from the kernel.
func destinationFromMoby(m *mobyipvs.Destination) (Destination, error) {
	a, err := addrFromMoby(m.Address, Family(m.AddressFamily))
	if err != nil {
		return Destination{}, fmt.Errorf("kernel destination %v:%d: %w", m.Address, m.Port, err)
	}
	return Destination{
		Addr:           netip.AddrPortFrom(a, m.Port),
		Weight:         m.Weight,
		Forwarding:     Forwarding(m.ConnectionFlags & mobyipvs.ConnectionFlagFwdMask),
		UpperThreshold: m.UpperThreshold,
		LowerThreshold: m.LowerThreshold,
	}, nil
}
