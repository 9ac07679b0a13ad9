package lvs_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hadirector/hadirector/integration/lvs"
	"github.com/hadirector/hadirector/internal/control"
)

// TestFailbackWaitsUntilCaughtUp is the caught-up gate on the real kernel.
// lb1 (priority 150) is master with "old" connections; its daemon is
// killed and its link cut; lb2 takes over and "new" connections are made
// through lb2 only. Then lb1's link comes back and its daemon restarts: it
// outranks lb2 and preempts. Its kernel already holds the old connections;
// the new ones reach it only when lb2's master sync daemon sends them again
// (every 50 inbound packets with the kernel's default sync_threshold).
//
//   - With the gate (catch_up = 1), lb1 waits until its table holds as many
//     connections as lb2's, then takes over: every connection survives.
//   - Without it (catch_up = 0, the negative control), lb1 preempts after
//     Master_Down_Interval (3.4 s) and the new connections it has no entry for
//     break (its stack answers RST): so the test can fail.
func TestFailbackWaitsUntilCaughtUp(t *testing.T) {
	lvs.NeedIPVS(t)
	lvs.DaemonBinary(t)
	const nOld, nNew = 50, 150
	for _, tc := range []struct {
		name string
		gate bool
	}{{"gate", true}, {"no gate (negative control)", false}} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
			defer cancel()
			b := lvs.New(t, lvs.Options{Mode: lvs.DR, Directors: 2})
			catchUp := "0"
			if tc.gate {
				catchUp = "1"
			}
			// 1 s adverts: a loaded emulated VM stalls for a few hundred
			// ms at times, and a 100 ms interval then looks like a dead
			// master.
			c := lvs.ConfigOptions{AdvertInterval: "1s",
				Extra: fmt.Sprintf("[sync]\ninterface = \"eth0\"\ncatch_up = %s\ncatch_up_timeout = \"90s\"\npeer_interval = \"200ms\"", catchUp)}
			d1, d2 := startPair(ctx, t, b, c)
			// A line every 500 ms: 2 to 4 inbound packets a second, so lb2
			// re-sends each connection every 12 to 25 s (50 packets), and
			// lb1, preempting 3.4 s after it starts (Master_Down_Interval),
			// finds most new connections missing without the gate.
			const every = 500 * time.Millisecond
			old := openStreams(ctx, t, b, nOld, every)
			defer lvs.StopStreams(old)
			time.Sleep(4 * time.Second) // older than the sync window: lb2 has them
			// lb2's passive decoder heard lb1's sync messages, and lb2 holds
			// lb1's state and programs its verdicts.
			if st, err := d2.Status(ctx); err != nil {
				t.Fatal(err)
			} else if dc, p := st.Sync.Decoder, st.Sync.Peer; dc == nil || dc.Entries < nOld || p == nil || !p.Up || !p.PeerMaster || !p.Following || !p.SameEpoch {
				t.Fatalf("lb2's sync status: decoder %+v, peer %+v; want >= %d entries decoded and lb1's state followed", dc, p, nOld)
			} else {
				t.Logf("lb2 decoded %d messages, %d entries; peer channel: lb1 master with %d connections", dc.Messages, dc.Entries, p.PeerConns)
			}

			d1.Kill()
			if err := lvs.SetLinkUp(b.LBs[0], "eth0", false); err != nil {
				t.Fatal(err)
			}
			if _, err := d2.WaitState(ctx, lvs.InstanceName, "MASTER"); err != nil {
				t.Fatal(err)
			}
			fresh := openStreams(ctx, t, b, nNew, every)
			defer lvs.StopStreams(fresh)
			time.Sleep(time.Second)
			t.Logf("lb1 (away) holds %d connections, lb2 %d", conns(ctx, t, b, 0), conns(ctx, t, b, 1))

			if err := lvs.SetLinkUp(b.LBs[0], "eth0", true); err != nil {
				t.Fatal(err)
			}
			back := time.Now()
			d1 = b.StartDaemon(ctx, t, b.LBs[0], pairConfig(b, c))
			var gateSeen string
			st, err := d1.WaitStatus(ctx, func(st *control.Status) bool {
				if st.Sync != nil && st.Sync.Peer != nil && st.Sync.Peer.Holding {
					gateSeen = st.Sync.Peer.Gate
				}
				in := lvs.Instance(st, lvs.InstanceName)
				return in != nil && in.State == "MASTER"
			})
			if err != nil {
				t.Fatal(err)
			}
			took := time.Since(back)
			gate := ""
			if st.Sync != nil && st.Sync.Peer != nil {
				gate = st.Sync.Peer.Gate
			}
			t.Logf("lb1 MASTER again %v after its restart; gate while shut: %q; gate now: %q", took.Round(time.Millisecond), gateSeen, gate)
			time.Sleep(3 * time.Second) // every connection sends lines through lb1

			brokenOld, why := breaks(old)
			brokenNew, whyNew := breaks(fresh)
			for k, v := range whyNew {
				why[k] += v
			}
			fmt.Printf("failback (%s): lb1 master again after %v; old connections broken %d of %d, new %d of %d; breaks: %v\n",
				tc.name, took.Round(time.Millisecond), brokenOld, nOld, brokenNew, nNew, why)
			if tc.gate {
				if brokenOld+brokenNew > 0 {
					t.Errorf("with the gate, %d old and %d new connections broke at failback: %v", brokenOld, brokenNew, why)
				}
				if gateSeen == "" || !strings.Contains(d1.Output(), `why="caught up:`) {
					t.Errorf("the gate was never seen shut (%q) or did not open as caught up (log has no \"caught up\"; gate now %q)", gateSeen, gate)
				}
			} else if brokenNew < nNew/2 {
				t.Errorf("without the gate only %d of %d new connections broke: the negative control shows nothing", brokenNew, nNew)
			}
		})
	}
}

// openStreams opens n long-lived connections through the echo service.
func openStreams(ctx context.Context, t *testing.T, b *lvs.Bed, n int, every time.Duration) []*lvs.Stream {
	t.Helper()
	streams, err := b.OpenStreams(ctx, b.VIPPort(lvs.EchoPort), n, every, 0)
	if err != nil {
		t.Fatalf("opening %d connections: %v", n, err)
	}
	return streams
}

// breaks counts the streams that broke, by reason.
func breaks(ss []*lvs.Stream) (int, map[string]int) {
	n, why := 0, map[string]int{}
	for _, s := range ss {
		if r := s.Report(); len(r.Breaks) > 0 {
			n++
			why[lvs.BreakReason(r.Breaks[0].Err)]++
		}
	}
	return n, why
}
