package ipvs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"net"
	"net/netip"
	"strconv"
	"strings"
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

// Service flags (IP_VS_SVC_F_* in include/uapi/linux/ip_vs.h). The three
// scheduler flags mean what the scheduler makes of them: sh and mh read
// SCHED1 as "fallback" and SCHED2 as "port" (IP_VS_SVC_F_SCHED_SH_* in the
// uapi header, IP_VS_SVC_F_SCHED_MH_* in net/netfilter/ipvs/ip_vs_mh.c);
// ipvsadm calls them flag-1..flag-3 otherwise.
const (
	FlagOnePacket ServiceFlags = 0x0004 // one-packet scheduling (UDP)
	FlagSched1    ServiceFlags = 0x0008 // scheduler flag 1 (flag-1)
	FlagSched2    ServiceFlags = 0x0010 // scheduler flag 2 (flag-2)
	FlagSched3    ServiceFlags = 0x0020 // scheduler flag 3 (flag-3)

	FlagSHFallback = FlagSched1 // sh-fallback: skip unavailable real servers
	FlagSHPort     = FlagSched2 // sh-port: hash the source port too
	FlagMHFallback = FlagSched1 // mh-fallback
	FlagMHPort     = FlagSched2 // mh-port

	flagPersistent = 0x0001 // IP_VS_SVC_F_PERSISTENT
	flagHashed     = 0x0002 // IP_VS_SVC_F_HASHED, set by the kernel on every service
	knownFlags     = FlagOnePacket | FlagSched1 | FlagSched2 | FlagSched3
)

// Service is one IPVS virtual service: either address based (Protocol + Addr)
// or firewall-mark based (FWMark). Its identity is its [ServiceKey]; every
// other field can be changed in place (IPVS_CMD_SET_SERVICE).
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
	// PersistencePrefix is the persistence granularity (ipvsadm -M) as a
	// prefix length: clients whose addresses share that many leading bits
	// stick to the same real server. 0 means the whole address (/32, /128:
	// ipvsadm's default); 32 (IPv4) or 128 (IPv6) is read back as 0. Only
	// with Persistence. A kernel netmask that is no prefix, or /0 (both only
	// possible by hand), is read back as -1, which is never valid to set.
	PersistencePrefix int
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

// ErrInvalid marks a service or destination hadirector refuses before
// sending it to the kernel.
var ErrInvalid = errors.New("invalid")

var errInvalid = ErrInvalid

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

// familyBits is the address length of f in bits.
func familyBits(f Family) int {
	if f == IPv6 {
		return 128
	}
	return 32
}

// prefixToNetmask encodes a persistence prefix (0 = whole address) as the
// IPVS_SVC_ATTR_NETMASK value moby/ipvs sends with native byte order. The
// kernel keeps the attribute's raw bytes (nla_get_be32): for IPv4 they must be
// the mask in network byte order (what ipvsadm -M 255.255.255.0 sends), for
// IPv6 they are the prefix length as a host-order number (1..128).
func prefixToNetmask(f Family, prefix int) uint32 {
	if prefix <= 0 || prefix > familyBits(f) {
		prefix = familyBits(f)
	}
	if f == IPv6 {
		return uint32(prefix)
	}
	m := uint32(math.MaxUint32) << (32 - prefix)
	return binary.NativeEndian.Uint32(binary.BigEndian.AppendUint32(nil, m))
}

// netmaskToPrefix decodes a netmask read from the kernel (see
// prefixToNetmask): the prefix length, 0 for the whole address, -1 for a
// mask that is no prefix (or /0).
func netmaskToPrefix(f Family, v uint32) int {
	if f == IPv6 {
		switch {
		case v == 128:
			return 0
		case v >= 1 && v < 128:
			return int(v)
		}
		return -1
	}
	m := binary.BigEndian.Uint32(binary.NativeEndian.AppendUint32(nil, v))
	ones := bits.LeadingZeros32(^m)
	switch {
	case m == 0 || m != uint32(math.MaxUint32)<<(32-ones):
		return -1
	case ones == 32:
		return 0
	}
	return ones
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
	fam := Family(m.AddressFamily)
	if s.PersistencePrefix < 0 || s.PersistencePrefix > familyBits(fam) {
		return nil, invalid("service %s: persistence prefix /%d outside 0..%d", s, s.PersistencePrefix, familyBits(fam))
	}
	if s.PersistencePrefix != 0 && s.Persistence == 0 {
		return nil, invalid("service %s: a persistence prefix needs a persistence timeout", s)
	}
	m.Flags = uint32(s.Flags)
	if s.Persistence > 0 {
		m.Flags |= flagPersistent
		m.Timeout = uint32(s.Persistence / time.Second)
	}
	m.Netmask = prefixToNetmask(fam, s.PersistencePrefix)
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
		if s.Persistence != 0 {
			s.PersistencePrefix = netmaskToPrefix(s.Family, m.Netmask)
		}
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

// ServiceKey is the identity of a virtual service: what the kernel looks a
// service up by. It is comparable (a map key); build it with [Service.Key],
// which normalises it, so that keys compare equal exactly when the kernel
// sees one service.
type ServiceKey struct {
	// Family is IPv4 or IPv6.
	Family Family
	// Protocol, Addr: an address service. Zero for fwmark services.
	Protocol Protocol
	Addr     netip.AddrPort
	// FWMark: a firewall-mark service. Zero for address services.
	FWMark uint32
}

// Key returns s's identity, normalised: the family filled in (from the
// address; IPv4 for a fwmark service without one), an IPv4-mapped IPv6
// address unmapped.
func (s Service) Key() ServiceKey {
	if s.FWMark != 0 {
		fam := s.Family
		if fam == 0 {
			fam = IPv4
		}
		return ServiceKey{Family: fam, FWMark: s.FWMark}
	}
	k := ServiceKey{Family: s.Family, Protocol: s.Protocol}
	if s.Addr.IsValid() {
		a := s.Addr.Addr().Unmap()
		k.Addr = netip.AddrPortFrom(a, s.Addr.Port())
		if k.Family == 0 {
			k.Family = addrFamily(a)
		}
	}
	return k
}

// Service returns a Service with only k's fields set: enough for the kernel
// calls that need just the key (delete, list destinations).
func (k ServiceKey) Service() Service {
	return Service{Family: k.Family, Protocol: k.Protocol, Addr: k.Addr, FWMark: k.FWMark}
}

// String is "TCP 192.0.2.1:80" or "FWM 42 IPv4", like [Service.String].
func (k ServiceKey) String() string { return k.Service().String() }

// Compare orders keys: address services before fwmark ones, then by family,
// address, protocol, mark.
func (k ServiceKey) Compare(o ServiceKey) int {
	if (k.FWMark != 0) != (o.FWMark != 0) {
		if k.FWMark == 0 {
			return -1
		}
		return 1
	}
	if c := cmpInt(int(k.Family), int(o.Family)); c != 0 {
		return c
	}
	if c := k.Addr.Compare(o.Addr); c != 0 {
		return c
	}
	if c := cmpInt(int(k.Protocol), int(o.Protocol)); c != 0 {
		return c
	}
	return cmpInt(int(k.FWMark), int(o.FWMark))
}

func cmpInt(a, b int) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// MarshalText encodes k as its String ("TCP 192.0.2.1:80", "FWM 42 IPv6").
func (k ServiceKey) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// UnmarshalText parses what MarshalText writes.
func (k *ServiceKey) UnmarshalText(b []byte) error {
	f := strings.Fields(string(b))
	bad := func() error { return fmt.Errorf("ipvs: bad service key %q", b) }
	if len(f) == 3 && f[0] == "FWM" {
		m, err := strconv.ParseUint(f[1], 10, 32)
		if err != nil || m == 0 {
			return bad()
		}
		var fam Family
		switch f[2] {
		case "IPv4":
			fam = IPv4
		case "IPv6":
			fam = IPv6
		default:
			return bad()
		}
		*k = ServiceKey{Family: fam, FWMark: uint32(m)}
		return nil
	}
	if len(f) != 2 {
		return bad()
	}
	var p Protocol
	switch f[0] {
	case "TCP":
		p = TCP
	case "UDP":
		p = UDP
	case "SCTP":
		p = SCTP
	default:
		return bad()
	}
	ap, err := netip.ParseAddrPort(f[1])
	if err != nil {
		return bad()
	}
	*k = Service{Protocol: p, Addr: ap}.Key()
	return nil
}

// Normalize returns s as the kernel reports it back: key fields normalised
// as by [Service.Key], and a whole-address persistence prefix (/32, /128)
// as 0.
func (s Service) Normalize() Service {
	k := s.Key()
	s.Family, s.Addr = k.Family, k.Addr
	if s.PersistencePrefix == familyBits(s.Family) {
		s.PersistencePrefix = 0
	}
	return s
}

// Validate reports (wrapping [ErrInvalid]) why s cannot be created as it
// is: the checks [Kernel.AddService] makes before calling the kernel. The
// kernel may still refuse it (an unknown scheduler: ENOENT).
func (s Service) Validate() error {
	_, err := serviceToMoby(s, true)
	return err
}

// Validate reports (wrapping [ErrInvalid]) why k names no possible
// service: the checks kernel calls that need only the key make.
func (k ServiceKey) Validate() error {
	_, err := serviceToMoby(k.Service(), false)
	return err
}

// Validate reports (wrapping [ErrInvalid]) why d cannot be a destination
// of a service of family f: the checks [Kernel.AddDestination] makes. The
// kernel still refuses a lower threshold above the upper one (ERANGE);
// [Table.SetDest] refuses that too.
func (d Destination) Validate(f Family) error {
	_, err := destinationToMoby(f, d)
	return err
}
