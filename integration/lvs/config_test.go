package lvs_test

import (
	"testing"

	"github.com/hadirector/hadirector/integration/lvs"
	"github.com/hadirector/hadirector/internal/config"
)

// TestConfigValid: the cluster files the bed writes pass the daemon's own
// validation, in every shape the helpers offer. Runs anywhere.
func TestConfigValid(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    lvs.Options
		c    lvs.ConfigOptions
	}{
		{"nat", lvs.Options{Mode: lvs.NAT}, lvs.ConfigOptions{}},
		{"dr", lvs.Options{Mode: lvs.DR}, lvs.ConfigOptions{}},
		{"vrrp only", lvs.Options{}, lvs.ConfigOptions{NoService: true}},
		{"nat sorry quorum echo weights", lvs.Options{Mode: lvs.NAT, Sorry: true, Directors: 2}, lvs.ConfigOptions{
			SorryServer: true, Quorum: 2, EchoService: true, Weights: map[string]int{"rs3": 0},
			Scheduler: "wrr", AdvertInterval: "50ms",
		}},
		{"dr sorry echo no check", lvs.Options{Mode: lvs.DR, Sorry: true}, lvs.ConfigOptions{SorryServer: true, EchoService: true, Check: "-"}},
		{"one real server", lvs.Options{RealServers: 1}, lvs.ConfigOptions{ServiceExtra: `persistence_timeout = "10s"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			text := tc.o.Config(tc.c)
			cfg, err := config.Parse("bed.toml", []byte(text))
			if err != nil {
				t.Fatalf("%v\n%s", err, text)
			}
			instances := 1
			if tc.o.BackVIP().IsValid() {
				instances = 2 // the real servers' gateway, in a sync group with the VIP
			}
			if len(cfg.Nodes) != 2 || len(cfg.Instances) != instances {
				t.Errorf("nodes %d, instances %d; want 2, %d", len(cfg.Nodes), len(cfg.Instances), instances)
			}
			want := 1
			if tc.c.NoService {
				want = 0
			}
			if tc.c.EchoService {
				want = 2
			}
			if len(cfg.Services) != want {
				t.Errorf("%d virtual services, want %d\n%s", len(cfg.Services), want, text)
			}
		})
	}
}
