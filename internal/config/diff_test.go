package config

import (
	"fmt"
	"os"
	"strings"
	"testing"
)

func mustParse(t *testing.T, src string) *Config {
	t.Helper()
	c, err := Parse("t.toml", []byte(src))
	if err != nil {
		t.Fatalf("parse:\n%v", err)
	}
	return c
}

func TestDiff(t *testing.T) {
	base, err := os.ReadFile("../../etc/hadirector.toml")
	if err != nil {
		t.Fatal(err)
	}
	old := mustParse(t, string(base))
	edit := func(pairs ...string) string {
		s := string(base)
		for i := 0; i < len(pairs); i += 2 {
			if !strings.Contains(s, pairs[i]) {
				t.Fatalf("edit: %q not in the example", pairs[i])
			}
			s = strings.Replace(s, pairs[i], pairs[i+1], 1)
		}
		return s
	}
	tests := []struct {
		name string
		new  string
		want []string
	}{
		{"identical", string(base), nil},
		{"comments and default written out are no change", edit("# hadirector cluster", "# a different comment", `[[virtual_service.real_server]]
address = "192.0.2.21"         # DR: the port is the service's (80)
weight = 1`, `[[virtual_service.real_server]]
address = "192.0.2.21:80"
weight = 1
forwarding = "dr"`), nil},
		{"instance field", edit(`advert_interval = "100ms"`, `advert_interval = "50ms"`), []string{"changed vrrp_instance web: advert_interval"}},
		{"one real server's weight", edit("weight = 2                     # a bigger machine", "weight = 3"), []string{"changed real_server tcp/192.0.2.100:80 192.0.2.23:80: weight"}},
		{"service check changes every inheriting real server", edit(`path = "/healthz"`, `path = "/ready"`), []string{
			"changed virtual_service tcp/192.0.2.100:80: check",
			"changed real_server tcp/192.0.2.100:80 192.0.2.21:80: check",
			"changed real_server tcp/192.0.2.100:80 192.0.2.22:80: check",
			"changed real_server tcp/192.0.2.100:80 192.0.2.23:80: check",
		}},
		{"service removed takes its real servers", edit(`address = "192.0.2.100:443"`, `address = "192.0.2.100:8443"`), []string{
			"removed virtual_service tcp/192.0.2.100:443",
			"added virtual_service tcp/192.0.2.100:8443",
			"added real_server tcp/192.0.2.100:8443 192.0.2.21:8443",
			"added real_server tcp/192.0.2.100:8443 192.0.2.22:8443",
			"added real_server tcp/192.0.2.100:8443 192.0.2.23:8443",
			"removed real_server tcp/192.0.2.100:443 192.0.2.21:443",
			"removed real_server tcp/192.0.2.100:443 192.0.2.22:443",
			"removed real_server tcp/192.0.2.100:443 192.0.2.23:443",
		}},
		{"renamed service is a field change", edit(`name = "web-https"`, `name = "tls"`), []string{"changed virtual_service tcp/192.0.2.100:443: name"}},
		{"node priority and sync", edit("priority = 100", "priority = 90", "sync_id = 51", "sync_id = 52"), []string{"changed node lb2: priority", "changed sync: sync_id"}},
		{"sync removed", string(base[:strings.Index(string(base), "\n[sync]\n")+1]), []string{"removed sync"}}, // the last section
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Diff(old, mustParse(t, tt.new))
			var gs []string
			for _, c := range got {
				gs = append(gs, c.String())
			}
			if fmt.Sprint(gs) != fmt.Sprint(tt.want) {
				t.Errorf("Diff:\n got  %q\n want %q", gs, tt.want)
			}
		})
	}
}
