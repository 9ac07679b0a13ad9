package vrrp

// The advertisement codec: VRRPv3 (RFC 5798 §5) for IPv4 and IPv6, plus reading VRRPv2
// (RFC 3768 §5) adverts from older peers.
//
// VRRPv3 message (the IP payload; IPv4 protocol / IPv6 next header 112):
//
//	 0                   1                   2                   3
//	 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|Version| Type  | Virtual Rtr ID|   Priority    |Count IPvX Addr|
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|(rsvd) |     Max Adver Int     |          Checksum             |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                  IPvX Address(es): 4 or 16 bytes each          |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//
// Version 3, Type 1 (ADVERTISEMENT); Max Adver Int in centiseconds (12 bits); rsvd is
// written 0 and ignored on reception (§5.2.6). The checksum (§5.2.8) covers the whole VRRP
// message plus a pseudo-header "as defined in Section 8.1 of RFC 2460" with next header 112,
// for IPv4 too: there the pseudo-header is the IPv4 one (source, destination, zero, 112,
// length), as in keepalived, Wireshark and FRR. Both layouts give the same one's-complement
// sum apart from the address width, so one function serves both families.
//
// VRRPv2 message (RFC 3768 §5.1), IPv4 only, read but never written:
//
//	|Version| Type  | Virtual Rtr ID|   Priority    | Count IP Addrs|
//	|   Auth Type   |   Adver Int   |          Checksum             |
//	|                     IP Address(es), 4 bytes each              |
//	|                     Authentication Data (1)                   |
//	|                     Authentication Data (2)                   |
//
// Adver Int is in whole seconds; the checksum covers the VRRP message only (no
// pseudo-header). Only Auth Type 0 (no authentication) is accepted: keepalived's PASS (1) and
// AH (2) are not supported, so such adverts are dropped with DropBadAuthType. The 8 bytes of
// authentication data are ignored, as RFC 3768 §5.3.6.1 says for type 0.
//
// keepalived compatibility (checked against acassen/keepalived keepalived/vrrp/vrrp.c,
// vrrp_build_vrrp_v3 / vrrp_update_pkt / vrrp_in_chk, and against real adverts from Debian 12's
// keepalived 2.2.7 in testdata/keepalived-adverts.hex):
//   - VRRPv3 over IPv4: keepalived includes the IPv4 pseudo-header (source, destination, 0, 112,
//     VRRP length), as RFC 5798 says and as this codec does. The captured 2.2.7 multicast
//     adverts verify with it and fail without it.
//   - Unicast quirk: keepalived before 1.3.7 always put the multicast group 224.0.0.18 in the
//     pseudo-header, even for adverts sent to a unicast peer. 1.3.7 fixed that (the real
//     destination is used), auto-reverts to the old sum when it receives an old-style advert,
//     and has the per-instance option `old_unicast_checksum [never]` to force or forbid the old
//     sum (keepalived ChangeLog for 1.3.7, issue #642; PR #929 fixed more VRRPv3 IPv4 unicast
//     checksum errors in 2.0.5). Parse checks the real destination only. To interoperate with such
//     a peer, the socket layer may retry Parse with dst = GroupIPv4 when an advert that arrived
//     by unicast fails with DropBadChecksum; multicast adverts are unaffected. The drop's
//     Detail says when a checksum would verify this way.
//   - keepalived newer than 2.2.7 has `v3_checksum_as_v2` (PR #2234): VRRPv3 IPv4 without the
//     pseudo-header, as some vendors (Cisco) compute it. Not in Debian 12's 2.2.7 and not
//     supported here: such adverts are dropped with DropBadChecksum, whose Detail says so.
//   - IPv6: keepalived leaves the checksum to the kernel (IPV6_CHECKSUM socket option), which
//     uses the RFC 2460 pseudo-header, as Marshal and Parse do. keepalived only runs VRRPv3
//     over IPv6; RFC 3768 defines VRRPv2 for IPv4 only, so Parse drops version 2 over IPv6.
//   - keepalived rejects adverts whose length is not exactly the header plus the addresses
//     (plus the 8 authentication bytes for v2); so does Parse (DropBadLength).
//
// RFC 5798 §5.2.5 sets the minimum address count at 1: Marshal refuses an advert without
// addresses and Parse drops one (DropNoAddrs). Which addresses an advert must carry (for IPv6
// the link-local address first, §5.2.9) and whether they match the local configuration are
// the state layer's and the config's business, not the codec's.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Protocol constants.
const (
	// ProtocolNumber is VRRP's IPv4 protocol and IPv6 next-header number.
	ProtocolNumber = 112
	// IPv4Group and IPv6Group are the multicast groups adverts are sent to (RFC 5798 §5.1.1.2,
	// §5.1.2.2).
	IPv4Group = "224.0.0.18"
	IPv6Group = "ff02::12"
	// TTL is the IPv4 TTL / IPv6 hop limit adverts are sent with and must arrive with.
	TTL = 255

	// HeaderLen is the length of the fixed VRRP header, before the addresses.
	HeaderLen = 8
	// MaxAddrs is the most addresses one advert can carry (an 8-bit count).
	MaxAddrs = 255
	// MinInterval and MaxInterval bound a VRRPv3 Max_Advertise_Interval: 12 bits of centiseconds.
	MinInterval = 10 * time.Millisecond
	MaxInterval = 0xfff * 10 * time.Millisecond // 40.95s

	typeAdvert     = 1
	v2AuthLen      = 8
	centisecond    = 10 * time.Millisecond
	v3IntervalMask = 0x0fff // mask of the 12-bit interval field
)

// GroupIPv4 and GroupIPv6 are IPv4Group and IPv6Group as addresses.
var (
	GroupIPv4 = netip.AddrFrom4([4]byte{224, 0, 0, 18})
	GroupIPv6 = netip.AddrFrom16([16]byte{0: 0xff, 1: 0x02, 15: 0x12})
)

// Advert is one VRRP advertisement.
type Advert struct {
	Version  int // 3, or 2 when read from a VRRPv2 peer
	VRID     uint8
	Priority uint8
	// Interval is Max_Advertise_Interval (v3: centiseconds on the wire, 12 bits: 10ms..40.95s)
	// or Adver_Int (v2: whole seconds, 8 bits).
	Interval time.Duration
	Addrs    []netip.Addr // the virtual addresses; all IPv4 or all IPv6
}

// Equal reports whether a and b carry the same fields.
func (a *Advert) Equal(b *Advert) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Version == b.Version && a.VRID == b.VRID && a.Priority == b.Priority &&
		a.Interval == b.Interval && slices.Equal(a.Addrs, b.Addrs)
}

// String formats the advert for logs: "VRRPv3 vrid 51 prio 150 int 1s [10.0.0.100]".
func (a *Advert) String() string {
	if a == nil {
		return "<nil>"
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "VRRPv%d vrid %d prio %d int %v [", a.Version, a.VRID, a.Priority, a.Interval)
	for i, ad := range a.Addrs {
		if i > 0 {
			sb.WriteByte(' ')
		}
		sb.WriteString(ad.String())
	}
	sb.WriteByte(']')
	return sb.String()
}

// Errors Marshal returns, wrapped with details; test with errors.Is.
var (
	ErrVersion        = errors.New("vrrp: only VRRPv3 adverts can be marshalled")
	ErrZeroVRID       = errors.New("vrrp: VRID 0 is reserved")
	ErrInterval       = errors.New("vrrp: advert interval must be a multiple of 10ms in 10ms..40.95s")
	ErrNoAddrs        = errors.New("vrrp: an advert needs at least one address")
	ErrTooManyAddrs   = errors.New("vrrp: an advert carries at most 255 addresses")
	ErrInvalidAddr    = errors.New("vrrp: invalid (zero) virtual address")
	ErrMixedFamilies  = errors.New("vrrp: virtual addresses mix IPv4 and IPv6")
	ErrFamilyMismatch = errors.New("vrrp: source, destination and virtual addresses must be one address family")
)

// Marshal encodes a VRRPv3 advert: the IP payload. src and dst are the IP source and
// destination, needed for the checksum's pseudo-header (RFC 5798 §5.2.8: IPv4 too).
// An IPv4-mapped IPv6 source or destination counts as IPv4, but virtual addresses are taken
// as they are (an IPv4-mapped one is IPv6, as Parse would return it). Zones are ignored. A
// Version of 0 means 3.
func (a *Advert) Marshal(src, dst netip.Addr) ([]byte, error) {
	return a.AppendMarshal(nil, src, dst)
}

// AppendMarshal is Marshal appending to b. It does not allocate when b has room for the
// message (HeaderLen + 4 or 16 bytes per address). On error it returns b unchanged.
func (a *Advert) AppendMarshal(b []byte, src, dst netip.Addr) ([]byte, error) {
	is6, err := a.checkMarshal(src, dst)
	if err != nil {
		return b, err
	}
	src, dst = src.Unmap(), dst.Unmap()
	alen := 4
	if is6 {
		alen = 16
	}
	n := HeaderLen + len(a.Addrs)*alen
	b = slices.Grow(b, n)
	start := len(b)
	b = append(b,
		3<<4|typeAdvert, a.VRID, a.Priority, uint8(len(a.Addrs)),
		0, 0, // rsvd + Max Adver Int, below
		0, 0, // checksum, below
	)
	binary.BigEndian.PutUint16(b[start+4:], uint16(a.Interval/centisecond))
	for _, ad := range a.Addrs {
		if is6 {
			x := ad.As16()
			b = append(b, x[:]...)
		} else {
			x := ad.As4()
			b = append(b, x[:]...)
		}
	}
	ck := ^fold(onesSum(pseudoSum(src, dst, n), b[start:]))
	binary.BigEndian.PutUint16(b[start+6:], ck)
	return b, nil
}

// checkMarshal validates a for Marshal and reports whether it is IPv6.
func (a *Advert) checkMarshal(src, dst netip.Addr) (is6 bool, err error) {
	if a.Version != 0 && a.Version != 3 {
		return false, fmt.Errorf("%w: version %d", ErrVersion, a.Version)
	}
	if a.VRID == 0 {
		return false, ErrZeroVRID
	}
	if a.Interval < MinInterval || a.Interval > MaxInterval || a.Interval%centisecond != 0 {
		return false, fmt.Errorf("%w: %v", ErrInterval, a.Interval)
	}
	switch {
	case len(a.Addrs) == 0:
		return false, ErrNoAddrs
	case len(a.Addrs) > MaxAddrs:
		return false, fmt.Errorf("%w: %d", ErrTooManyAddrs, len(a.Addrs))
	}
	src, dst = src.Unmap(), dst.Unmap()
	if !src.IsValid() || !dst.IsValid() || src.Is4() != dst.Is4() {
		return false, fmt.Errorf("%w: source %v, destination %v", ErrFamilyMismatch, src, dst)
	}
	first := a.Addrs[0]
	for i, ad := range a.Addrs {
		switch {
		case !ad.IsValid():
			return false, fmt.Errorf("%w: address %d", ErrInvalidAddr, i)
		case ad.Is4() != first.Is4():
			return false, fmt.Errorf("%w: %v and %v", ErrMixedFamilies, first, ad)
		}
	}
	if first.Is4() != src.Is4() {
		return false, fmt.Errorf("%w: source %v, virtual address %v", ErrFamilyMismatch, src, first)
	}
	return src.Is6(), nil
}

// Parse decodes and verifies an advert received from src to dst: b is the IP payload (no IP
// header, no IPsec AH). It never panics and never retains b. Every failure is a *ParseError
// whose Reason says why the advert is dropped. The IP TTL, the VRID and the source are
// checked by the socket and state layers, not here.
func Parse(b []byte, src, dst netip.Addr) (*Advert, error) {
	a := new(Advert)
	if err := a.Unmarshal(b, src, dst); err != nil {
		return nil, err
	}
	return a, nil
}

// Unmarshal is Parse into a, reusing the storage of a.Addrs: it does not allocate once
// a.Addrs has room for the addresses. On error a is left unchanged.
func (a *Advert) Unmarshal(b []byte, src, dst netip.Addr) error {
	src, dst = src.Unmap(), dst.Unmap()
	if !src.IsValid() || !dst.IsValid() || src.Is4() != dst.Is4() {
		return drop(DropBadAddrFamily, "source %v and destination %v are not one address family", src, dst)
	}
	is6 := src.Is6()
	if len(b) < HeaderLen {
		return drop(DropTruncated, "%d bytes, the header is %d", len(b), HeaderLen)
	}
	version := int(b[0] >> 4)
	switch {
	case version == 2 && is6:
		return drop(DropBadVersion, "VRRPv2 over IPv6 (RFC 3768 is IPv4 only)")
	case version != 2 && version != 3:
		return drop(DropBadVersion, "version %d", version)
	}
	if t := b[0] & 0x0f; t != typeAdvert {
		return drop(DropBadType, "type %d", t)
	}
	count := int(b[3])
	if count == 0 {
		return drop(DropNoAddrs, "address count 0")
	}
	alen := 4
	if is6 {
		alen = 16
	}
	want := HeaderLen + count*alen
	if version == 2 {
		want += v2AuthLen
	}
	if len(b) != want {
		return drop(DropBadLength, "%d bytes, %d addresses make %d", len(b), count, want)
	}
	var acc uint64
	if version == 3 {
		acc = pseudoSum(src, dst, len(b))
	}
	if fold(onesSum(acc, b)) != 0xffff {
		return drop(DropBadChecksum, "VRRPv%d checksum %#04x does not verify%s",
			version, binary.BigEndian.Uint16(b[6:]), checksumHint(b, version, src, dst))
	}
	if version == 2 && b[4] != 0 {
		return drop(DropBadAuthType, "VRRPv2 auth type %d (only 0, no authentication, is supported)", b[4])
	}
	if b[1] == 0 {
		return drop(DropZeroVRID, "VRID 0")
	}
	var interval time.Duration
	if version == 3 {
		interval = time.Duration(binary.BigEndian.Uint16(b[4:])&v3IntervalMask) * centisecond
	} else {
		interval = time.Duration(b[5]) * time.Second
	}
	if interval == 0 {
		return drop(DropBadInterval, "advert interval 0")
	}

	a.Version = version
	a.VRID = b[1]
	a.Priority = b[2]
	a.Interval = interval
	addrs := slices.Grow(a.Addrs[:0], count)[:count]
	for i := range addrs {
		p := b[HeaderLen+i*alen:]
		if is6 {
			addrs[i] = netip.AddrFrom16([16]byte(p[:16]))
		} else {
			addrs[i] = netip.AddrFrom4([4]byte(p[:4]))
		}
	}
	a.Addrs = addrs
	return nil
}

// checksumHint names the known non-RFC ways a VRRPv3 IPv4 checksum is computed when b's
// checksum verifies one of them, for the drop's detail.
func checksumHint(b []byte, version int, src, dst netip.Addr) string {
	if version != 3 || !src.Is4() {
		return ""
	}
	if fold(onesSum(0, b)) == 0xffff {
		return " (it would without the pseudo-header, as Cisco and keepalived's v3_checksum_as_v2 compute it)"
	}
	if dst != GroupIPv4 && fold(onesSum(pseudoSum(src, GroupIPv4, len(b)), b)) == 0xffff {
		return " (it would with 224.0.0.18 as destination, as keepalived before 1.3.7 or with old_unicast_checksum computes it)"
	}
	return ""
}

// onesSum adds b to the one's-complement accumulator acc, as big-endian 32-bit words (2^16 is
// 1 modulo 0xffff, so fold gives the same result as summing 16-bit words); an odd last byte is
// padded with a zero. b starts at an even offset of the summed data.
func onesSum(acc uint64, b []byte) uint64 {
	for len(b) >= 4 {
		acc += uint64(binary.BigEndian.Uint32(b))
		b = b[4:]
	}
	if len(b) >= 2 {
		acc += uint64(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		acc += uint64(b[0]) << 8
	}
	return acc
}

// fold reduces acc to a 16-bit one's-complement sum.
func fold(acc uint64) uint16 {
	for acc>>16 != 0 {
		acc = acc&0xffff + acc>>16
	}
	return uint16(acc)
}

// pseudoSum is the one's-complement sum of the pseudo-header for a VRRP message of n bytes:
// IPv4 (source, destination, 0, 112, 16-bit length) or IPv6 (RFC 2460 §8.1: source,
// destination, 32-bit length, 3 zero bytes, next header 112). src and dst are unmapped and of
// one family.
func pseudoSum(src, dst netip.Addr, n int) uint64 {
	acc := uint64(ProtocolNumber) + uint64(n)
	if src.Is4() {
		s, d := src.As4(), dst.As4()
		return onesSum(onesSum(acc, s[:]), d[:])
	}
	s, d := src.As16(), dst.As16()
	return onesSum(onesSum(acc, s[:]), d[:])
}

// DropReason is why an advert was dropped: one countable value per reason, shared by the
// codec, the socket layer and the state machine.
type DropReason int

// Drop reasons. Parse returns the ones up to DropBadAuthType; the others are for the layers
// that check what the codec cannot see.
const (
	DropNone          DropReason = iota // not dropped (Reason of a nil error)
	DropTruncated                       // shorter than the 8-byte header
	DropBadVersion                      // version not 3 (or 2 over IPv4)
	DropBadType                         // type not 1 (ADVERTISEMENT)
	DropBadLength                       // the address count does not match the length
	DropNoAddrs                         // address count 0 (RFC 5798 §5.2.5: at least 1)
	DropBadChecksum                     // checksum (with the pseudo-header for v3) does not verify
	DropBadAddrFamily                   // IP source and destination not of one family
	DropZeroVRID                        // VRID 0
	DropBadInterval                     // advert interval 0
	DropBadAuthType                     // VRRPv2 auth type other than 0 (keepalived PASS/AH unsupported)
	DropBadTTL                          // socket layer: IP TTL / hop limit not 255
	DropWrongVRID                       // state layer: no virtual router with this VRID here
	DropOwnAdvert                       // socket layer: our own advert looped back
	DropBadHMAC                         // heartbeat layer: authentication failed
	DropReplay                          // heartbeat layer: replayed or out-of-window sequence
	DropFromDeadPeer                    // state layer: received before its sender was declared dead
	DropUnknown                         // Reason of an error that carries no DropReason

	// NumDropReasons is the number of drop reasons, to size counter arrays.
	NumDropReasons = iota
)

var dropNames = [NumDropReasons]string{
	DropNone:          "none",
	DropTruncated:     "truncated",
	DropBadVersion:    "bad_version",
	DropBadType:       "bad_type",
	DropBadLength:     "bad_length",
	DropNoAddrs:       "no_addrs",
	DropBadChecksum:   "bad_checksum",
	DropBadAddrFamily: "bad_addr_family",
	DropZeroVRID:      "zero_vrid",
	DropBadInterval:   "bad_interval",
	DropBadAuthType:   "bad_auth_type",
	DropBadTTL:        "bad_ttl",
	DropWrongVRID:     "wrong_vrid",
	DropOwnAdvert:     "own_advert",
	DropBadHMAC:       "bad_hmac",
	DropReplay:        "replay",
	DropFromDeadPeer:  "from_dead_peer",
	DropUnknown:       "unknown",
}

// String is the reason's stable name, fit for a metric label: "bad_checksum".
func (r DropReason) String() string {
	if r >= 0 && int(r) < len(dropNames) {
		return dropNames[r]
	}
	return "DropReason(" + strconv.Itoa(int(r)) + ")"
}

// ParseError is why an advert was dropped.
type ParseError struct {
	Reason DropReason
	Detail string
}

func (e *ParseError) Error() string {
	if e.Detail == "" {
		return "vrrp: advert dropped: " + e.Reason.String()
	}
	return "vrrp: advert dropped: " + e.Reason.String() + ": " + e.Detail
}

// Reason returns the DropReason err carries: DropNone for nil, DropUnknown for an error that
// wraps no *ParseError.
func Reason(err error) DropReason {
	if err == nil {
		return DropNone
	}
	if pe, ok := errors.AsType[*ParseError](err); ok {
		return pe.Reason
	}
	return DropUnknown
}

func drop(r DropReason, format string, args ...any) error {
	return &ParseError{Reason: r, Detail: fmt.Sprintf(format, args...)}
}
