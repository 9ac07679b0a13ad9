package main

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/hadirector/hadirector/internal/config"
	"github.com/hadirector/hadirector/internal/connsync"
)

// TestCaughtUpGate walks the gate through a failback: shut at start until
// the peer's state says anything, held while this node has fewer than
// catch_up of the master's connections, open once it has them, shut again
// when the peer is master once more, and open after catch_up_timeout.
func TestCaughtUpGate(t *testing.T) {
	t0 := time.Unix(1000, 0)
	p := &peerSide{log: slog.New(slog.DiscardHandler), catchUp: 0.9, timeout: time.Minute,
		holding: true, holdSince: t0, gate: "waiting for the peer's state"}
	master := func(n uint64) *connsync.PeerState { return &connsync.PeerState{Master: true, Conns: n} }
	for _, st := range []struct {
		at      time.Duration
		peer    *connsync.PeerState
		mine    uint64
		holding bool
		gate    string
	}{
		{0, nil, 0, true, "waiting"},
		{time.Second, master(1000), 100, true, "holding: 100 connections here, 900 needed of the master's 1000"},
		{5 * time.Second, master(1000), 899, true, "holding: 899"},
		{6 * time.Second, master(1000), 900, false, "caught up: 900 connections here, the master has 1000"},
		{7 * time.Second, &connsync.PeerState{Master: false}, 900, false, "the peer is not master"},
		{8 * time.Second, master(500), 10, true, "holding: 10 connections here, 450 needed"},
		{8*time.Second + time.Minute - time.Millisecond, master(500), 10, true, "holding"},
		{8*time.Second + time.Minute, master(500), 10, false, "not caught up after 1m0s (10 of 500 connections): preemption allowed"},
		{9*time.Second + time.Minute, master(500), 10, false, "not caught up"}, // stays open this episode
		{10*time.Second + time.Minute, master(0), 0, false, "caught up: 0 connections here, the master has 0"},
	} {
		p.peer, p.mine = st.peer, st.mine
		p.evaluate(t0.Add(st.at))
		if p.holding != st.holding || !strings.Contains(p.gate, st.gate) {
			t.Fatalf("at %v (mine %d, peer %+v): holding %v, gate %q; want %v, %q", st.at, st.mine, st.peer, p.holding, p.gate, st.holding, st.gate)
		}
	}
	// No state from the peer at all: the hold ends at the timeout.
	q := &peerSide{log: slog.New(slog.DiscardHandler), catchUp: 0.9, timeout: time.Minute, holding: true, holdSince: t0}
	q.evaluate(t0.Add(time.Minute - time.Millisecond))
	if !q.holding {
		t.Fatal("released before the timeout without word from the peer")
	}
	q.evaluate(t0.Add(time.Minute))
	if q.holding || !strings.Contains(q.gate, "no state from the peer within 1m0s") {
		t.Fatalf("after the timeout: holding %v, gate %q", q.holding, q.gate)
	}
}

func TestOutranks(t *testing.T) {
	cfg, err := config.Parse("t.toml", []byte(`
[cluster]
name = "t"
[[node]]
name = "lb1"
priority = 150
[[node.interface]]
name = "eth0"
addresses = ["192.0.2.11/24"]
[[node]]
name = "lb2"
priority = 100
[[node.interface]]
name = "eth0"
addresses = ["192.0.2.12/24"]
[[vrrp_instance]]
name = "VI_1"
vrid = 51
interface = "eth0"
vips = ["192.0.2.100/24"]
`))
	if err != nil {
		t.Fatal(err)
	}
	if !outranks(cfg, "lb1", "lb2") || outranks(cfg, "lb2", "lb1") {
		t.Fatal("lb1 (150) outranks lb2 (100), not the other way round")
	}
}
