package vip

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/ndp"
)

func TestBuildAnnouncements(t *testing.T) {
	mac := net.HardwareAddr{0x02, 0, 0, 0, 0, 0x11}
	v4 := netip.MustParsePrefix("192.0.2.100/24")
	v6 := netip.MustParsePrefix("2001:db8::100/64")
	anns, err := buildAnnouncements(mac, []netip.Prefix{v4, v6})
	if err != nil {
		t.Fatal(err)
	}
	if len(anns) != 3 {
		t.Fatalf("got %d announcements, want 3 (request, reply, NA)", len(anns))
	}
	for i, want := range []kind{kindARPRequest, kindARPReply} {
		an := anns[i]
		if an.kind != want || an.vip != v4.Addr() {
			t.Fatalf("announcement %d: %v for %v, want %v for %v", i, an.kind, an.vip, want, v4.Addr())
		}
		var f ethernet.Frame
		if err := f.UnmarshalBinary(an.b); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(f.Destination, ethernet.Broadcast) || !bytes.Equal(f.Source, mac) || f.EtherType != ethernet.EtherTypeARP {
			t.Errorf("%v: Ethernet header dst=%v src=%v type=%v", want, f.Destination, f.Source, f.EtherType)
		}
		var p arp.Packet
		if err := p.UnmarshalBinary(f.Payload); err != nil {
			t.Fatal(err)
		}
		wantOp, wantTHA := arp.OperationRequest, ethernet.Broadcast
		if want == kindARPReply {
			wantOp, wantTHA = arp.OperationReply, mac
		}
		if p.Operation != wantOp || !bytes.Equal(p.SenderHardwareAddr, mac) || p.SenderIP != v4.Addr() ||
			p.TargetIP != v4.Addr() || !bytes.Equal(p.TargetHardwareAddr, wantTHA) {
			t.Errorf("%v: got op=%v sha=%v spa=%v tha=%v tpa=%v", want, p.Operation, p.SenderHardwareAddr, p.SenderIP, p.TargetHardwareAddr, p.TargetIP)
		}
	}
	an := anns[2]
	if an.kind != kindNA || an.vip != v6.Addr() {
		t.Fatalf("announcement 2: %v for %v", an.kind, an.vip)
	}
	m, err := ndp.ParseMessage(an.b)
	if err != nil {
		t.Fatal(err)
	}
	na, ok := m.(*ndp.NeighborAdvertisement)
	if !ok {
		t.Fatalf("got %T, want a neighbour advertisement", m)
	}
	if !na.Override || na.Solicited || na.Router || na.TargetAddress != v6.Addr() || len(na.Options) != 1 {
		t.Fatalf("NA: %+v", na)
	}
	lla, ok := na.Options[0].(*ndp.LinkLayerAddress)
	if !ok || lla.Direction != ndp.Target || !bytes.Equal(lla.Addr, mac) {
		t.Fatalf("NA option: %+v", na.Options[0])
	}

	if _, err := buildAnnouncements(net.HardwareAddr{1, 2, 3}, []netip.Prefix{v4}); err == nil {
		t.Error("a 3-byte hardware address was accepted")
	}
}

func TestConfigNormalize(t *testing.T) {
	good := Config{Interface: "eth0", VIPs: []netip.Prefix{netip.MustParsePrefix("10.0.0.100/24")}}
	c, err := good.normalize()
	if err != nil {
		t.Fatal(err)
	}
	if c.Repeat != DefaultRepeat || c.SecondBurstDelay != DefaultSecondBurstDelay || c.CheckInterval != DefaultCheckInterval ||
		c.Interval != 0 || c.Refresh != 0 {
		t.Errorf("defaults: %+v", c)
	}
	off := good
	off.SecondBurstDelay, off.CheckInterval = Disabled, Disabled
	if c, err := off.normalize(); err != nil || c.SecondBurstDelay > 0 || c.CheckInterval > 0 {
		t.Errorf("Disabled: %+v, %v", c, err)
	}
	labelled := good
	labelled.Label = "eth0:vip"
	if _, err := labelled.normalize(); err != nil {
		t.Errorf("label eth0:vip refused: %v", err)
	}

	for _, tc := range []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"no interface", func(c *Config) { c.Interface = "" }, "interface name is empty"},
		{"long interface", func(c *Config) { c.Interface = "abcdefghijklmnop" }, "not a valid Linux interface name"},
		{"no VIPs", func(c *Config) { c.VIPs = nil }, "no VIPs"},
		{"zero prefix", func(c *Config) { c.VIPs = []netip.Prefix{{}} }, "not a valid prefix"},
		{"duplicate", func(c *Config) {
			c.VIPs = append(c.VIPs, netip.MustParsePrefix("10.0.0.100/32"))
		}, "listed twice"},
		{"mapped", func(c *Config) { c.VIPs = []netip.Prefix{netip.MustParsePrefix("::ffff:10.0.0.1/128")} }, "IPv4-mapped"},
		{"multicast", func(c *Config) { c.VIPs = []netip.Prefix{netip.MustParsePrefix("224.0.0.18/32")} }, "not a unicast"},
		{"link-local", func(c *Config) { c.VIPs = []netip.Prefix{netip.MustParsePrefix("fe80::1/64")} }, "not a unicast"},
		{"bad label", func(c *Config) { c.Label = "eth1:x" }, "label"},
		{"label v6 only", func(c *Config) {
			c.Label = "eth0:x"
			c.VIPs = []netip.Prefix{netip.MustParsePrefix("fd00::1/64")}
		}, "IPv4 VIPs only"},
		{"negative repeat", func(c *Config) { c.Repeat = -1 }, "repeat"},
		{"negative interval", func(c *Config) { c.Interval = -time.Second }, "interval"},
		{"bad second delay", func(c *Config) { c.SecondBurstDelay = -2 * time.Second }, "second burst delay"},
		{"tiny refresh", func(c *Config) { c.Refresh = time.Millisecond }, "refresh"},
		{"bad check", func(c *Config) { c.CheckInterval = -5 }, "check interval"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := good
			c.VIPs = append([]netip.Prefix(nil), good.VIPs...)
			tc.mod(&c)
			_, err := c.normalize()
			if err == nil {
				t.Fatal("accepted")
			}
			if !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("error %v is not ErrInvalidConfig", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	_, err := New(Config{}, nil)
	if !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("New(Config{}) = %v, want ErrInvalidConfig", err)
	}
}
