package ipvs

import (
	"errors"
	"math"
	"net"
	"net/netip"
	"reflect"
	"testing"
	"time"

	mobyipvs "github.com/moby/ipvs"
)

var (
	v4    = netip.MustParseAddrPort("192.0.2.10:80")
	v6    = netip.MustParseAddrPort("[2001:db8::10]:443")
	ip4   = net.IP{192, 0, 2, 10}
	ip6   = net.ParseIP("2001:db8::10")
	maxV4 = uint32(math.MaxUint32)
)

func TestServiceToMoby(t *testing.T) {
	tests := []struct {
		name string
		in   Service
		full bool
		want *mobyipvs.Service // nil: must be rejected
	}{
		{
			name: "tcp v4, family from address",
			in:   Service{Protocol: TCP, Addr: v4, Scheduler: "wlc"},
			full: true,
			want: &mobyipvs.Service{AddressFamily: uint16(IPv4), Protocol: 6, Address: ip4, Port: 80, SchedName: "wlc", Netmask: maxV4},
		},
		{
			name: "4in6 address is unmapped to IPv4",
			in:   Service{Protocol: UDP, Addr: netip.MustParseAddrPort("[::ffff:192.0.2.10]:53"), Scheduler: "rr"},
			full: true,
			want: &mobyipvs.Service{AddressFamily: uint16(IPv4), Protocol: 17, Address: ip4, Port: 53, SchedName: "rr", Netmask: maxV4},
		},
		{
			name: "udp v6 persistent one-packet",
			in:   Service{Family: IPv6, Protocol: UDP, Addr: v6, Scheduler: "sh", Persistence: 600 * time.Second, Flags: FlagOnePacket | FlagSched1},
			full: true,
			want: &mobyipvs.Service{AddressFamily: uint16(IPv6), Protocol: 17, Address: ip6, Port: 443, SchedName: "sh", Flags: 0x1 | 0x4 | 0x8, Timeout: 600, Netmask: 128},
		},
		{
			name: "fwmark defaults to IPv4",
			in:   Service{FWMark: 7, Scheduler: "mh"},
			full: true,
			want: &mobyipvs.Service{AddressFamily: uint16(IPv4), FWMark: 7, SchedName: "mh", Netmask: maxV4},
		},
		{
			name: "fwmark v6",
			in:   Service{Family: IPv6, FWMark: 7, Scheduler: "rr"},
			full: true,
			want: &mobyipvs.Service{AddressFamily: uint16(IPv6), FWMark: 7, SchedName: "rr", Netmask: 128},
		},
		{
			name: "key only (delete) needs no scheduler",
			in:   Service{Protocol: SCTP, Addr: v4},
			want: &mobyipvs.Service{AddressFamily: uint16(IPv4), Protocol: 132, Address: ip4, Port: 80, Netmask: maxV4},
		},
		{name: "no scheduler for add", in: Service{Protocol: TCP, Addr: v4}, full: true},
		{name: "neither address nor mark", in: Service{Protocol: TCP, Scheduler: "rr"}, full: true},
		{name: "fwmark with address", in: Service{FWMark: 1, Addr: v4, Scheduler: "rr"}, full: true},
		{name: "fwmark with protocol", in: Service{FWMark: 1, Protocol: TCP, Scheduler: "rr"}, full: true},
		{name: "fwmark bad family", in: Service{FWMark: 1, Family: 99, Scheduler: "rr"}, full: true},
		{name: "family mismatch", in: Service{Family: IPv6, Protocol: TCP, Addr: v4, Scheduler: "rr"}, full: true},
		{name: "no protocol", in: Service{Addr: v4, Scheduler: "rr"}, full: true},
		{name: "unknown protocol", in: Service{Protocol: 1, Addr: v4, Scheduler: "rr"}, full: true},
		{name: "zone", in: Service{Protocol: TCP, Addr: netip.MustParseAddrPort("[fe80::1%eth0]:80"), Scheduler: "rr"}, full: true},
		{name: "fractional persistence", in: Service{Protocol: TCP, Addr: v4, Scheduler: "rr", Persistence: 1500 * time.Millisecond}, full: true},
		{name: "negative persistence", in: Service{Protocol: TCP, Addr: v4, Scheduler: "rr", Persistence: -time.Second}, full: true},
		{name: "unknown flag", in: Service{Protocol: TCP, Addr: v4, Scheduler: "rr", Flags: 0x1}, full: true},
		{name: "scheduler name too long", in: Service{Protocol: TCP, Addr: v4, Scheduler: "abcdefghijklmnop"}, full: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := serviceToMoby(tt.in, tt.full)
			if tt.want == nil {
				if !errors.Is(err, errInvalid) {
					t.Fatalf("serviceToMoby(%+v) = %+v, %v; want an errInvalid error", tt.in, got, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("serviceToMoby(%+v): %v", tt.in, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("serviceToMoby(%+v)\n got %+v\nwant %+v", tt.in, got, tt.want)
			}
		})
	}
}

func TestServiceFromMoby(t *testing.T) {
	tests := []struct {
		name    string
		in      *mobyipvs.Service
		want    Service
		wantErr bool
	}{
		{
			name: "tcp v4, hashed flag dropped",
			in:   &mobyipvs.Service{AddressFamily: uint16(IPv4), Protocol: 6, Address: ip4, Port: 80, SchedName: "wlc", Flags: 0x2, Netmask: maxV4},
			want: Service{Family: IPv4, Protocol: TCP, Addr: v4, Scheduler: "wlc"},
		},
		{
			name: "v4 address as 16 bytes",
			in:   &mobyipvs.Service{AddressFamily: uint16(IPv4), Protocol: 6, Address: ip4.To16(), Port: 80, SchedName: "wlc"},
			want: Service{Family: IPv4, Protocol: TCP, Addr: v4, Scheduler: "wlc"},
		},
		{
			name: "persistent v6",
			in:   &mobyipvs.Service{AddressFamily: uint16(IPv6), Protocol: 17, Address: ip6, Port: 443, SchedName: "sh", Flags: 0x1 | 0x2 | 0x4, Timeout: 600, Netmask: 128},
			want: Service{Family: IPv6, Protocol: UDP, Addr: v6, Scheduler: "sh", Persistence: 600 * time.Second, Flags: FlagOnePacket},
		},
		{
			name: "timeout without persistent flag is ignored",
			in:   &mobyipvs.Service{AddressFamily: uint16(IPv4), Protocol: 6, Address: ip4, Port: 80, SchedName: "rr", Timeout: 300},
			want: Service{Family: IPv4, Protocol: TCP, Addr: v4, Scheduler: "rr"},
		},
		{
			name: "fwmark",
			in:   &mobyipvs.Service{AddressFamily: uint16(IPv6), FWMark: 9, SchedName: "rr", Flags: 0x2},
			want: Service{Family: IPv6, FWMark: 9, Scheduler: "rr"},
		},
		{name: "unknown family", in: &mobyipvs.Service{AddressFamily: 3, Protocol: 6, Address: ip4, Port: 80}, wantErr: true},
		{name: "v6 family with v4 address", in: &mobyipvs.Service{AddressFamily: uint16(IPv6), Protocol: 6, Address: ip4, Port: 80}, wantErr: true},
		{name: "v4 family with v6 address", in: &mobyipvs.Service{AddressFamily: uint16(IPv4), Protocol: 6, Address: ip6, Port: 80}, wantErr: true},
		{name: "no address", in: &mobyipvs.Service{AddressFamily: uint16(IPv4), Protocol: 6, Port: 80}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := serviceFromMoby(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("serviceFromMoby(%+v) = %+v; want an error", tt.in, got)
				}
				return
			}
			if err != nil {
				t.Fatalf("serviceFromMoby(%+v): %v", tt.in, err)
			}
			if got != tt.want {
				t.Fatalf("serviceFromMoby(%+v)\n got %+v\nwant %+v", tt.in, got, tt.want)
			}
		})
	}
}

// Every valid service survives to-moby-and-back unchanged (apart from the
// family, which reads back explicit).
func TestServiceConversionRoundTrip(t *testing.T) {
	for _, s := range []Service{
		{Family: IPv4, Protocol: TCP, Addr: v4, Scheduler: "wlc"},
		{Family: IPv4, Protocol: SCTP, Addr: netip.MustParseAddrPort("192.0.2.10:0"), Scheduler: "rr", Persistence: time.Hour},
		{Family: IPv6, Protocol: UDP, Addr: v6, Scheduler: "mh", Flags: FlagSched1 | FlagSched2 | FlagSched3 | FlagOnePacket},
		{Family: IPv4, FWMark: 1, Scheduler: "lc"},
		{Family: IPv6, FWMark: math.MaxUint32, Scheduler: "lc", Persistence: time.Second},
	} {
		m, err := serviceToMoby(s, true)
		if err != nil {
			t.Fatalf("serviceToMoby(%+v): %v", s, err)
		}
		back, err := serviceFromMoby(m)
		if err != nil || back != s {
			t.Fatalf("round trip of %+v = %+v, %v", s, back, err)
		}
	}
}

func TestDestinationToMoby(t *testing.T) {
	d4 := netip.MustParseAddrPort("192.0.2.21:8080")
	d6 := netip.MustParseAddrPort("[2001:db8::21]:443")
	tests := []struct {
		name string
		fam  Family
		in   Destination
		want *mobyipvs.Destination // nil: must be rejected
	}{
		{
			name: "v4 NAT with thresholds",
			fam:  IPv4,
			in:   Destination{Addr: d4, Weight: 3, Forwarding: NAT, UpperThreshold: 100, LowerThreshold: 10},
			want: &mobyipvs.Destination{AddressFamily: uint16(IPv4), Address: net.IP{192, 0, 2, 21}, Port: 8080, Weight: 3, ConnectionFlags: 0, UpperThreshold: 100, LowerThreshold: 10},
		},
		{
			name: "v6 tunnel, weight 0 (quiesced)",
			fam:  IPv6,
			in:   Destination{Addr: d6, Forwarding: Tunnel},
			want: &mobyipvs.Destination{AddressFamily: uint16(IPv6), Address: net.ParseIP("2001:db8::21"), Port: 443, ConnectionFlags: 2},
		},
		{
			name: "DR max weight",
			fam:  IPv4,
			in:   Destination{Addr: d4, Weight: 65535, Forwarding: DR},
			want: &mobyipvs.Destination{AddressFamily: uint16(IPv4), Address: net.IP{192, 0, 2, 21}, Port: 8080, Weight: 65535, ConnectionFlags: 3},
		},
		{name: "no address", fam: IPv4, in: Destination{Weight: 1}},
		{name: "v6 destination of a v4 service", fam: IPv4, in: Destination{Addr: d6, Weight: 1}},
		{name: "v4 destination of a v6 service", fam: IPv6, in: Destination{Addr: d4, Weight: 1}},
		{name: "negative weight", fam: IPv4, in: Destination{Addr: d4, Weight: -1}},
		{name: "weight too big", fam: IPv4, in: Destination{Addr: d4, Weight: 65536}},
		{name: "unknown forwarding", fam: IPv4, in: Destination{Addr: d4, Weight: 1, Forwarding: 4}},
		{name: "zone", fam: IPv6, in: Destination{Addr: netip.MustParseAddrPort("[fe80::1%eth0]:80"), Weight: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := destinationToMoby(tt.fam, tt.in)
			if tt.want == nil {
				if !errors.Is(err, errInvalid) {
					t.Fatalf("destinationToMoby(%s, %+v) = %+v, %v; want an errInvalid error", tt.fam, tt.in, got, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("destinationToMoby(%s, %+v): %v", tt.fam, tt.in, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("destinationToMoby(%s, %+v)\n got %+v\nwant %+v", tt.fam, tt.in, got, tt.want)
			}
			back, err := destinationFromMoby(got)
			if err != nil || back != tt.in {
				t.Fatalf("round trip of %+v = %+v, %v", tt.in, back, err)
			}
		})
	}
}

func TestDestinationFromMoby(t *testing.T) {
	tests := []struct {
		name    string
		in      *mobyipvs.Destination
		want    Destination
		wantErr bool
	}{
		{
			name: "DR, stats ignored",
			in:   &mobyipvs.Destination{AddressFamily: uint16(IPv4), Address: net.IP{192, 0, 2, 22}, Port: 80, Weight: 2, ConnectionFlags: 3, ActiveConnections: 5},
			want: Destination{Addr: netip.MustParseAddrPort("192.0.2.22:80"), Weight: 2, Forwarding: DR},
		},
		{
			name: "bits above the forwarding mask are dropped",
			in:   &mobyipvs.Destination{AddressFamily: uint16(IPv6), Address: ip6, Port: 1, Weight: 1, ConnectionFlags: 0x0100 | 2},
			want: Destination{Addr: netip.MustParseAddrPort("[2001:db8::10]:1"), Weight: 1, Forwarding: Tunnel},
		},
		{name: "family mismatch", in: &mobyipvs.Destination{AddressFamily: uint16(IPv6), Address: ip4, Port: 80}, wantErr: true},
		{name: "no address", in: &mobyipvs.Destination{AddressFamily: uint16(IPv4), Port: 80}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := destinationFromMoby(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("destinationFromMoby(%+v) = %+v; want an error", tt.in, got)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("destinationFromMoby(%+v) = %+v, %v; want %+v", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestStrings(t *testing.T) {
	for got, want := range map[string]string{
		Service{Protocol: TCP, Addr: v4}.String():                 "TCP 192.0.2.10:80",
		Service{Family: IPv6, FWMark: 3}.String():                 "FWM 3 IPv6",
		Service{FWMark: 3}.String():                               "FWM 3 IPv4",
		Protocol(99).String():                                     "proto(99)",
		Family(3).String():                                        "family(3)",
		Forwarding(9).String():                                    "fwd(9)",
		Destination{Addr: v4, Weight: 2, Forwarding: DR}.String(): "192.0.2.10:80 (dr, weight 2)",
	} {
		if got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	}
}
