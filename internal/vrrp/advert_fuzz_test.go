package vrrp

import (
	"net/netip"
	"slices"
	"testing"
)

// The fuzz target's fixed addresses: those of the keepalived capture, so that its adverts
// verify as seeds.
var (
	fuzzSrcV4 = netip.MustParseAddr("10.99.0.1")
	fuzzSrcV6 = netip.MustParseAddr("fe80::c0ca:72ff:fe7c:5d1c")
)

// FuzzParse feeds Parse arbitrary VRRP messages. With fix set, the harness first writes a
// valid checksum into the input (v2 rule for version 2, v3 rule otherwise), so that the
// fuzzer explores past the checksum instead of stopping at it.
//
// Properties: Parse never panics; it returns exactly one of an advert and an error; an error
// carries a real drop reason; an accepted advert is well formed, and for VRRPv3 Marshal
// re-encodes it to the same bytes (the reserved bits aside) which Parse accepts as an equal
// advert; an accepted VRRPv2 advert with an interval VRRPv3 can carry re-encodes as VRRPv3.
func FuzzParse(f *testing.F) {
	for _, tc := range goldenV3 {
		src, dst := fuzzSrcV4, GroupIPv4
		if tc.src.Is6() {
			src, dst = fuzzSrcV6, GroupIPv6
		}
		b, err := tc.adv.Marshal(src, dst)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, src.Is6(), false)
	}
	for _, p := range readKeepalivedVectors(f) {
		f.Add(p.payload, p.src.Is6(), false)
	}
	v2 := []byte{0x21, 53, 100, 2, 0, 1, 0, 0, 10, 0, 0, 102, 10, 0, 0, 103, 0, 0, 0, 0, 0, 0, 0, 0}
	f.Add(v2, false, true)
	f.Add(v2[:8], false, true)
	f.Add([]byte{0x31, 1, 1, 0, 0, 1, 0, 0}, false, true)
	f.Add([]byte{0x31, 1, 1, 1, 0xf0, 0, 0, 0, 10, 0, 0, 1}, false, true)
	f.Add([]byte{}, true, false)

	f.Fuzz(func(t *testing.T, b []byte, v6, fix bool) {
		src, dst := fuzzSrcV4, GroupIPv4
		if v6 {
			src, dst = fuzzSrcV6, GroupIPv6
		}
		if fix && len(b) >= HeaderLen {
			kind := sumV3
			if b[0]>>4 == 2 {
				kind = sumV2
			}
			b = withSum(b, kind, src, dst)
		}
		orig := slices.Clone(b)

		a, err := Parse(b, src, dst)
		if !slices.Equal(b, orig) {
			t.Fatal("Parse modified its input")
		}
		if (a == nil) == (err == nil) {
			t.Fatalf("Parse = %v, %v: want exactly one nil", a, err)
		}
		if err != nil {
			if r := Reason(err); r <= DropNone || r > DropBadAuthType {
				t.Fatalf("Parse error %v has reason %v", err, r)
			}
			return
		}

		// Unmarshal into a used advert agrees with Parse.
		var u Advert
		u.Addrs = make([]netip.Addr, 3, 300)
		if err := u.Unmarshal(b, src, dst); err != nil || !u.Equal(a) {
			t.Fatalf("Unmarshal = %v, %v; Parse = %v", &u, err, a)
		}

		if a.VRID == 0 || a.Interval <= 0 || len(a.Addrs) == 0 || len(a.Addrs) != int(b[3]) {
			t.Fatalf("accepted a malformed advert %v", a)
		}
		for _, ad := range a.Addrs {
			if ad.Is4() == v6 || ad.Zone() != "" {
				t.Fatalf("address %v in a v6=%v advert", ad, v6)
			}
		}

		switch a.Version {
		case 3:
			out, err := a.Marshal(src, dst)
			if err != nil {
				t.Fatalf("Marshal(%v): %v", a, err)
			}
			if len(out) != len(b) || out[4]&0x0f != b[4]&0x0f ||
				!slices.Equal(out[:4], b[:4]) || out[5] != b[5] || !slices.Equal(out[8:], b[8:]) {
				t.Fatalf("Marshal(Parse(b)):\n got %x\nfrom %x", out, b)
			}
			if b[4]&0xf0 == 0 && !sameChecksum(out[6:8], b[6:8]) {
				t.Fatalf("checksum %x, input had %x", out[6:8], b[6:8])
			}
			back, err := Parse(out, src, dst)
			if err != nil || !back.Equal(a) {
				t.Fatalf("Parse(Marshal(%v)) = %v, %v", a, back, err)
			}
		case 2:
			if v6 {
				t.Fatal("accepted VRRPv2 over IPv6")
			}
			if a.Interval > MaxInterval {
				return
			}
			v3 := *a
			v3.Version = 3
			out, err := v3.Marshal(src, dst)
			if err != nil {
				t.Fatalf("v2 %v as v3: %v", a, err)
			}
			if back, err := Parse(out, src, dst); err != nil || !back.Equal(&v3) {
				t.Fatalf("v2 %v re-encoded as v3 reads back as %v, %v", a, back, err)
			}
		default:
			t.Fatalf("version %d accepted", a.Version)
		}
	})
}

// sameChecksum reports whether two checksum fields are equal as one's-complement numbers,
// where 0x0000 and 0xffff are both zero.
func sameChecksum(x, y []byte) bool {
	norm := func(b []byte) uint16 {
		v := uint16(b[0])<<8 | uint16(b[1])
		if v == 0xffff {
			return 0
		}
		return v
	}
	return norm(x) == norm(y)
}
