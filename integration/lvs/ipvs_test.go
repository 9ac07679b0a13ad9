package lvs_test

import (
	"errors"
	"fmt"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/hadirector/hadirector/integration/lvs"
	"github.com/hadirector/hadirector/internal/ipvs"
)

// TestIPVSByHand proves the bed with the kernel's IPVS, programmed by hand
// with ipvsadm (no daemon): rr over rs1..rs3 spreads the client's requests
// evenly over all three by the VIP, in NAT and in DR; after `ipvsadm -e
// ... -w 0` on rs2 only rs1 and rs3 answer; and internal/ipvs reads back
// what ipvsadm wrote. A long-lived connection to the echo port survives
// weight 0 on its server and breaks (then reconnects elsewhere) when the
// server is killed.
func TestIPVSByHand(t *testing.T) {
	lvs.NeedIPVS(t)
	for _, mode := range modes {
		t.Run(string(mode), func(t *testing.T) {
			ctx := scenarioContext(t)
			b := lvs.New(t, lvs.Options{Mode: mode})
			if err := b.AddVIP(b.LB1()); err != nil {
				t.Fatal(err)
			}
			vip := b.VIPPort(lvs.HTTPPort)
			fwd := map[lvs.Mode]string{lvs.NAT: "-m", lvs.DR: "-g"}[mode]
			if _, err := b.Ipvsadm(ctx, "-A", "-t", vip, "-s", "rr"); err != nil {
				t.Fatal(err)
			}
			for i := range b.RealNames() {
				rs := fmt.Sprintf("%s:%d", b.RealAddr(i+1), lvs.HTTPPort)
				if _, err := b.Ipvsadm(ctx, "-a", "-t", vip, "-r", rs, fwd, "-w", "1"); err != nil {
					t.Fatal(err)
				}
			}

			all := b.RealNames()
			if tally := b.Tally(ctx, vip, 30); !balanced(tally, all...) {
				t.Errorf("rr over %s: %v; want 10 each, no errors", describe(all...), tally)
			} else {
				t.Logf("rr over %s: %v", describe(all...), tally)
			}

			// What internal/ipvs sees is what ipvsadm wrote.
			table, err := b.IPVSTable(b.LB1())
			if err != nil {
				t.Fatal(err)
			}
			key := ipvs.Service{Protocol: ipvs.TCP, Addr: netip.MustParseAddrPort(vip)}.Key()
			svc, ok := table.Service(key)
			if !ok || svc.Scheduler != "rr" || table.Len() != 1 {
				t.Fatalf("IPVS table in lb1:\n%v\nwant one rr service %s", table, key)
			}
			wantFwd := map[lvs.Mode]ipvs.Forwarding{lvs.NAT: ipvs.NAT, lvs.DR: ipvs.DR}[mode]
			dests := table.Dests(key)
			if len(dests) != len(all) {
				t.Errorf("%d destinations, want %d:\n%v", len(dests), len(all), table)
			}
			for _, d := range dests {
				if d.Forwarding != wantFwd || d.Weight != 1 {
					t.Errorf("destination %v: want %v, weight 1", d, wantFwd)
				}
			}

			// Weight 0 on rs2: no new connections for it.
			rs2 := fmt.Sprintf("%s:%d", b.RealAddr(2), lvs.HTTPPort)
			if _, err := b.Ipvsadm(ctx, "-e", "-t", vip, "-r", rs2, fwd, "-w", "0"); err != nil {
				t.Fatal(err)
			}
			if tally := b.Tally(ctx, vip, 30); !balanced(tally, "rs1", "rs3") {
				t.Errorf("rs2 at weight 0: %v; want rs1 and rs3 15 each, no errors", tally)
			} else {
				t.Logf("rs2 at weight 0: %v", tally)
			}

			// A long-lived connection through the VIP to the echo port:
			// weight 0 on its server leaves it alone (drain); killing the
			// server breaks it, and the reconnection goes elsewhere.
			echo := b.VIPPort(lvs.EchoPort)
			if _, err := b.Ipvsadm(ctx, "-A", "-t", echo, "-s", "rr"); err != nil {
				t.Fatal(err)
			}
			for i := range b.RealNames() {
				rs := fmt.Sprintf("%s:%d", b.RealAddr(i+1), lvs.EchoPort)
				if _, err := b.Ipvsadm(ctx, "-a", "-t", echo, "-r", rs, fwd, "-w", "1"); err != nil {
					t.Fatal(err)
				}
			}
			s, err := b.StartStream(ctx, echo, 20*time.Millisecond)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Stop()
			first := s.Report().Server()
			addr, ok := b.ServerAddr(first)
			if !ok {
				t.Fatalf("the stream is answered by %q, not a real server", first)
			}
			if _, err := b.Ipvsadm(ctx, "-e", "-t", echo, "-r", fmt.Sprintf("%s:%d", addr, lvs.EchoPort), fwd, "-w", "0"); err != nil {
				t.Fatal(err)
			}
			n := s.Report().Answered
			waitFor(ctx, t, "10 more echo answers", func() bool { return s.Report().Answered >= n+10 })
			if rep := s.Report(); len(rep.Breaks) != 0 || len(rep.Servers) != 1 {
				t.Errorf("weight 0 on %s broke its established connection: %v", first, rep)
			}
			b.Server(first).Kill()
			waitFor(ctx, t, "the stream to reconnect", func() bool { return len(s.Report().Servers) == 2 })
			rep := s.Stop()
			t.Logf("stream: %v", rep)
			if len(rep.Breaks) != 1 || !errors.Is(rep.Breaks[0].Err, syscall.ECONNRESET) || rep.Server() == first {
				t.Errorf("after killing %s: %v; want one break by a reset and a new connection to another server", first, rep)
			}

			if out, err := b.Ipvsadm(ctx, "-Ln"); err == nil {
				t.Logf("ipvsadm -Ln in lb1:\n%s", out)
			}
		})
	}
}
