package ipvs

import (
	"encoding/json"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	mobyipvs "github.com/moby/ipvs"
)

func TestPersistencePrefixEncoding(t *testing.T) {
	tests := []struct {
		fam    Family
		prefix int
		bytes  [4]byte // the attribute's bytes on the wire, as the kernel keeps them
	}{
		{IPv4, 0, [4]byte{255, 255, 255, 255}},
		{IPv4, 32, [4]byte{255, 255, 255, 255}},
		{IPv4, 24, [4]byte{255, 255, 255, 0}}, // ipvsadm -M 255.255.255.0
		{IPv4, 1, [4]byte{128, 0, 0, 0}},
		{IPv4, 17, [4]byte{255, 255, 128, 0}},
		{IPv6, 0, [4]byte{128, 0, 0, 0}}, // host-order 128 (little endian)
		{IPv6, 64, [4]byte{64, 0, 0, 0}},
	}
	for _, tt := range tests {
		v := prefixToNetmask(tt.fam, tt.prefix)
		got := [4]byte{byte(v), byte(v >> 8), byte(v >> 16), byte(v >> 24)} // moby sends native (LE) order
		if got != tt.bytes {
			t.Errorf("prefixToNetmask(%s, %d) sends %v, want %v", tt.fam, tt.prefix, got, tt.bytes)
		}
		want := tt.prefix
		if want == familyBits(tt.fam) {
			want = 0
		}
		if back := netmaskToPrefix(tt.fam, v); back != want {
			t.Errorf("netmaskToPrefix(%s, %#x) = %d, want %d", tt.fam, v, back, want)
		}
	}
	le := func(b ...byte) uint32 { return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24 }
	for _, bad := range []struct {
		fam Family
		v   uint32
	}{
		{IPv4, le(255, 0, 255, 0)}, // no prefix
		{IPv4, 0},                  // /0
		{IPv6, 0},
		{IPv6, 129},
	} {
		if p := netmaskToPrefix(bad.fam, bad.v); p != -1 {
			t.Errorf("netmaskToPrefix(%s, %#x) = %d, want -1", bad.fam, bad.v, p)
		}
	}
}

func TestServicePersistencePrefix(t *testing.T) {
	s := Service{Protocol: TCP, Addr: v4, Scheduler: "rr", Persistence: 300 * time.Second, PersistencePrefix: 24}
	m, err := serviceToMoby(s, true)
	if err != nil {
		t.Fatal(err)
	}
	back, err := serviceFromMoby(m)
	if err != nil {
		t.Fatal(err)
	}
	if back != s.Normalize() {
		t.Fatalf("round trip: %+v, want %+v", back, s.Normalize())
	}
	for name, bad := range map[string]Service{
		"prefix without persistence": {Protocol: TCP, Addr: v4, Scheduler: "rr", PersistencePrefix: 24},
		"v4 prefix 33":               {Protocol: TCP, Addr: v4, Scheduler: "rr", Persistence: time.Second, PersistencePrefix: 33},
		"v6 prefix 129":              {Protocol: TCP, Addr: v6, Scheduler: "rr", Persistence: time.Second, PersistencePrefix: 129},
		"the no-prefix marker":       {Protocol: TCP, Addr: v4, Scheduler: "rr", Persistence: time.Second, PersistencePrefix: -1},
	} {
		if err := bad.Validate(); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: Validate = %v, want ErrInvalid", name, err)
		}
	}
	// A non-persistent service reads back prefix 0 whatever the netmask.
	got, err := serviceFromMoby(&mobyipvs.Service{AddressFamily: uint16(IPv4), Protocol: 6, Address: ip4, Port: 80, SchedName: "rr", Netmask: 0x00ffffff})
	if err != nil || got.PersistencePrefix != 0 {
		t.Fatalf("non-persistent read-back: %+v, %v", got, err)
	}
}

func TestServiceKey(t *testing.T) {
	mapped := Service{Protocol: TCP, Addr: netip.MustParseAddrPort("[::ffff:192.0.2.10]:80")}
	plain := Service{Family: IPv4, Protocol: TCP, Addr: v4}
	if mapped.Key() != plain.Key() {
		t.Fatalf("keys differ: %+v vs %+v", mapped.Key(), plain.Key())
	}
	if (Service{FWMark: 5}).Key() != (Service{Family: IPv4, FWMark: 5, Scheduler: "rr"}).Key() {
		t.Fatal("fwmark key without family is not IPv4's")
	}
	if (Service{FWMark: 5}).Key() == (Service{Family: IPv6, FWMark: 5}).Key() {
		t.Fatal("fwmark keys of two families are equal")
	}
	for _, k := range []ServiceKey{
		plain.Key(),
		Service{Protocol: SCTP, Addr: v6}.Key(),
		Service{Protocol: UDP, Addr: netip.MustParseAddrPort("192.0.2.1:0")}.Key(),
		Service{FWMark: 42}.Key(),
		Service{Family: IPv6, FWMark: 0xffffffff}.Key(),
	} {
		b, err := json.Marshal(k)
		if err != nil {
			t.Fatal(err)
		}
		var back ServiceKey
		if err := json.Unmarshal(b, &back); err != nil || back != k {
			t.Fatalf("JSON round trip of %v: %s -> %+v, %v", k, b, back, err)
		}
	}
	for _, bad := range []string{"", "TCP", "ICMP 192.0.2.1:80", "TCP 192.0.2.1", "FWM 0 IPv4", "FWM 1 IPX", "FWM x IPv4"} {
		var k ServiceKey
		if err := k.UnmarshalText([]byte(bad)); err == nil {
			t.Errorf("UnmarshalText(%q) = %+v, want an error", bad, k)
		}
	}
}

func TestTableSet(t *testing.T) {
	var tb Table // the zero Table works through a pointer
	s := Service{Protocol: TCP, Addr: netip.MustParseAddrPort("[::ffff:192.0.2.10]:80"), Scheduler: "wlc", Persistence: time.Minute, PersistencePrefix: 32}
	d1 := Destination{Addr: netip.MustParseAddrPort("[::ffff:192.0.2.21]:80"), Weight: 1, Forwarding: DR}
	if err := tb.Set(s, d1); err != nil {
		t.Fatal(err)
	}
	k := s.Key()
	got, ok := tb.Service(k)
	want := Service{Family: IPv4, Protocol: TCP, Addr: v4, Scheduler: "wlc", Persistence: time.Minute}
	if !ok || got != want {
		t.Fatalf("Service = %+v, %v; want the normalised %+v", got, ok, want)
	}
	if d, ok := tb.Dest(k, netip.MustParseAddrPort("192.0.2.21:80")); !ok || d.Weight != 1 {
		t.Fatalf("Dest by unmapped address = %+v, %v", d, ok)
	}

	for name, err := range map[string]error{
		"lower above upper": tb.Set(s, Destination{Addr: netip.MustParseAddrPort("192.0.2.22:80"), Weight: 1, LowerThreshold: 5}),
		"two with one addr": tb.Set(s, d1, d1),
		"other family":      tb.Set(s, Destination{Addr: netip.MustParseAddrPort("[2001:db8::1]:80"), Weight: 1}),
		"no scheduler":      tb.Set(Service{Protocol: TCP, Addr: v4}),
		"dest of nothing":   tb.SetDest(Service{Protocol: UDP, Addr: v4}.Key(), d1),
		"bad weight":        tb.SetDest(k, Destination{Addr: netip.MustParseAddrPort("192.0.2.23:80"), Weight: -1}),
	} {
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
	if tb.Len() != 1 || tb.NumDests() != 1 {
		t.Fatalf("refused input changed the table:\n%s", tb)
	}

	c := tb.Clone()
	if !c.Equal(tb) {
		t.Fatal("clone differs")
	}
	if err := c.SetDest(k, Destination{Addr: netip.MustParseAddrPort("192.0.2.22:80"), Weight: 2, Forwarding: NAT, UpperThreshold: 10, LowerThreshold: 5}); err != nil {
		t.Fatal(err)
	}
	s2 := want
	s2.Scheduler = "rr"
	if err := c.SetService(s2); err != nil {
		t.Fatal(err)
	}
	if c.Equal(tb) || tb.NumDests() != 1 {
		t.Fatal("changing the clone changed the original")
	}
	if c.NumDests() != 2 {
		t.Fatalf("SetService dropped destinations:\n%s", c)
	}
	wantStr := "TCP 192.0.2.10:80 rr persistent 60\n" +
		"  -> 192.0.2.21:80 dr weight 1\n" +
		"  -> 192.0.2.22:80 nat weight 2 thresholds 5..10\n"
	if c.String() != wantStr {
		t.Fatalf("String:\n%s\nwant\n%s", c, wantStr)
	}
	c.DeleteDest(k, netip.MustParseAddrPort("[::ffff:192.0.2.21]:80"))
	c.Delete(Service{Protocol: UDP, Addr: v4}.Key()) // not there: no-op
	if c.NumDests() != 1 {
		t.Fatalf("DeleteDest: %s", c)
	}
	c.Delete(k)
	if c.Len() != 0 || !strings.EqualFold(c.String(), "") {
		t.Fatalf("Delete: %s", c)
	}
}
