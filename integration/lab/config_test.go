package lab

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/hadirector/hadirector/integration/lvs"
	"github.com/hadirector/hadirector/internal/config"
)

// The embedded cluster file is valid and describes the bed the lab builds:
// the directors' addresses, the VIP and the real servers of lvs's DR plan,
// and the heartbeat cable.
func TestConfigMatchesPlan(t *testing.T) {
	cfg := loadConfig(t)
	for i, n := range []string{"lb1", "lb2"} {
		got := cfg.Node(n).Interface("eth0").Addresses
		want := fmt.Sprintf("%s/%d", Plan.DirectorAddr(i+1), lvs.PrefixLen)
		if len(got) != 1 || got[0].String() != want {
			t.Errorf("%s eth0 = %v, want %s", n, got, want)
		}
	}
	if len(cfg.Instances) != 1 || cfg.Instances[0].Name != lvs.InstanceName ||
		len(cfg.Instances[0].VIPs) != 1 || cfg.Instances[0].VIPs[0].Addr() != Plan.VIP() {
		t.Errorf("instances = %+v, want %q with VIP %s", cfg.Instances, lvs.InstanceName, Plan.VIP())
	}
	// The heartbeat cable the lab adds between the directors (Lab.cable):
	// one UDP link on an interface both have, with an address each, keyed
	// from a file in StateDir (writeState makes it), carrying the adverts.
	if len(cfg.Links) != 1 || cfg.Links[0].Type != config.LinkUDP {
		t.Fatalf("links = %+v, want one UDP link", cfg.Links)
	}
	hb := cfg.Links[0]
	if hb.Interface == "eth0" || filepath.Dir(hb.KeyFile) != StateDir {
		t.Errorf("link %s: interface %s, key_file %s; want its own interface and a key in %s", hb.Name, hb.Interface, hb.KeyFile, StateDir)
	}
	for _, n := range []string{"lb1", "lb2"} {
		if in := cfg.Node(n).Interface(hb.Interface); in == nil || len(in.Addresses) != 1 {
			t.Errorf("%s has no single address on %s", n, hb.Interface)
		}
	}
	if len(cfg.Instances) == 1 && !slices.Equal(cfg.Instances[0].Links, []string{hb.Name}) {
		t.Errorf("instance %s's links = %v, want [%s]", cfg.Instances[0].Name, cfg.Instances[0].Links, hb.Name)
	}
	var reals []string
	for i := range Plan.RealNames() {
		reals = append(reals, Plan.RealAddr(i+1).String())
	}
	for _, port := range []int{lvs.HTTPPort, lvs.EchoPort} {
		key := "tcp/" + Plan.VIPPort(port) // the config's service key
		var got []string
		found := false
		for i := range cfg.Services {
			vs := &cfg.Services[i]
			if vs.Key() == key {
				found = true
				for _, rs := range vs.RealServers {
					got = append(got, rs.Address.Addr.String())
				}
			}
		}
		if !found || !slices.Equal(got, reals) {
			t.Errorf("service %s: found %v, real servers %v; want %v", key, found, got, reals)
		}
	}
}

// loadConfig loads the embedded cluster file.
func loadConfig(t *testing.T) *config.Config {
	t.Helper()
	path := filepath.Join(t.TempDir(), "cluster.toml")
	if err := os.WriteFile(path, Config, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}
