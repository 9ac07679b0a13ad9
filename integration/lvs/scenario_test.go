package lvs_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hadirector/hadirector/integration/lvs"
	"github.com/hadirector/hadirector/integration/netlab"
	"github.com/hadirector/hadirector/internal/control"
	"github.com/hadirector/hadirector/internal/ipvs"
)

// The daemon's LVS promises, on the real kernel (in the VM): clients reach
// only healthy real servers, a killed server leaves within fall × interval
// + timeout and comes back when revived, losing quorum switches to the
// sorry server and back, a hand-made change to IPVS is put back, an
// operator's drain holds across a reload, and a reload keeps a long-lived
// connection through a service it does not change.

// httpService is the key of the bed's HTTP service in IPVS.
func httpService(b *lvs.Bed) ipvs.ServiceKey {
	return ipvs.Service{Protocol: ipvs.TCP, Addr: netip.MustParseAddrPort(b.VIPPort(lvs.HTTPPort))}.Key()
}

func realAddr(b *lvs.Bed, i, port int) netip.AddrPort {
	return netip.AddrPortFrom(b.RealAddr(i), uint16(port))
}

// weights reads the kernel's weights of a service's destinations, by
// address ("absent" destinations are missing from the map).
func weights(t *testing.T, b *lvs.Bed, key ipvs.ServiceKey) map[netip.AddrPort]int {
	t.Helper()
	return weightsOn(t, b, b.LB1(), key)
}

func weightsOn(t *testing.T, b *lvs.Bed, director *netlab.Node, key ipvs.ServiceKey) map[netip.AddrPort]int {
	t.Helper()
	if _, err := b.Kernel(director); err != nil {
		t.Fatal(err)
	}
	w, _ := b.Weights(director, key) // nil while the service is not there yet
	return w
}

// waitWeights polls the kernel until ok accepts the weights; it returns
// how long that took.
func waitWeights(ctx context.Context, t *testing.T, b *lvs.Bed, key ipvs.ServiceKey, what string, ok func(map[netip.AddrPort]int) bool) time.Duration {
	t.Helper()
	return waitWeightsOn(ctx, t, b, b.LB1(), key, what, ok)
}

func waitWeightsOn(ctx context.Context, t *testing.T, b *lvs.Bed, director *netlab.Node, key ipvs.ServiceKey, what string, ok func(map[netip.AddrPort]int) bool) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		w := weightsOn(t, b, director, key)
		if ok(w) {
			return time.Since(start)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s's kernel never showed %s; weights now %v", director.Name(), what, w)
		case <-time.After(time.Millisecond):
		}
	}
}

// startMaster starts the daemon in lb1 and waits until it is MASTER and
// has programmed the HTTP service with every real server at weight 1.
func startMaster(ctx context.Context, t *testing.T, b *lvs.Bed, cfg string) *lvs.Daemon {
	t.Helper()
	d := b.StartDaemon(ctx, t, b.LB1(), cfg)
	if _, err := d.WaitState(ctx, lvs.InstanceName, "MASTER"); err != nil {
		t.Fatal(err)
	}
	return d
}

func allAt(b *lvs.Bed, port, weight int) func(map[netip.AddrPort]int) bool {
	return func(w map[netip.AddrPort]int) bool {
		for i := range b.RealNames() {
			if v, ok := w[realAddr(b, i+1, port)]; !ok || v != weight {
				return false
			}
		}
		return true
	}
}

// TestHealthDrivesIPVS: all three servers answer; rs2 killed → weight 0
// in the kernel and no client request reaches it; revived → back.
func TestHealthDrivesIPVS(t *testing.T) {
	lvs.NeedIPVS(t)
	lvs.DaemonBinary(t)
	for _, mode := range modes {
		t.Run(string(mode), func(t *testing.T) {
			ctx := scenarioContext(t)
			b := lvs.New(t, lvs.Options{Mode: mode})
			d := startMaster(ctx, t, b, b.Config(lvs.ConfigOptions{}))
			svc, vip := httpService(b), b.VIPPort(lvs.HTTPPort)
			waitWeights(ctx, t, b, svc, "every real server at weight 1", allAt(b, lvs.HTTPPort, 1))
			if tally, ok := b.WaitTally(ctx, vip, 30, func(tl lvs.Tally) bool { return balanced(tl, "rs1", "rs2", "rs3") }); !ok {
				t.Fatalf("before the failure: %v; want rs1, rs2, rs3 evenly", tally)
			}

			// fall 2 × interval 200ms + timeout 100ms = 500ms.
			rs2 := realAddr(b, 2, lvs.HTTPPort)
			b.Server("rs2").Kill()
			took := waitWeights(ctx, t, b, svc, "rs2 at weight 0", func(w map[netip.AddrPort]int) bool { return w[rs2] == 0 })
			t.Logf("rs2 killed → weight 0 in the kernel after %v (bound: fall×interval+timeout = 500ms)", took.Round(time.Millisecond))
			if tally := b.Tally(ctx, vip, 30); !balanced(tally, "rs1", "rs3") {
				t.Errorf("with rs2 down: %v; want only rs1 and rs3, evenly, no errors", tally)
			}
			st, err := d.Status(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if r := st.Services[0].RealServers[1]; r.Health != "down" || r.EffectiveWeight != 0 || !r.InTable || r.Detail == "" {
				t.Errorf("status of rs2: %+v; want health down, weight 0, in the table, a reason", r)
			}

			if err := b.Server("rs2").Revive(); err != nil {
				t.Fatal(err)
			}
			took = waitWeights(ctx, t, b, svc, "rs2 back at weight 1", allAt(b, lvs.HTTPPort, 1))
			t.Logf("rs2 revived → weight 1 after %v (rise 1 × interval 200ms)", took.Round(time.Millisecond))
			if tally := b.Tally(ctx, vip, 30); !balanced(tally, "rs1", "rs2", "rs3") {
				t.Errorf("after revival: %v; want rs1, rs2, rs3 evenly", tally)
			}
		})
	}
}

// TestBothDirectorsProgram: the backup keeps IPVS as the master does, so a
// failover only moves the VIP.
func TestBothDirectorsProgram(t *testing.T) {
	lvs.NeedIPVS(t)
	lvs.DaemonBinary(t)
	ctx := scenarioContext(t)
	b := lvs.New(t, lvs.Options{Mode: lvs.DR, Directors: 2})
	cfg := b.Config(lvs.ConfigOptions{})
	d1 := b.StartDaemon(ctx, t, b.LBs[0], cfg)
	d2 := b.StartDaemon(ctx, t, b.LBs[1], cfg)
	if _, err := d1.WaitState(ctx, lvs.InstanceName, "MASTER"); err != nil {
		t.Fatal(err)
	}
	if _, err := d2.WaitState(ctx, lvs.InstanceName, "BACKUP"); err != nil {
		t.Fatal(err)
	}
	svc := httpService(b)
	rs2 := realAddr(b, 2, lvs.HTTPPort)
	for _, lb := range b.LBs {
		waitWeightsOn(ctx, t, b, lb, svc, "every real server at weight 1", allAt(b, lvs.HTTPPort, 1))
	}
	b.Server("rs2").Kill()
	for _, lb := range b.LBs {
		waitWeightsOn(ctx, t, b, lb, svc, "rs2 at 0", func(w map[netip.AddrPort]int) bool { return w[rs2] == 0 })
	}
	if ok, _ := lvs.HasAddr(b.LBs[1], "eth0", b.VIP()); ok {
		t.Error("the backup holds the VIP")
	}
}

// TestRemovePolicy: with on_failure = "remove" a failed server leaves the
// table and comes back when healthy.
func TestRemovePolicy(t *testing.T) {
	lvs.NeedIPVS(t)
	lvs.DaemonBinary(t)
	ctx := scenarioContext(t)
	b := lvs.New(t, lvs.Options{Mode: lvs.NAT})
	startMaster(ctx, t, b, b.Config(lvs.ConfigOptions{ServiceExtra: `on_failure = "remove"`}))
	svc := httpService(b)
	waitWeights(ctx, t, b, svc, "every real server at weight 1", allAt(b, lvs.HTTPPort, 1))
	rs3 := realAddr(b, 3, lvs.HTTPPort)
	b.Server("rs3").SetHealthy(false) // /health answers 503: an HTTP check failure
	waitWeights(ctx, t, b, svc, "rs3 removed", func(w map[netip.AddrPort]int) bool { _, in := w[rs3]; return len(w) == 2 && !in })
	if tally := b.Tally(ctx, b.VIPPort(lvs.HTTPPort), 20); !balanced(tally, "rs1", "rs2") {
		t.Errorf("with rs3 removed: %v", tally)
	}
	b.Server("rs3").SetHealthy(true)
	waitWeights(ctx, t, b, svc, "rs3 back", allAt(b, lvs.HTTPPort, 1))
}

// TestQuorumSorryServer: quorum 2 of three weight-1 servers; two killed →
// the sorry server answers every request; one revived → back to the real
// servers, sorry server gone from the table.
func TestQuorumSorryServer(t *testing.T) {
	lvs.NeedIPVS(t)
	lvs.DaemonBinary(t)
	for _, mode := range modes {
		t.Run(string(mode), func(t *testing.T) {
			ctx := scenarioContext(t)
			b := lvs.New(t, lvs.Options{Mode: mode, Sorry: true})
			hookDir := t.TempDir()
			hookLog := filepath.Join(hookDir, "events")
			hook := filepath.Join(hookDir, "notify")
			script := "#!/bin/bash\necho \"$1|$2|$3|$4|$HADIRECTOR_REAL\" >> " + hookLog + "\n"
			if err := os.WriteFile(hook, []byte(script), 0o755); err != nil {
				t.Fatal(err)
			}
			d := startMaster(ctx, t, b, b.Config(lvs.ConfigOptions{SorryServer: true, Quorum: 2, ServiceExtra: fmt.Sprintf("notify = %q", hook)}))
			svc, vip := httpService(b), b.VIPPort(lvs.HTTPPort)
			waitWeights(ctx, t, b, svc, "every real server at weight 1", allAt(b, lvs.HTTPPort, 1))
			sorry := netip.AddrPortFrom(b.SorryAddr(), lvs.HTTPPort)
			if _, in := weights(t, b, svc)[sorry]; in {
				t.Fatal("sorry server in the table while the quorum holds")
			}

			b.Server("rs1").Kill()
			waitWeights(ctx, t, b, svc, "rs1 at 0", func(w map[netip.AddrPort]int) bool { return w[realAddr(b, 1, lvs.HTTPPort)] == 0 })
			if tally := b.Tally(ctx, vip, 20); !balanced(tally, "rs2", "rs3") {
				t.Errorf("one down, quorum holds (live 2 ≥ 2): %v", tally)
			}
			b.Server("rs2").Kill()
			waitWeights(ctx, t, b, svc, "the sorry server in", func(w map[netip.AddrPort]int) bool { return w[sorry] == 1 && w[realAddr(b, 3, lvs.HTTPPort)] == 0 })
			if tally := b.Tally(ctx, vip, 20); !tally.Only("sorry") || tally.Errors > 0 {
				t.Errorf("below quorum: %v; want every request on the sorry server", tally)
			}
			st, err := d.Status(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if s := st.Services[0]; s.QuorumUp || !s.SorryActive || s.LiveWeight != 1 {
				t.Errorf("status below quorum: quorum_up %v sorry_active %v live %d", s.QuorumUp, s.SorryActive, s.LiveWeight)
			}

			if err := b.Server("rs1").Revive(); err != nil {
				t.Fatal(err)
			}
			waitWeights(ctx, t, b, svc, "the sorry server out", func(w map[netip.AddrPort]int) bool {
				_, in := w[sorry]
				return !in && w[realAddr(b, 1, lvs.HTTPPort)] == 1 && w[realAddr(b, 3, lvs.HTTPPort)] == 1
			})
			if tally := b.Tally(ctx, vip, 20); !balanced(tally, "rs1", "rs3") {
				t.Errorf("quorum regained: %v; want rs1 and rs3", tally)
			}
			// The service's notify program heard every transition, with
			// keepalived-style arguments: TYPE NAME STATE WEIGHT (the weight
			// the real server counts for; a service's live weight).
			r1, r2 := realAddr(b, 1, lvs.HTTPPort).String(), realAddr(b, 2, lvs.HTTPPort).String()
			want := []string{
				"REAL_SERVER|http " + r1 + "|DOWN|0|" + r1,
				"REAL_SERVER|http " + r2 + "|DOWN|0|" + r2,
				"SERVICE|http|DOWN|1|",
				"REAL_SERVER|http " + r1 + "|UP|1|" + r1,
				"SERVICE|http|UP|2|",
			}
			var got []string
			for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
				b, _ := os.ReadFile(hookLog)
				if got = strings.Split(strings.TrimSpace(string(b)), "\n"); len(got) >= len(want) {
					break
				}
			}
			// Hooks of one name run in order; different names (a real
			// server and its service) may finish in either order.
			slices.Sort(got)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Errorf("notify hook calls:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
		})
	}
}

// TestDriftRepair: entries deleted or changed with ipvsadm behind the
// daemon's back are put back within one reconcile period and counted; a
// service added by hand is left alone and reported.
func TestDriftRepair(t *testing.T) {
	lvs.NeedIPVS(t)
	lvs.DaemonBinary(t)
	ctx := scenarioContext(t)
	b := lvs.New(t, lvs.Options{Mode: lvs.NAT})
	d := startMaster(ctx, t, b, b.Config(lvs.ConfigOptions{Extra: "[ipvs]\nreconcile_period = \"300ms\""}))
	svc, vip := httpService(b), b.VIPPort(lvs.HTTPPort)
	waitWeights(ctx, t, b, svc, "every real server at weight 1", allAt(b, lvs.HTTPPort, 1))

	rs1, rs2 := realAddr(b, 1, lvs.HTTPPort).String(), realAddr(b, 2, lvs.HTTPPort).String()
	foreign := b.VIPPort(8080)
	start := time.Now()
	for _, args := range [][]string{
		{"-d", "-t", vip, "-r", rs1},
		{"-e", "-t", vip, "-r", rs2, "-m", "-w", "7"},
		{"-A", "-t", foreign, "-s", "wlc"},
	} {
		if out, err := b.Ipvsadm(ctx, args...); err != nil {
			t.Fatalf("ipvsadm %v: %v %s", args, err, out)
		}
	}
	waitWeights(ctx, t, b, svc, "the hand-made changes undone", allAt(b, lvs.HTTPPort, 1))
	t.Logf("drift repaired %v after the first ipvsadm command (reconcile_period 300ms; one ipvsadm run takes about 0.1 s here)", time.Since(start).Round(time.Millisecond))
	st, err := d.WaitStatus(ctx, func(st *control.Status) bool {
		return st.IPVS != nil && st.IPVS.Repairs >= 2 && len(st.IPVS.Unowned) > 0
	})
	if err != nil {
		t.Fatalf("status never showed 2 repairs and the foreign service: %v", err)
	}
	want := ipvs.Service{Protocol: ipvs.TCP, Addr: netip.MustParseAddrPort(foreign)}.Key().String()
	if len(st.IPVS.Unowned) != 1 || st.IPVS.Unowned[0] != want {
		t.Errorf("unowned services %v; want [%s]", st.IPVS.Unowned, want)
	}
	if out, _ := b.Ipvsadm(ctx, "-Ln", "-t", foreign); !strings.Contains(out, "wlc") {
		t.Errorf("the hand-made service is gone or changed:\n%s", out)
	}
}

// TestDrainAndReloadKeepConnections: a long-lived connection through the
// echo service survives (no break, no lost message) an operator's drain
// of its server (weight 0: no new connections there), a reload that keeps
// the drain while it adds, changes and removes other services, and enable.
func TestDrainAndReloadKeepConnections(t *testing.T) {
	lvs.NeedIPVS(t)
	bin := lvs.DaemonBinary(t)
	for _, mode := range modes {
		t.Run(string(mode), func(t *testing.T) {
			ctx := scenarioContext(t)
			b := lvs.New(t, lvs.Options{Mode: mode})
			base := lvs.ConfigOptions{EchoService: true}
			d := startMaster(ctx, t, b, b.Config(base))
			echo := ipvs.Service{Protocol: ipvs.TCP, Addr: netip.MustParseAddrPort(b.VIPPort(lvs.EchoPort))}.Key()
			waitWeights(ctx, t, b, echo, "the echo service up", allAt(b, lvs.EchoPort, 1))
			waitWeights(ctx, t, b, httpService(b), "the HTTP service up", allAt(b, lvs.HTTPPort, 1))

			stream, err := b.StartStream(ctx, b.VIPPort(lvs.EchoPort), 20*time.Millisecond)
			if err != nil {
				t.Fatal(err)
			}
			time.Sleep(200 * time.Millisecond)
			server := stream.Report().Server()
			if server == "" {
				t.Fatalf("the stream has no server: %v", stream.Report())
			}
			var drained netip.AddrPort
			for i, name := range b.RealNames() {
				if name == server {
					drained = realAddr(b, i+1, lvs.EchoPort)
				}
			}

			admin := func(args ...string) string {
				t.Helper()
				out, err := lvs.Run(ctx, b.LB1(), bin, append([]string{args[0], "--socket", d.Socket}, args[1:]...)...)
				if err != nil {
					t.Fatalf("hadirector %v: %v\n%s", args, err, out)
				}
				return out
			}
			admin("drain", "echo", drained.Addr().String())
			waitWeights(ctx, t, b, echo, server+" drained", func(w map[netip.AddrPort]int) bool { return w[drained] == 0 })

			// The reload: the HTTP service changes its scheduler and one
			// weight, a new service appears on 8080, the echo service is
			// untouched.
			next := base
			next.Scheduler = "wrr"
			next.Weights = map[string]int{"rs3": 2}
			next.EchoService = false
			cfg := b.Config(next) + echoServiceConfig(b, mode) + extraService(b, mode)
			if err := d.WriteConfig(cfg); err != nil {
				t.Fatal(err)
			}
			if err := d.Reload(); err != nil {
				t.Fatal(err)
			}
			st, err := d.WaitStatus(ctx, func(st *control.Status) bool { return st.Reloads == 1 })
			if err != nil {
				t.Fatal(err)
			}
			if lr := st.LastReload; lr == nil || !lr.Applied {
				t.Fatalf("reload not applied: %+v", st.LastReload)
			}
			t.Logf("reload changes: %v", st.LastReload.Changes)
			waitWeights(ctx, t, b, httpService(b), "the HTTP service changed", func(w map[netip.AddrPort]int) bool { return w[realAddr(b, 3, lvs.HTTPPort)] == 2 })
			extra := ipvs.Service{Protocol: ipvs.TCP, Addr: netip.MustParseAddrPort(b.VIPPort(8080))}.Key()
			waitWeights(ctx, t, b, extra, "the new service", func(w map[netip.AddrPort]int) bool { return len(w) == 3 })
			if w := weights(t, b, echo); w[drained] != 0 {
				t.Errorf("the drain did not survive the reload: %v", w)
			}
			var drainedStatus *control.RealStatus
			for i, s := range st.Services {
				if s.Name == "echo" {
					for j, r := range s.RealServers {
						if r.Address == drained.String() {
							drainedStatus = &st.Services[i].RealServers[j]
						}
					}
				}
			}
			if drainedStatus == nil || !drainedStatus.Drained || drainedStatus.State != "drained" {
				t.Errorf("status after reload: %+v; want %s drained", drainedStatus, drained)
			}
			admin("enable", "echo", drained.String())
			waitWeights(ctx, t, b, echo, "enabled again", allAt(b, lvs.EchoPort, 1))
			time.Sleep(200 * time.Millisecond)

			rep := stream.Stop()
			if len(rep.Breaks) > 0 || rep.Answered < rep.Sent-1 || rep.Server() != server {
				t.Errorf("the long-lived connection did not come through intact: %v", rep)
			} else {
				t.Logf("long-lived connection through drain, reload and enable: %v", rep)
			}
		})
	}
}

// echoServiceConfig is the echo service as the bed writes it (so that a
// reload that rewrites the rest leaves it identical).
func echoServiceConfig(b *lvs.Bed, mode lvs.Mode) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "\n[[virtual_service]]\nname = \"echo\"\naddress = %q\nscheduler = \"rr\"\nforwarding = %q\n[virtual_service.check]\n%s\n",
		b.VIPPort(lvs.EchoPort), mode, lvs.EchoCheck)
	for i := range b.RealNames() {
		fmt.Fprintf(&sb, "[[virtual_service.real_server]]\naddress = %q\n", realAddr(b, i+1, lvs.EchoPort).String())
	}
	return sb.String()
}

// extraService is a new service on VIP:8080 (DR cannot change the port, so
// it has no check and stays at the configured weight).
func extraService(b *lvs.Bed, mode lvs.Mode) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "\n[[virtual_service]]\nname = \"extra\"\naddress = %q\nscheduler = \"rr\"\nforwarding = %q\n", b.VIPPort(8080), mode)
	for i := range b.RealNames() {
		fmt.Fprintf(&sb, "[[virtual_service.real_server]]\naddress = %q\n", netip.AddrPortFrom(b.RealAddr(i+1), 8080).String())
	}
	return sb.String()
}

// TestSyncDaemons: with a [sync] section the daemon applies the sysctl
// profile in its namespace and runs both sync roles (mode "both"), as
// status and ipvsadm show; a graceful stop leaves them running (the
// kernel keeps syncing whatever happens to the daemon).
func TestSyncDaemons(t *testing.T) {
	lvs.NeedIPVS(t)
	lvs.DaemonBinary(t)
	ctx := scenarioContext(t)
	b := lvs.New(t, lvs.Options{Mode: lvs.DR})
	cfg := b.Config(lvs.ConfigOptions{Extra: "[sync]\ninterface = \"eth0\"\nsync_threshold = [0, 0]\nsync_refresh_period = \"10s\"\nsync_retries = 1"})
	d := startMaster(ctx, t, b, cfg)
	st, err := d.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sy := st.Sync
	if sy == nil || len(sy.Daemons) != 2 || sy.LastError != "" {
		t.Fatalf("sync status: %+v; want a master and a backup daemon", sy)
	}
	for k, v := range map[string]string{"sync_threshold": "0 0", "sync_refresh_period": "10", "sync_retries": "1", "backup_only": "0"} {
		if sy.Sysctls[k] != v {
			t.Errorf("sysctl %s = %q, want %q", k, sy.Sysctls[k], v)
		}
	}
	out, err := b.Ipvsadm(ctx, "-L", "--daemon")
	if err != nil || !strings.Contains(out, "master sync daemon (mcast=eth0, syncid=90") || !strings.Contains(out, "backup sync daemon (mcast=eth0, syncid=90") {
		t.Errorf("ipvsadm -L --daemon: %v\n%s", err, out)
	}
	if err := d.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if out, _ := b.Ipvsadm(ctx, "-L", "--daemon"); strings.Count(out, "sync daemon") != 2 {
		t.Errorf("after the daemon's graceful stop the sync daemons are gone:\n%s", out)
	}
}
