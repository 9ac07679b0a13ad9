package main

import (
	"bytes"
	"testing"
	"time"

	"github.com/hadirector/hadirector/internal/control"
)

func u32(v uint32) *uint32 { return &v }
func u32i(v int) *int      { return &v }

func TestPrintStatus(t *testing.T) {
	t0 := time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)
	st := &control.Status{
		Cluster: "web", Node: "lb1", Version: "dev", PID: 42, Started: t0, ConfigFile: "/etc/hadirector/hadirector.toml", Loaded: t0,
		LastReload: &control.ReloadStatus{At: t0, Error: "a.toml:3:1: x: bad\na.toml:4:1: y: bad"},
		Instances: []control.InstanceStatus{{Name: "web", VRID: 51, Interface: "eth0", State: "MASTER", Priority: 150, AdvertInterval: 100 * time.Millisecond,
			Master: "192.0.2.11", LastTransition: t0.Add(30 * time.Second), VIPs: []string{"192.0.2.100/24"}}},
		Links:    []control.LinkStatus{{Name: "crossover", Kind: "udp", Up: true, LastRx: t0.Add(90*time.Second - 4*time.Millisecond), RxFrames: 9000, TxFrames: 9001, Drops: map[string]uint64{"replay": 2, "bad_mac": 1}}},
		NodeLoss: &control.NodeLossStatus{Probes: 4, Alive: 3, Lost: 1, Late: 1, LinksFailed: 2, LastProbe: t0.Add(60 * time.Second), LastResult: "alive"},
		Drops:    map[string]uint64{"bad_checksum": 3},
		Services: []control.ServiceStatus{{Name: "web-http", Key: "tcp/192.0.2.100:80", Scheduler: "wlc", Forwarding: "dr",
			Quorum: 2, LiveWeight: 1, QuorumSince: t0.Add(80 * time.Second), SorryServer: "192.0.2.99:80", SorryActive: true, SorryActiveConns: u32(4), SorryInactiveConns: u32(1),
			RealServers: []control.RealStatus{
				{Address: "192.0.2.21:80", Forwarding: "dr", Weight: 1, InTable: true, Health: "up", State: "standby", Since: t0, Detail: "status 200", ActiveConns: u32(3), InactiveConns: u32(0)},
				{Address: "192.0.2.22:80", Forwarding: "dr", Weight: 2, InTable: true, Health: "down", State: "down", Since: t0.Add(89 * time.Second), Detail: "connection refused"},
				{Address: "192.0.2.23:80", Forwarding: "dr", Weight: 1, WeightOverride: u32i(5), InTable: true, Health: "unchecked", State: "drained", Drained: true},
			}}},
		IPVS: &control.IPVSStatus{Services: 1, Destinations: 4, Ops: 12, FailedOps: 1, Repairs: 2, LastFull: t0.Add(85 * time.Second),
			Failed: []string{"add destination 192.0.2.24:80: no such device"}, Unowned: []string{"TCP 192.0.2.200:22"}},
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
node-loss probes (ARP, when every link is silent): 4 (alive 3, lost 1, errors 0); late frames 1, links failed 2; last: alive, 30s ago

VRRP packets dropped: bad_checksum=3

SERVICE / REAL SERVER            FORWARD  WEIGHT     ACTIVE  INACTIVE  HEALTH           STATE    SINCE  DETAIL
web-http tcp/192.0.2.100:80 wlc                                        QUORUM LOST 1/2           10s    
  -> 192.0.2.21:80               dr       0 (1)      3       0         up               standby  1m30s  status 200
  -> 192.0.2.22:80               dr       0 (2)      -       -         down             down     1s     connection refused
  -> 192.0.2.23:80               dr       0 (1) set  -       -         unchecked        drained  -      
  -> 192.0.2.99:80 (sorry)                           4       1                          ACTIVE          

IPVS: 1 services, 4 destinations; 12 kernel ops (1 failed), 2 drift repairs; last full check 5s
  failing: add destination 192.0.2.24:80: no such device
  not hadirector's (left alone): TCP 192.0.2.200:22
`
	if b.String() != want {
		t.Errorf("got:\n%s\nwant:\n%s", b.String(), want)
	}
}

func TestPrintSyncStatus(t *testing.T) {
	t0 := time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)
	st := &control.Status{Cluster: "web", Node: "lb2", Version: "dev", PID: 7, Started: t0, Loaded: t0,
		Sync: &control.SyncStatus{Mode: "both", Interface: "eth1", SyncID: 51,
			Daemons: []string{"master (eth1, sync id 51)", "backup (eth1, sync id 51)"},
			Decoder: &control.DecoderStatus{Messages: 40, Entries: 1000, LastSeen: t0.Add(89 * time.Second), LastSender: "10.0.0.1:33000",
				Drops: map[string]uint64{"wrong_sync_id": 2}, Senders: 2},
			Peer: &control.PeerStatus{Local: "10.0.0.2:8850", Remote: "10.0.0.1:8850", Up: true, LastRx: t0.Add(89500 * time.Millisecond),
				PeerMaster: true, PeerConns: 1000, PeerEntries: 1, SameEpoch: true, Conns: 950, PeerHolds: true, Following: true,
				Holding: true, GateSince: t0.Add(80 * time.Second), Gate: "holding: 950 connections here, 1000 needed of the master's 1000",
				TxState: 90, TxPages: 1, RxState: 89, RxPages: 2, Drops: map[string]uint64{"bad_mac": 1}}}}
	var b bytes.Buffer
	printStatus(&b, st, t0.Add(90*time.Second))
	want := `
connection sync: mode both on eth1, sync id 51
  master (eth1, sync id 51)
  backup (eth1, sync id 51)
  decoder: 40 messages, 1000 entries from the peer's master daemon; last 1s ago from 10.0.0.1:33000
    dropped: wrong_sync_id=2; entries skipped: -; lost in the socket: 0
    2 SENDERS: more than one master daemon on the sync link
  peer channel 10.0.0.2:8850 -> 10.0.0.1:8850: up (last heard 500ms ago; sent 90 states, 1 pages; received 89, 2)
    peer: master, 1000 connections, 1 real servers down or overridden, same services
    here: 950 connections; verdicts in IPVS: the master's; the peer holds this node's state
    caught-up gate SHUT for 10s: holding: 950 connections here, 1000 needed of the master's 1000
    dropped: bad_mac=1
`
	if got := b.String(); !bytes.Contains([]byte(got), []byte(want)) {
		t.Errorf("status:\n%s\nwant it to contain:\n%s", got, want)
	}
}
