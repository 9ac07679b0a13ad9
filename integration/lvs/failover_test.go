package lvs_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/hadirector/hadirector/integration/lvs"
	"github.com/hadirector/hadirector/internal/ipvs"
)

// TestFailoverKeepsConnections is the connection-sync promise on the real
// kernel: two directors (DR, then NAT with the real servers' gateway in a
// sync group with the VIP), N long-lived TCP connections through the VIP
// exchanging numbered lines; the master's daemon is SIGKILLed and its link
// cut; the backup takes over, and the connections older than the sync
// window carry on with no reset and no lost line. The negative control is
// the same run without [sync]: then the connections break (the new master
// has no entry for them and its own stack answers RST), so the test can
// fail. A planned switchover (SIGTERM of the master) loses no synced
// connection.
//
// HADIRECTOR_FAILOVER_CONNS sets N (default 1000).
func TestFailoverKeepsConnections(t *testing.T) {
	lvs.NeedIPVS(t)
	lvs.DaemonBinary(t)
	n := 1000
	if v, err := strconv.Atoi(os.Getenv("HADIRECTOR_FAILOVER_CONNS")); err == nil && v > 0 {
		n = v
	}
	for _, tc := range []struct {
		name     string
		mode     lvs.Mode
		sync     bool
		graceful bool // a planned switchover: SIGTERM, links stay
	}{
		{"dr sync", lvs.DR, true, false}, {"dr no sync (negative control)", lvs.DR, false, false},
		{"nat sync", lvs.NAT, true, false}, {"nat no sync (negative control)", lvs.NAT, false, false},
		{"dr sync graceful stop", lvs.DR, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
			defer cancel()
			b := lvs.New(t, lvs.Options{Mode: tc.mode, Directors: 2})
			extra := ""
			if tc.sync {
				extra = "[sync]\ninterface = \"eth0\""
			}
			d1, d2 := startPair(ctx, t, b, lvs.ConfigOptions{Extra: extra})

			// N connections, one line a second each.
			start := time.Now()
			streams, err := b.OpenStreams(ctx, b.VIPPort(lvs.EchoPort), n, time.Second, 0)
			if err != nil {
				t.Fatalf("opening %d connections: %v", n, err)
			}
			defer lvs.StopStreams(streams)
			t.Logf("%d connections open in %v", n, time.Since(start).Round(time.Millisecond))
			// Older than the sync window: the kernel sends a lone entry 2–3 s
			// after it is queued.
			time.Sleep(4 * time.Second)
			synced := conns(ctx, t, b, 1)
			t.Logf("before the failover: lb1 holds %d connections, lb2 %d synced", conns(ctx, t, b, 0), synced)

			killed := time.Now()
			if tc.graceful {
				if err := d1.Stop(10 * time.Second); err != nil {
					t.Fatal(err)
				}
			} else {
				d1.Kill()
				for _, ifname := range []string{"eth0", "eth1"}[:map[lvs.Mode]int{lvs.DR: 1, lvs.NAT: 2}[tc.mode]] {
					if err := lvs.SetLinkUp(b.LBs[0], ifname, false); err != nil {
						t.Fatal(err)
					}
				}
			}
			if _, err := d2.WaitState(ctx, lvs.InstanceName, "MASTER"); err != nil {
				t.Fatal(err)
			}
			t.Logf("lb2 MASTER %v after the stop", time.Since(killed).Round(time.Millisecond))
			// Every connection sends a few lines through the new master.
			time.Sleep(5 * time.Second)

			broken := 0
			reasons := map[string]int{}
			sent, answered := 0, 0
			for _, s := range streams {
				r := s.Report()
				sent += r.Sent
				answered += r.Answered
				if len(r.Breaks) > 0 {
					broken++
					reasons[lvs.BreakReason(r.Breaks[0].Err)]++
				}
			}
			survived := float64(n-broken) / float64(n)
			t.Logf("%d of %d connections survived (%.2f %%); lines sent %d, answered %d; breaks by reason: %v",
				n-broken, n, 100*survived, sent, answered, reasons)
			fmt.Printf("failover (%s): %d of %d connections survived (%.2f %%), lb2 had %d synced before the kill; breaks: %v\n",
				tc.name, n-broken, n, 100*survived, synced, reasons)
			if tc.graceful && broken > 0 {
				t.Errorf("a planned switchover broke %d synced connections; want none", broken)
			}
			if tc.sync && survived < 0.999 {
				t.Errorf("with sync, %.2f %% of the connections survived; want at least 99.9 %%", 100*survived)
			}
			if !tc.sync && survived > 0.5 {
				t.Errorf("without sync, %.2f %% survived: the negative control shows nothing", 100*survived)
			}
		})
	}
}

// startPair starts the daemon in lb1 and lb2 of a two-director bed with
// the bed's cluster file shaped by c (e.g. Extra: a [sync] section) plus
// the echo service and checks that hold under the load of thousands of
// connections in an emulated VM (100 ms timeouts flap there, and a service
// whose servers all look down refuses new connections). It returns once
// lb1 is MASTER, lb2 BACKUP, and both have the echo service up.
func startPair(ctx context.Context, t *testing.T, b *lvs.Bed, c lvs.ConfigOptions) (d1, d2 *lvs.Daemon) {
	t.Helper()
	cfg := pairConfig(b, c)
	d1 = b.StartDaemon(ctx, t, b.LBs[0], cfg)
	d2 = b.StartDaemon(ctx, t, b.LBs[1], cfg)
	if _, err := d1.WaitState(ctx, lvs.InstanceName, "MASTER"); err != nil {
		t.Fatal(err)
	}
	if _, err := d2.WaitState(ctx, lvs.InstanceName, "BACKUP"); err != nil {
		t.Fatal(err)
	}
	for _, lb := range b.LBs {
		waitWeightsOn(ctx, t, b, lb, echoKey(b), "the echo service up", allAt(b, lvs.EchoPort, 1))
	}
	return d1, d2
}

// pairConfig is startPair's cluster file: c with the echo service and
// checks that hold under the load of a thousand connections in an
// emulated VM (100 ms timeouts flap there).
func pairConfig(b *lvs.Bed, c lvs.ConfigOptions) string {
	// 1 s adverts unless the test asks otherwise: under the load of a
	// thousand connections the emulated VM stalls a director for a few
	// hundred milliseconds at times, and with 100 ms adverts the backup
	// then takes over falsely (seen in CI: a split brain during the run
	// cost 71 connections). A killed master is still noticed at once, by
	// the liveness connection its kernel closes.
	if c.AdvertInterval == "" {
		c.AdvertInterval = "1s"
	}
	c.EchoService = true
	c.Check = "type = \"http\"\npath = \"/health\"\ninterval = \"1s\"\ntimeout = \"900ms\"\nfall = 3"
	c.EchoCheck = "type = \"tcp\"\ninterval = \"1s\"\ntimeout = \"900ms\"\nfall = 3"
	return b.Config(c)
}

func echoKey(b *lvs.Bed) ipvs.ServiceKey {
	return ipvs.Service{Protocol: ipvs.TCP, Addr: netip.MustParseAddrPort(b.VIPPort(lvs.EchoPort))}.Key()
}

// conns counts the IPVS connection entries of director i (ipvsadm -Lnc).
func conns(ctx context.Context, t *testing.T, b *lvs.Bed, i int) int {
	t.Helper()
	n, err := lvs.Established(ctx, b.LBs[i])
	if err != nil {
		t.Logf("lb%d: %v", i+1, err)
		return -1
	}
	return n
}
