package main

import (
	"bytes"
	"testing"
	"time"

	"github.com/hadirector/hadirector/internal/control"
)

func TestPrintStatus(t *testing.T) {
	t0 := time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)
	st := &control.Status{
		Cluster: "web", Node: "lb1", Version: "dev", PID: 42, Started: t0, ConfigFile: "/etc/hadirector/hadirector.toml", Loaded: t0,
		LastReload: &control.ReloadStatus{At: t0, Error: "a.toml:3:1: x: bad\na.toml:4:1: y: bad"},
		Instances: []control.InstanceStatus{{Name: "web", VRID: 51, Interface: "eth0", State: "MASTER", Priority: 150, AdvertInterval: 100 * time.Millisecond,
			Master: "192.0.2.11", LastTransition: t0.Add(30 * time.Second), VIPs: []string{"192.0.2.100/24"}}},
		Links: []control.LinkStatus{{Name: "crossover", Kind: "udp", Up: true, LastRx: t0.Add(90*time.Second - 4*time.Millisecond), RxFrames: 9000, TxFrames: 9001, Drops: map[string]uint64{"replay": 2, "bad_mac": 1}}},
		Drops: map[string]uint64{"bad_checksum": 3},
		Services: []control.ServiceStatus{{Name: "web-http", Key: "tcp/192.0.2.100:80", Scheduler: "wlc", Forwarding: "dr",
			RealServers: []control.RealStatus{{Address: "192.0.2.21:80", Weight: 1, Health: "unchecked"}}}},
	}
	var b bytes.Buffer
	printStatus(&b, st, t0.Add(90*time.Second))
	want := `cluster web   node lb1   hadirector dev   pid 42   up 1m30s
config  /etc/hadirector/hadirector.toml (loaded 2026-11-21 10:00:00, 0 reloads)
last reload 2026-11-21 10:00:00: REFUSED, running the previous config: a.toml:3:1: x: bad (and 1 more)

INSTANCE  VRID  INTERFACE  STATE   PRIORITY  ADVERT  MASTER      SINCE  VIPS
web       51    eth0       MASTER  150       100ms   192.0.2.11  1m0s   192.0.2.100/24

LINK       KIND  STATE  LAST RX  RX    TX    DROPS
crossover  udp   up     4ms ago  9000  9001  bad_mac=1 replay=2

VRRP packets dropped: bad_checksum=3

SERVICE             KEY                 SCHEDULER  FORWARD  WEIGHT  HEALTH
web-http            tcp/192.0.2.100:80  wlc        dr               
  -> 192.0.2.21:80                                          1       unchecked
`
	if b.String() != want {
		t.Errorf("got:\n%s\nwant:\n%s", b.String(), want)
	}
}
