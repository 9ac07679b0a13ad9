package vrrp

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

var (
	srcV4  = netip.MustParseAddr("10.0.0.11")
	peerV4 = netip.MustParseAddr("10.0.0.20") // a unicast destination
	srcV6  = netip.MustParseAddr("fe80::11")
	peerV6 = netip.MustParseAddr("fe80::20")
)

// refChecksum is RFC 1071 written out plainly, independent of the codec's: the data are
// concatenated, padded to an even length, and added as 16-bit big-endian words one at a time
// with the end-around carry folded in after every addition; the result is complemented.
func refChecksum(parts ...[]byte) uint16 {
	var all []byte
	for _, p := range parts {
		all = append(all, p...)
	}
	if len(all)%2 == 1 {
		all = append(all, 0)
	}
	var sum uint16
	for i := 0; i < len(all); i += 2 {
		s := uint32(sum) + uint32(all[i])<<8 + uint32(all[i+1])
		sum = uint16(s) + uint16(s>>16)
	}
	return ^sum
}

// refPseudo lays out the pseudo-header byte by byte: for IPv4 the classic one (source,
// destination, zero, protocol, 16-bit length), for IPv6 RFC 2460 §8.1 (source, destination,
// 32-bit upper-layer length, 3 zero bytes, next header).
func refPseudo(src, dst netip.Addr, n int) []byte {
	if src.Is4() {
		s, d := src.As4(), dst.As4()
		return append(append(s[:], d[:]...), 0, 112, byte(n>>8), byte(n))
	}
	s, d := src.As16(), dst.As16()
	return append(append(s[:], d[:]...), byte(n>>24), byte(n>>16), byte(n>>8), byte(n), 0, 0, 0, 112)
}

type sumKind int

const (
	sumNone sumKind = iota // leave the checksum bytes as written
	sumV3                  // pseudo-header + message
	sumV2                  // message only
)

// withSum returns a copy of msg with its checksum field set by the reference implementation.
func withSum(msg []byte, kind sumKind, src, dst netip.Addr) []byte {
	b := slices.Clone(msg)
	if kind == sumNone || len(b) < HeaderLen {
		return b
	}
	b[6], b[7] = 0, 0
	var ck uint16
	if kind == sumV3 {
		ck = refChecksum(refPseudo(src.Unmap(), dst.Unmap(), len(b)), b)
	} else {
		ck = refChecksum(b)
	}
	binary.BigEndian.PutUint16(b[6:], ck)
	return b
}

func addrs(ss ...string) []netip.Addr {
	out := make([]netip.Addr, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParseAddr(s)
	}
	return out
}

// goldenV3 are VRRPv3 adverts written byte by byte from RFC 5798 §5.1; the checksum bytes
// (written 0 here) are filled in by refChecksum.
var goldenV3 = []struct {
	name     string
	adv      Advert
	src, dst netip.Addr
	wire     []byte
}{
	{
		name: "IPv4 one address, 1s",
		adv:  Advert{Version: 3, VRID: 51, Priority: 150, Interval: time.Second, Addrs: addrs("10.0.0.100")},
		src:  srcV4, dst: GroupIPv4,
		wire: []byte{
			0x31, 51, 150, 1, // version 3 | type 1, VRID, priority, count
			0x00, 0x64, 0, 0, // rsvd 0 | interval 100 cs, checksum
			10, 0, 0, 100,
		},
	},
	{
		name: "IPv4 three addresses, 10ms (minimum), priority 255 (owner)",
		adv:  Advert{Version: 3, VRID: 1, Priority: 255, Interval: 10 * time.Millisecond, Addrs: addrs("10.0.0.100", "10.0.1.1", "192.168.255.254")},
		src:  srcV4, dst: GroupIPv4,
		wire: []byte{
			0x31, 1, 255, 3,
			0x00, 0x01, 0, 0,
			10, 0, 0, 100,
			10, 0, 1, 1,
			192, 168, 255, 254,
		},
	},
	{
		name: "IPv4 40.95s (maximum), priority 0 (resign), VRID 255",
		adv:  Advert{Version: 3, VRID: 255, Priority: 0, Interval: 40950 * time.Millisecond, Addrs: addrs("10.0.0.100", "10.0.0.101")},
		src:  srcV4, dst: GroupIPv4,
		wire: []byte{
			0x31, 255, 0, 2,
			0x0f, 0xff, 0, 0,
			10, 0, 0, 100,
			10, 0, 0, 101,
		},
	},
	{
		name: "IPv4 unicast destination, 2.5s",
		adv:  Advert{Version: 3, VRID: 77, Priority: 100, Interval: 2500 * time.Millisecond, Addrs: addrs("10.77.0.100")},
		src:  srcV4, dst: peerV4,
		wire: []byte{
			0x31, 77, 100, 1,
			0x00, 0xfa, 0, 0, // 250 cs
			10, 77, 0, 100,
		},
	},
	{
		name: "IPv6 link-local and global, 100ms",
		adv:  Advert{Version: 3, VRID: 52, Priority: 200, Interval: 100 * time.Millisecond, Addrs: addrs("fe80::52", "fd00:99::100")},
		src:  srcV6, dst: GroupIPv6,
		wire: []byte{
			0x31, 52, 200, 2,
			0x00, 0x0a, 0, 0,
			0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x52,
			0xfd, 0x00, 0x00, 0x99, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x00,
		},
	},
	{
		name: "IPv6 unicast destination, one address, priority 0",
		adv:  Advert{Version: 3, VRID: 9, Priority: 0, Interval: 40950 * time.Millisecond, Addrs: addrs("fe80::9")},
		src:  srcV6, dst: peerV6,
		wire: []byte{
			0x31, 9, 0, 1,
			0x0f, 0xff, 0, 0,
			0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x09,
		},
	},
}

func TestMarshalGolden(t *testing.T) {
	for _, tc := range goldenV3 {
		t.Run(tc.name, func(t *testing.T) {
			want := withSum(tc.wire, sumV3, tc.src, tc.dst)
			got, err := tc.adv.Marshal(tc.src, tc.dst)
			if err != nil {
				t.Fatalf("Marshal: %v", err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("Marshal:\n got %x\nwant %x", got, want)
			}
			// AppendMarshal keeps what the buffer held.
			prefix := []byte("prefix")
			app, err := tc.adv.AppendMarshal(slices.Clone(prefix), tc.src, tc.dst)
			if err != nil || !bytes.Equal(app, append(prefix, want...)) {
				t.Fatalf("AppendMarshal = %x, %v", app, err)
			}
			// A Version of 0 means 3.
			v0 := tc.adv
			v0.Version = 0
			if got0, err := v0.Marshal(tc.src, tc.dst); err != nil || !bytes.Equal(got0, want) {
				t.Fatalf("Marshal with Version 0 = %x, %v", got0, err)
			}
			// IPv4-mapped source and destination are IPv4.
			if tc.src.Is4() {
				m, err := tc.adv.Marshal(netip.AddrFrom16(tc.src.As16()), netip.AddrFrom16(tc.dst.As16()))
				if err != nil || !bytes.Equal(m, want) {
					t.Fatalf("Marshal with mapped addresses = %x, %v", m, err)
				}
			}
			a, err := Parse(want, tc.src, tc.dst)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if !a.Equal(&tc.adv) {
				t.Fatalf("Parse = %v, want %v", a, &tc.adv)
			}
		})
	}
}

// TestLiteralVectors pins two complete adverts, checksum included, computed outside Go
// (Python, the same RFC 1071 sum), so that the codec and refChecksum cannot share a mistake.
func TestLiteralVectors(t *testing.T) {
	for _, tc := range []struct {
		adv      Advert
		src, dst netip.Addr
		hex      string
	}{
		{Advert{Version: 3, VRID: 51, Priority: 100, Interval: time.Second, Addrs: addrs("10.0.0.100")},
			srcV4, GroupIPv4, "31336401006475690a000064"},
		{Advert{Version: 3, VRID: 7, Priority: 255, Interval: 10 * time.Millisecond, Addrs: addrs("fe80::1", "fd00::100")},
			srcV6, GroupIPv6, "3107ff020001d532fe800000000000000000000000000001fd000000000000000000000000000100"},
	} {
		got, err := tc.adv.Marshal(tc.src, tc.dst)
		if err != nil || hex.EncodeToString(got) != tc.hex {
			t.Errorf("Marshal(%v) = %x, %v; want %s", &tc.adv, got, err, tc.hex)
		}
		want, _ := hex.DecodeString(tc.hex)
		if a, err := Parse(want, tc.src, tc.dst); err != nil || !a.Equal(&tc.adv) {
			t.Errorf("Parse(%s) = %v, %v", tc.hex, a, err)
		}
	}
}

func TestParseV2(t *testing.T) {
	for _, tc := range []struct {
		name string
		wire []byte
		want Advert
	}{
		{
			name: "two addresses, 1s",
			wire: []byte{
				0x21, 53, 100, 2, // version 2 | type 1, VRID, priority, count
				0, 1, 0, 0, // auth type 0, adver int 1 s, checksum
				10, 0, 0, 102,
				10, 0, 0, 103,
				0, 0, 0, 0, 0, 0, 0, 0, // authentication data
			},
			want: Advert{Version: 2, VRID: 53, Priority: 100, Interval: time.Second, Addrs: addrs("10.0.0.102", "10.0.0.103")},
		},
		{
			name: "255s, priority 255, authentication data ignored",
			wire: []byte{
				0x21, 1, 255, 1,
				0, 255, 0, 0,
				10, 0, 0, 1,
				'g', 'a', 'r', 'b', 'a', 'g', 'e', '!',
			},
			want: Advert{Version: 2, VRID: 1, Priority: 255, Interval: 255 * time.Second, Addrs: addrs("10.0.0.1")},
		},
		{
			name: "priority 0",
			wire: []byte{
				0x21, 9, 0, 1,
				0, 3, 0, 0,
				10, 0, 0, 9,
				0, 0, 0, 0, 0, 0, 0, 0,
			},
			want: Advert{Version: 2, VRID: 9, Priority: 0, Interval: 3 * time.Second, Addrs: addrs("10.0.0.9")},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := withSum(tc.wire, sumV2, srcV4, GroupIPv4)
			// The v2 checksum has no pseudo-header: any source and destination verify.
			for _, dst := range []netip.Addr{GroupIPv4, peerV4} {
				a, err := Parse(b, srcV4, dst)
				if err != nil {
					t.Fatalf("Parse to %v: %v", dst, err)
				}
				if !a.Equal(&tc.want) {
					t.Fatalf("Parse = %v, want %v", a, &tc.want)
				}
			}
		})
	}
}

func TestParseDrops(t *testing.T) {
	v4one := []byte{0x31, 51, 100, 1, 0x00, 0x64, 0, 0, 10, 0, 0, 100}
	v6one := append([]byte{0x31, 52, 100, 1, 0x00, 0x64, 0, 0}, netip.MustParseAddr("fe80::52").AsSlice()...)
	v2one := []byte{0x21, 53, 100, 1, 0, 1, 0, 0, 10, 0, 0, 102, 0, 0, 0, 0, 0, 0, 0, 0}
	with := func(b []byte, i int, v byte) []byte { b = slices.Clone(b); b[i] = v; return b }
	// A VRRPv3 IPv4 advert checksummed without the pseudo-header (Cisco, keepalived's
	// v3_checksum_as_v2) and one checksummed with 224.0.0.18 but sent to a unicast peer
	// (keepalived before 1.3.7, old_unicast_checksum).
	noPseudo := withSum(v4one, sumV2, srcV4, GroupIPv4)
	oldUnicast := withSum(v4one, sumV3, srcV4, GroupIPv4)

	for _, tc := range []struct {
		name     string
		b        []byte
		sum      sumKind
		src, dst netip.Addr
		want     DropReason
	}{
		{"empty", nil, sumNone, srcV4, GroupIPv4, DropTruncated},
		{"7 bytes", v4one[:7], sumNone, srcV4, GroupIPv4, DropTruncated},
		{"version 0", with(v4one, 0, 0x01), sumV3, srcV4, GroupIPv4, DropBadVersion},
		{"version 1", with(v4one, 0, 0x11), sumV3, srcV4, GroupIPv4, DropBadVersion},
		{"version 4", with(v4one, 0, 0x41), sumV3, srcV4, GroupIPv4, DropBadVersion},
		{"version 15", with(v4one, 0, 0xf1), sumV3, srcV4, GroupIPv4, DropBadVersion},
		{"version 2 over IPv6", with(v6one, 0, 0x21), sumV2, srcV6, GroupIPv6, DropBadVersion},
		{"type 0", with(v4one, 0, 0x30), sumV3, srcV4, GroupIPv4, DropBadType},
		{"type 2", with(v4one, 0, 0x32), sumV3, srcV4, GroupIPv4, DropBadType},
		{"type 15 v2", with(v2one, 0, 0x2f), sumV2, srcV4, GroupIPv4, DropBadType},
		{"count 0", with(v4one, 3, 0)[:8], sumV3, srcV4, GroupIPv4, DropNoAddrs},
		{"count 0 with an address", with(v4one, 3, 0), sumV3, srcV4, GroupIPv4, DropNoAddrs},
		{"one byte too many", append(slices.Clone(v4one), 0), sumV3, srcV4, GroupIPv4, DropBadLength},
		{"four bytes too many", append(slices.Clone(v4one), 10, 0, 0, 101), sumV3, srcV4, GroupIPv4, DropBadLength},
		{"one byte short", v4one[:11], sumV3, srcV4, GroupIPv4, DropBadLength},
		{"count 2, one address", with(v4one, 3, 2), sumV3, srcV4, GroupIPv4, DropBadLength},
		{"IPv6 count 2, one address", with(v6one, 3, 2), sumV3, srcV6, GroupIPv6, DropBadLength},
		{"IPv4-sized address over IPv6", v6one[:12], sumV3, srcV6, GroupIPv6, DropBadLength},
		{"v2 without authentication data", v2one[:12], sumV2, srcV4, GroupIPv4, DropBadLength},
		{"flipped bit", with(withSum(v4one, sumV3, srcV4, GroupIPv4), 2, 101), sumNone, srcV4, GroupIPv4, DropBadChecksum},
		{"zero checksum", v4one, sumNone, srcV4, GroupIPv4, DropBadChecksum},
		{"v3 IPv4 without pseudo-header", noPseudo, sumNone, srcV4, GroupIPv4, DropBadChecksum},
		{"v3 IPv4 old unicast checksum", oldUnicast, sumNone, srcV4, peerV4, DropBadChecksum},
		{"v3 IPv4 other source", withSum(v4one, sumV3, peerV4, GroupIPv4), sumNone, srcV4, GroupIPv4, DropBadChecksum},
		{"v3 IPv6 other destination", withSum(v6one, sumV3, srcV6, GroupIPv6), sumNone, srcV6, peerV6, DropBadChecksum},
		{"v2 with pseudo-header", withSum(v2one, sumV3, srcV4, GroupIPv4), sumNone, srcV4, GroupIPv4, DropBadChecksum},
		{"invalid source", v4one, sumNone, netip.Addr{}, GroupIPv4, DropBadAddrFamily},
		{"invalid destination", v4one, sumNone, srcV4, netip.Addr{}, DropBadAddrFamily},
		{"IPv4 source, IPv6 destination", v4one, sumNone, srcV4, GroupIPv6, DropBadAddrFamily},
		{"VRID 0", with(v4one, 1, 0), sumV3, srcV4, GroupIPv4, DropZeroVRID},
		{"VRID 0 IPv6", with(v6one, 1, 0), sumV3, srcV6, GroupIPv6, DropZeroVRID},
		{"VRID 0 v2", with(v2one, 1, 0), sumV2, srcV4, GroupIPv4, DropZeroVRID},
		{"interval 0", with(v4one, 5, 0), sumV3, srcV4, GroupIPv4, DropBadInterval},
		{"interval 0, reserved bits set", with(with(v4one, 5, 0), 4, 0xf0), sumV3, srcV4, GroupIPv4, DropBadInterval},
		{"v2 interval 0", with(v2one, 5, 0), sumV2, srcV4, GroupIPv4, DropBadInterval},
		{"v2 auth type 1 (PASS)", with(v2one, 4, 1), sumV2, srcV4, GroupIPv4, DropBadAuthType},
		{"v2 auth type 2 (AH)", with(v2one, 4, 2), sumV2, srcV4, GroupIPv4, DropBadAuthType},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := withSum(tc.b, tc.sum, tc.src, tc.dst)
			a, err := Parse(b, tc.src, tc.dst)
			if a != nil || err == nil {
				t.Fatalf("Parse = %v, %v; want a drop", a, err)
			}
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("error %T is not a *ParseError", err)
			}
			if got := Reason(err); got != tc.want {
				t.Fatalf("Reason = %v (%v), want %v", got, err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.want.String()) || pe.Detail == "" {
				t.Fatalf("error %q names no reason or detail", err)
			}
			// Unmarshal leaves the advert untouched on error.
			keep := Advert{Version: 3, VRID: 5, Priority: 5, Interval: time.Second, Addrs: addrs("10.9.9.9")}
			got := keep
			got.Addrs = slices.Clone(keep.Addrs)
			if err := got.Unmarshal(b, tc.src, tc.dst); Reason(err) != tc.want || !got.Equal(&keep) {
				t.Fatalf("Unmarshal = %v, advert %v", err, &got)
			}
		})
	}
}

// TestParseAccepts covers what Parse must tolerate.
// TestChecksumHints: the drop detail names the known non-RFC VRRPv3 IPv4 checksums.
func TestChecksumHints(t *testing.T) {
	v4one := []byte{0x31, 51, 100, 1, 0x00, 0x64, 0, 0, 10, 0, 0, 100}
	for _, tc := range []struct {
		b        []byte
		dst      netip.Addr
		wantHint string
	}{
		{withSum(v4one, sumV2, srcV4, GroupIPv4), GroupIPv4, "without the pseudo-header"},
		{withSum(v4one, sumV3, srcV4, GroupIPv4), peerV4, "224.0.0.18 as destination"},
		{withSum(v4one, sumV3, srcV4, peerV4), GroupIPv4, ""},
	} {
		_, err := Parse(tc.b, srcV4, tc.dst)
		if Reason(err) != DropBadChecksum {
			t.Fatalf("Parse: %v", err)
		}
		if detail := err.(*ParseError).Detail; (tc.wantHint == "") == strings.Contains(detail, "(it would") ||
			!strings.Contains(detail, tc.wantHint) {
			t.Errorf("detail %q, want hint %q", detail, tc.wantHint)
		}
	}
}

func TestParseAccepts(t *testing.T) {
	v4one := []byte{0x31, 51, 100, 1, 0x00, 0x64, 0, 0, 10, 0, 0, 100}
	want := Advert{Version: 3, VRID: 51, Priority: 100, Interval: time.Second, Addrs: addrs("10.0.0.100")}
	for _, tc := range []struct {
		name     string
		b        []byte
		src, dst netip.Addr
	}{
		// RFC 5798 §5.2.6: rsvd is ignored on reception.
		{"reserved bits set", withSum(append([]byte{0x31, 51, 100, 1, 0xf0, 0x64}, v4one[6:]...), sumV3, srcV4, GroupIPv4), srcV4, GroupIPv4},
		{"unicast destination", withSum(v4one, sumV3, srcV4, peerV4), srcV4, peerV4},
		{"IPv4-mapped source and destination", withSum(v4one, sumV3, srcV4, GroupIPv4),
			netip.AddrFrom16(srcV4.As16()), netip.AddrFrom16(GroupIPv4.As16())},
	} {
		a, err := Parse(tc.b, tc.src, tc.dst)
		if err != nil || !a.Equal(&want) {
			t.Errorf("%s: Parse = %v, %v", tc.name, a, err)
		}
	}
	// One's-complement zero has two forms: a checksum of 0xffff where 0x0000 was computed
	// also verifies (RFC 1071). Find such a message by varying the VRID and the priority.
	for i := 1 << 8; i < 1<<16; i++ {
		vrid, prio := byte(i>>8), byte(i)
		b := withSum([]byte{0x31, vrid, prio, 1, 0x00, 0x64, 0, 0, 10, 0, 0, 100}, sumV3, srcV4, GroupIPv4)
		if b[6] != 0 || b[7] != 0 {
			continue
		}
		b[6], b[7] = 0xff, 0xff
		if _, err := Parse(b, srcV4, GroupIPv4); err != nil {
			t.Errorf("checksum 0xffff for a computed 0x0000: %v", err)
		}
		return
	}
	t.Error("no VRID and priority give a zero checksum")
}

// TestOnesSum checks the codec's word-at-a-time sum against refChecksum for every length up
// to 64, odd ones included (adverts themselves are always a multiple of 4 bytes).
func TestOnesSum(t *testing.T) {
	data := make([]byte, 64)
	for i := range data {
		data[i] = byte(i*37 + 11)
	}
	data[5], data[6] = 0xff, 0xff
	for n := range len(data) + 1 {
		if got, want := ^fold(onesSum(0, data[:n])), refChecksum(data[:n]); got != want {
			t.Errorf("length %d: %#04x, want %#04x", n, got, want)
		}
	}
}

func TestMarshalErrors(t *testing.T) {
	ok := Advert{Version: 3, VRID: 51, Priority: 100, Interval: time.Second, Addrs: addrs("10.0.0.100")}
	many := make([]netip.Addr, 256)
	for i := range many {
		many[i] = netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)})
	}
	for _, tc := range []struct {
		name     string
		edit     func(a *Advert)
		src, dst netip.Addr
		want     error
	}{
		{"version 2", func(a *Advert) { a.Version = 2 }, srcV4, GroupIPv4, ErrVersion},
		{"version 4", func(a *Advert) { a.Version = 4 }, srcV4, GroupIPv4, ErrVersion},
		{"VRID 0", func(a *Advert) { a.VRID = 0 }, srcV4, GroupIPv4, ErrZeroVRID},
		{"interval 0", func(a *Advert) { a.Interval = 0 }, srcV4, GroupIPv4, ErrInterval},
		{"interval negative", func(a *Advert) { a.Interval = -time.Second }, srcV4, GroupIPv4, ErrInterval},
		{"interval 5ms", func(a *Advert) { a.Interval = 5 * time.Millisecond }, srcV4, GroupIPv4, ErrInterval},
		{"interval 15ms", func(a *Advert) { a.Interval = 15 * time.Millisecond }, srcV4, GroupIPv4, ErrInterval},
		{"interval 1s+1ns", func(a *Advert) { a.Interval = time.Second + 1 }, srcV4, GroupIPv4, ErrInterval},
		{"interval 40.96s", func(a *Advert) { a.Interval = 40960 * time.Millisecond }, srcV4, GroupIPv4, ErrInterval},
		{"no addresses", func(a *Advert) { a.Addrs = nil }, srcV4, GroupIPv4, ErrNoAddrs},
		{"256 addresses", func(a *Advert) { a.Addrs = many }, srcV4, GroupIPv4, ErrTooManyAddrs},
		{"zero address", func(a *Advert) { a.Addrs = []netip.Addr{{}} }, srcV4, GroupIPv4, ErrInvalidAddr},
		{"mixed families", func(a *Advert) { a.Addrs = addrs("10.0.0.100", "fd00::100") }, srcV4, GroupIPv4, ErrMixedFamilies},
		{"mixed families, IPv6 first", func(a *Advert) { a.Addrs = addrs("fd00::100", "10.0.0.100") }, srcV6, GroupIPv6, ErrMixedFamilies},
		{"IPv4 source, IPv6 destination", nil, srcV4, GroupIPv6, ErrFamilyMismatch},
		{"invalid source", nil, netip.Addr{}, GroupIPv4, ErrFamilyMismatch},
		{"invalid destination", nil, srcV4, netip.Addr{}, ErrFamilyMismatch},
		{"IPv6 addresses over IPv4", func(a *Advert) { a.Addrs = addrs("fd00::100") }, srcV4, GroupIPv4, ErrFamilyMismatch},
		{"IPv4 addresses over IPv6", nil, srcV6, GroupIPv6, ErrFamilyMismatch},
		{"IPv4-mapped virtual address over IPv4", func(a *Advert) { a.Addrs = addrs("::ffff:10.0.0.100") }, srcV4, GroupIPv4, ErrFamilyMismatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := ok
			if tc.edit != nil {
				tc.edit(&a)
			}
			if b, err := a.Marshal(tc.src, tc.dst); !errors.Is(err, tc.want) || b != nil {
				t.Fatalf("Marshal = %x, %v; want %v", b, err, tc.want)
			}
			buf := []byte{1, 2, 3}
			if b, err := a.AppendMarshal(buf, tc.src, tc.dst); !errors.Is(err, tc.want) || !bytes.Equal(b, buf) {
				t.Fatalf("AppendMarshal = %x, %v; want the buffer unchanged and %v", b, err, tc.want)
			}
		})
	}
	// 255 addresses is the most, and fine.
	a := ok
	a.Addrs = many[:255]
	b, err := a.Marshal(srcV4, GroupIPv4)
	if err != nil || len(b) != HeaderLen+255*4 {
		t.Fatalf("255 addresses: %d bytes, %v", len(b), err)
	}
	if back, err := Parse(b, srcV4, GroupIPv4); err != nil || !back.Equal(&a) {
		t.Fatalf("255 addresses: Parse = %v", err)
	}
}

func TestDropReasonNames(t *testing.T) {
	seen := map[string]DropReason{}
	for r := range DropReason(NumDropReasons) {
		name := r.String()
		if name == "" || strings.HasPrefix(name, "DropReason(") {
			t.Errorf("reason %d has no name", int(r))
		}
		if prev, dup := seen[name]; dup {
			t.Errorf("reasons %d and %d are both %q", int(prev), int(r), name)
		}
		seen[name] = r
	}
	for _, r := range []DropReason{-1, NumDropReasons} {
		if got, want := r.String(), fmt.Sprintf("DropReason(%d)", int(r)); got != want {
			t.Errorf("String() = %q, want %q", got, want)
		}
	}
	// The enum's shape: the layers above count with these exact values.
	for _, r := range []DropReason{DropBadTTL, DropWrongVRID, DropOwnAdvert, DropBadHMAC, DropReplay} {
		if r <= DropBadAuthType || r >= DropUnknown {
			t.Errorf("%v is out of place", r)
		}
	}
}

func TestReason(t *testing.T) {
	pe := &ParseError{Reason: DropBadTTL, Detail: "ttl 64"}
	for _, tc := range []struct {
		err  error
		want DropReason
	}{
		{nil, DropNone},
		{pe, DropBadTTL},
		{fmt.Errorf("heartbeat: %w", pe), DropBadTTL},
		{errors.New("something else"), DropUnknown},
	} {
		if got := Reason(tc.err); got != tc.want {
			t.Errorf("Reason(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
	if got := (&ParseError{Reason: DropReplay}).Error(); got != "vrrp: advert dropped: replay" {
		t.Errorf("Error() = %q", got)
	}
	if got := pe.Error(); got != "vrrp: advert dropped: bad_ttl: ttl 64" {
		t.Errorf("Error() = %q", got)
	}
}

// TestMappedVirtualAddress: an IPv4-mapped address is an IPv6 virtual address (found by
// FuzzParse: Marshal used to unmap it and refuse the advert Parse had accepted).
func TestMappedVirtualAddress(t *testing.T) {
	a := Advert{Version: 3, VRID: 52, Priority: 200, Interval: time.Second, Addrs: addrs("fe80::52", "::ffff:10.0.0.82")}
	b, err := a.Marshal(srcV6, GroupIPv6)
	if err != nil || len(b) != HeaderLen+2*16 {
		t.Fatalf("Marshal = %x, %v", b, err)
	}
	if back, err := Parse(b, srcV6, GroupIPv6); err != nil || !back.Equal(&a) {
		t.Fatalf("Parse = %v, %v", back, err)
	}
}

func TestParseDoesNotRetain(t *testing.T) {
	tc := goldenV3[4] // IPv6, two addresses
	b := withSum(tc.wire, sumV3, tc.src, tc.dst)
	a, err := Parse(b, tc.src, tc.dst)
	if err != nil {
		t.Fatal(err)
	}
	for i := range b {
		b[i] = 0xaa
	}
	if !a.Equal(&tc.adv) {
		t.Fatalf("advert changed with its buffer: %v", a)
	}
}

func TestAdvertHelpers(t *testing.T) {
	a := &Advert{Version: 3, VRID: 51, Priority: 150, Interval: time.Second, Addrs: addrs("10.0.0.100", "10.0.0.101")}
	if got, want := a.String(), "VRRPv3 vrid 51 prio 150 int 1s [10.0.0.100 10.0.0.101]"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if got := (*Advert)(nil).String(); got != "<nil>" {
		t.Errorf("nil String() = %q", got)
	}
	b := *a
	b.Addrs = slices.Clone(a.Addrs)
	if !a.Equal(&b) || a.Equal(nil) || !(*Advert)(nil).Equal(nil) {
		t.Error("Equal is wrong on equal adverts or nil")
	}
	b.Addrs[1] = netip.MustParseAddr("10.0.0.102")
	if a.Equal(&b) {
		t.Error("Equal ignores addresses")
	}
	if GroupIPv4.String() != IPv4Group || GroupIPv6.String() != IPv6Group {
		t.Errorf("groups %v %v", GroupIPv4, GroupIPv6)
	}
	if MaxInterval != 40950*time.Millisecond {
		t.Errorf("MaxInterval = %v", MaxInterval)
	}
}

func TestAllocations(t *testing.T) {
	tc := goldenV3[1]
	buf := make([]byte, 0, 64)
	if n := testing.AllocsPerRun(100, func() {
		if _, err := tc.adv.AppendMarshal(buf[:0], tc.src, tc.dst); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("AppendMarshal allocates %v times", n)
	}
	b, _ := tc.adv.Marshal(tc.src, tc.dst)
	var a Advert
	if n := testing.AllocsPerRun(100, func() {
		if err := a.Unmarshal(b, tc.src, tc.dst); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("Unmarshal into a warm advert allocates %v times", n)
	}
}

// ipPacket is one captured IP packet, split.
type ipPacket struct {
	src, dst netip.Addr
	ttl      int
	proto    int
	payload  []byte
}

func splitIP(b []byte) (ipPacket, error) {
	switch {
	case len(b) >= 20 && b[0]>>4 == 4:
		ihl := int(b[0]&0x0f) * 4
		total := int(binary.BigEndian.Uint16(b[2:]))
		if ihl < 20 || total < ihl || total > len(b) {
			return ipPacket{}, fmt.Errorf("bad IPv4 header")
		}
		return ipPacket{
			src: netip.AddrFrom4([4]byte(b[12:16])), dst: netip.AddrFrom4([4]byte(b[16:20])),
			ttl: int(b[8]), proto: int(b[9]), payload: b[ihl:total],
		}, nil
	case len(b) >= 40 && b[0]>>4 == 6:
		plen := int(binary.BigEndian.Uint16(b[4:]))
		if 40+plen > len(b) {
			return ipPacket{}, fmt.Errorf("bad IPv6 header")
		}
		return ipPacket{
			src: netip.AddrFrom16([16]byte(b[8:24])), dst: netip.AddrFrom16([16]byte(b[24:40])),
			ttl: int(b[7]), proto: int(b[6]), payload: b[40 : 40+plen],
		}, nil
	}
	return ipPacket{}, fmt.Errorf("not an IP packet")
}

// readKeepalivedVectors returns the captured packets of testdata/keepalived-adverts.hex.
func readKeepalivedVectors(tb testing.TB) []ipPacket {
	tb.Helper()
	f, err := os.Open("testdata/keepalived-adverts.hex")
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	var out []ipPacket
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		raw, err := hex.DecodeString(line)
		if err != nil {
			tb.Fatalf("%q: %v", line, err)
		}
		p, err := splitIP(raw)
		if err != nil {
			tb.Fatalf("%q: %v", line, err)
		}
		out = append(out, p)
	}
	if err := sc.Err(); err != nil {
		tb.Fatal(err)
	}
	return out
}

// TestKeepalivedVectors parses real adverts sent by Debian 12's keepalived 2.2.7 (see the
// header of testdata/keepalived-adverts.hex and testdata/capture-keepalived.sh): VRRPv3 over
// IPv4 and IPv6 and VRRPv2, each at its configured priority and at priority 0 on shutdown.
func TestKeepalivedVectors(t *testing.T) {
	v4Src := netip.MustParseAddr("10.99.0.1")
	want := map[uint8]Advert{
		51: {Version: 3, VRID: 51, Priority: 150, Interval: time.Second, Addrs: addrs("10.99.0.100", "10.99.0.101")},
		52: {Version: 3, VRID: 52, Priority: 200, Interval: 500 * time.Millisecond, Addrs: addrs("fe80::52", "fd00:99::100")},
		53: {Version: 2, VRID: 53, Priority: 100, Interval: time.Second, Addrs: addrs("10.99.0.102")},
	}
	seen := map[[2]uint8]int{} // VRID, priority == 0
	for i, p := range readKeepalivedVectors(t) {
		if p.ttl != TTL || p.proto != ProtocolNumber {
			t.Errorf("packet %d: TTL %d protocol %d", i, p.ttl, p.proto)
		}
		if (p.src.Is4() && (p.src != v4Src || p.dst != GroupIPv4)) || (p.src.Is6() && (!p.src.IsLinkLocalUnicast() || p.dst != GroupIPv6)) {
			t.Errorf("packet %d: %v > %v", i, p.src, p.dst)
		}
		a, err := Parse(p.payload, p.src, p.dst)
		if err != nil {
			t.Fatalf("packet %d (%x): %v", i, p.payload, err)
		}
		w, ok := want[a.VRID]
		if !ok {
			t.Fatalf("packet %d: unexpected VRID %d", i, a.VRID)
		}
		if a.Priority == 0 {
			w.Priority = 0
		}
		if !a.Equal(&w) {
			t.Fatalf("packet %d: Parse = %v, want %v", i, a, &w)
		}
		seen[[2]uint8{a.VRID, min(a.Priority, 1)}]++

		if a.Version == 3 {
			// We encode exactly what keepalived sends.
			ours, err := a.Marshal(p.src, p.dst)
			if err != nil || !bytes.Equal(ours, p.payload) {
				t.Errorf("packet %d: Marshal = %x, %v; keepalived sent %x", i, ours, err, p.payload)
			}
		}
		if a.Version == 3 && p.src.Is4() {
			// The finding: keepalived's VRRPv3 IPv4 checksum includes the pseudo-header.
			if refChecksum(refPseudo(p.src, p.dst, len(p.payload)), p.payload) != 0 {
				t.Errorf("packet %d: does not verify with the pseudo-header", i)
			}
			if refChecksum(p.payload) == 0 {
				t.Errorf("packet %d: verifies without the pseudo-header too", i)
			}
		}
	}
	for vrid := range want {
		for prio := range uint8(2) {
			if seen[[2]uint8{vrid, prio}] == 0 {
				t.Errorf("no VRID %d advert with priority %s", vrid, map[uint8]string{0: "0", 1: "> 0"}[prio])
			}
		}
	}
}

func BenchmarkMarshal(b *testing.B) {
	for _, tc := range []struct {
		name string
		i    int
	}{{"IPv4-3addrs", 1}, {"IPv6-2addrs", 4}} {
		g := goldenV3[tc.i]
		b.Run(tc.name+"/AppendMarshal", func(b *testing.B) {
			b.ReportAllocs()
			buf := make([]byte, 0, 64)
			for b.Loop() {
				buf, _ = g.adv.AppendMarshal(buf[:0], g.src, g.dst)
			}
		})
		b.Run(tc.name+"/Marshal", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_, _ = g.adv.Marshal(g.src, g.dst)
			}
		})
	}
}

func BenchmarkParse(b *testing.B) {
	for _, tc := range []struct {
		name string
		i    int
	}{{"IPv4-3addrs", 1}, {"IPv6-2addrs", 4}} {
		g := goldenV3[tc.i]
		wire, err := g.adv.Marshal(g.src, g.dst)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(tc.name+"/Parse", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Parse(wire, g.src, g.dst); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(tc.name+"/Unmarshal", func(b *testing.B) {
			b.ReportAllocs()
			var a Advert
			for b.Loop() {
				if err := a.Unmarshal(wire, g.src, g.dst); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("BadChecksum", func(b *testing.B) {
		g := goldenV3[0]
		wire, _ := g.adv.Marshal(g.src, g.dst)
		wire[2]++
		b.ReportAllocs()
		for b.Loop() {
			if _, err := Parse(wire, g.src, g.dst); Reason(err) != DropBadChecksum {
				b.Fatal(err)
			}
		}
	})
}
