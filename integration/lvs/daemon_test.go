package lvs_test

import (
	"testing"

	"github.com/hadirector/hadirector/integration/lvs"
)

// TestDaemonSmoke starts the real daemon (/payload/hadirector run) in lb1
// with the bed's cluster file: one VRRP instance and one virtual service
// over rs1..rs3. lb2 is declared but not running, so lb1 becomes MASTER
// after the master-down interval, holds the VIP, and answers `status
// --json`. (That the daemon programs IPVS from the file is for the
// scenarios built on this bed.)
func TestDaemonSmoke(t *testing.T) {
	lvs.NeedIPVS(t)
	lvs.DaemonBinary(t)
	for _, mode := range modes {
		t.Run(string(mode), func(t *testing.T) {
			ctx := scenarioContext(t)
			b := lvs.New(t, lvs.Options{Mode: mode})
			d := b.StartDaemon(ctx, t, b.LB1(), b.Config(lvs.ConfigOptions{}))
			st, err := d.WaitState(ctx, lvs.InstanceName, "MASTER")
			if err != nil {
				t.Fatal(err)
			}
			if st.Node != "lb1" || st.Cluster != "lvs" {
				t.Errorf("status: node %q of cluster %q; want lb1 of lvs", st.Node, st.Cluster)
			}
			in := lvs.Instance(st, lvs.InstanceName)
			if in.VRID != lvs.VRID || in.Priority != 150 {
				t.Errorf("instance: %+v; want VRID %d, priority 150", in, lvs.VRID)
			}
			if ok, err := lvs.HasAddr(b.LB1(), "eth0", b.VIP()); err != nil || !ok {
				t.Errorf("lb1 is MASTER but does not hold the VIP %s on eth0 (%v)", b.VIP(), err)
			}
			if len(st.Services) != 1 || st.Services[0].Key != "tcp/"+b.VIPPort(lvs.HTTPPort) || len(st.Services[0].RealServers) != 3 {
				t.Errorf("status services: %+v; want tcp/%s with 3 real servers", st.Services, b.VIPPort(lvs.HTTPPort))
			}
			if table, err := b.IPVSTable(b.LB1()); err != nil {
				t.Error(err)
			} else {
				t.Logf("IPVS table in lb1 with the daemon running:\n%v", table)
			}
			if err := d.Stop(scenarioTimeout / 4); err != nil {
				t.Errorf("daemon stop: %v", err)
			}
		})
	}
}
