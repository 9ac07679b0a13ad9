package director

import (
	"io"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/hadirector/hadirector/internal/vrrp"
)

// FuzzReceive feeds arbitrary bytes to the engine's receive path, both as a
// VRRP socket payload and as a link envelope: whatever arrives is dropped
// and counted or acted on, never a panic, and garbage never moves a backup.
func FuzzReceive(f *testing.F) {
	a := vrrp.Advert{Version: 3, VRID: 51, Priority: 200, Interval: 20 * time.Millisecond, Addrs: []netip.Addr{netip.MustParseAddr("10.0.0.100")}}
	src, group := netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("224.0.0.18")
	good, _ := a.Marshal(src, group)
	env, _ := advertEnvelope("VI_1", src, group, &a)
	f.Add(good, false)
	resign := a
	resign.Priority = 0 // acted on by moving the takeover, not by a master
	zero, _ := resign.Marshal(src, group)
	f.Add(zero, false)
	f.Add(env, true)
	f.Add(keepalive(), true)
	f.Add([]byte{}, false)
	f.Fuzz(func(t *testing.T, payload []byte, viaLink bool) {
		n := &fakeNet{engines: map[netip.Addr]*Engine{}}
		tl := &timeline{held: map[string]bool{}}
		sock := &fakeSocket{net: n, src: netip.MustParseAddr("10.0.0.1")}
		e, err := New(parse(t, pairCluster), "lb1", "fuzz", slog.New(slog.NewTextHandler(io.Discard, nil)), Options{
			Instances: map[string]InstanceIO{"VI_1": {Socket: sock, VIPs: &fakeVIPs{name: "lb1", tl: tl}, Links: []string{"hb"}}},
		})
		if err != nil {
			t.Fatal(err)
		}
		s := e.st
		now := time.Now()
		in := s.instances[0]
		e.apply(s, in, in.machine.Step(vrrp.Start{}, now), now)
		p := Packet{Interface: "eth0", Src: src, Dst: group, Payload: payload}
		if viaLink {
			p = Packet{Link: "hb", Payload: payload}
		}
		before := in.machine.NextDeadline()
		e.receive(s, p)
		if in.machine.State() != vrrp.Backup {
			t.Fatalf("a received packet moved a fresh backup to %s", in.machine.State())
		}
		dropped := uint64(0)
		for _, c := range s.drops {
			dropped += c
		}
		// Acted on: a master accepted, or the takeover moved (priority 0).
		accepted := in.machine.MasterAddr().IsValid() || !in.machine.NextDeadline().Equal(before)
		if !accepted && dropped == 0 && !(viaLink && len(payload) >= 3 && payload[0] == envelopeVersion && payload[1] == envelopeKeepalive) &&
			in.machine.Stats() == (vrrp.Stats{}) {
			t.Fatalf("packet neither accepted, counted as a drop, nor a keepalive: %x", payload)
		}
	})
}
