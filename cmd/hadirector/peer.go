package main

import (
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hadirector/hadirector/internal/config"
	"github.com/hadirector/hadirector/internal/connsync"
	"github.com/hadirector/hadirector/internal/control"
	"github.com/hadirector/hadirector/internal/director"
	"github.com/hadirector/hadirector/internal/heartbeat"
)

// peerSide runs the peer state channel ([sync] peer_port) between the two
// directors, and the caught-up gate: a director that outranks the live
// master does not preempt it until it holds catch_up of the master's
// connections (its kernel's sync backup learned them), or catch_up_timeout
// passed. Without the gate, a recovering master takes the VIPs back at
// once and every connection made while it was away breaks (keepalived
// #237, #1076, #1966).
type peerSide struct {
	log     *slog.Logger
	ch      *connsync.PeerChannel
	engine  atomic.Pointer[director.Engine]
	catchUp float64
	timeout time.Duration
	updates chan *connsync.PeerState // latest wins; nil: the channel went down
	stop    chan struct{}
	wg      sync.WaitGroup

	mu        sync.Mutex
	peer      *connsync.PeerState
	mine      uint64 // this node's connections, last counted
	epoch     uint64 // this node's services epoch, last sent
	holding   bool
	holdSince time.Time
	timedOut  bool // this episode's hold ran out; no new hold until the peer stops being master
	gate      string
}

// openPeer starts the channel; nil when the config has none.
func openPeer(cfg *config.Config, node string, log *slog.Logger) (*peerSide, error) {
	sc := cfg.Sync
	if sc == nil || !sc.Enabled || sc.PeerPort == 0 || len(cfg.Nodes) != 2 {
		return nil, nil
	}
	self := cfg.Node(node)
	var peer *config.Node
	for i := range cfg.Nodes {
		if cfg.Nodes[i].Name != node {
			peer = &cfg.Nodes[i]
		}
	}
	local, ok1 := self.Interface(sc.Interface).FirstAddr(config.IPv4)
	remote, ok2 := peer.Interface(sc.Interface).FirstAddr(config.IPv4)
	if !ok1 || !ok2 {
		return nil, fmt.Errorf("[sync] peer channel: both nodes need an IPv4 address on %s", sc.Interface)
	}
	log = log.With("part", "peer")
	var key []byte
	if sc.KeyFile != "" {
		var err error
		if key, err = heartbeat.LoadKey(sc.KeyFile); err != nil {
			return nil, fmt.Errorf("[sync] key_file: %w", err)
		}
	} else {
		// As the default liveness connection: a key from the cluster name
		// keeps clusters apart but is no secret.
		k := sha256.Sum256([]byte("hadirector peer state without a key file: " + cfg.Cluster.Name))
		key = k[:]
		log.Warn("peer state channel not authenticated by a secret: set [sync] key_file (or a UDP link's key_file)")
	}
	p := &peerSide{log: log, catchUp: sc.CatchUp, timeout: sc.CatchUpTimeout.D(),
		updates: make(chan *connsync.PeerState, 1), stop: make(chan struct{})}
	if !outranks(cfg, node, peer.Name) {
		p.catchUp = 0 // it never preempts its peer: nothing to hold
	}
	if p.catchUp > 0 {
		p.holding, p.holdSince, p.gate = true, time.Now(), "waiting for the peer's state"
	}
	ch, err := connsync.NewPeerChannel(connsync.PeerConfig{
		NodeID: node, PeerID: peer.Name, Local: local, Peer: remote, Port: sc.PeerPort,
		Key: key, Domain: cfg.Cluster.Name, Interval: sc.PeerInterval.D(), Log: log,
		State:   p.state,
		OnState: func(ps connsync.PeerState) { p.post(&ps) },
		OnHealth: func(up bool) {
			if up {
				log.Info("peer state channel up")
			} else {
				log.Warn("peer state channel DOWN: the peer is not heard on it")
				p.post(nil)
			}
		},
	})
	if err != nil {
		return nil, fmt.Errorf("[sync] %w", err)
	}
	p.ch = ch
	p.wg.Add(1)
	go p.run(sc.PeerInterval.D())
	return p, nil
}

// holdAtStart: the engine starts with preemption held (the gate is shut
// until the peer's state says otherwise).
func (p *peerSide) holdAtStart() bool { return p != nil && p.catchUp > 0 }

// attach gives the side its engine once it exists.
func (p *peerSide) attach(e *director.Engine) {
	if p != nil {
		p.engine.Store(e)
		p.ch.Kick()
	}
}

// kick: this node's state changed (director.Options.PeerChanged).
func (p *peerSide) kick() {
	if p != nil {
		p.ch.Kick()
	}
}

func (p *peerSide) Close() {
	if p == nil {
		return
	}
	close(p.stop)
	p.wg.Wait()
	p.ch.Close()
}

// state is this node's state, for the channel.
func (p *peerSide) state() connsync.PeerState {
	var ps connsync.PeerState
	if e := p.engine.Load(); e != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		var err error
		ps, err = e.PeerState(ctx)
		cancel()
		if err != nil {
			p.log.Debug("peer state not read", "err", err)
		}
	}
	n, err := connsync.CountConns(connsync.ConnTable)
	if err != nil {
		p.log.Debug("connections not counted", "err", err)
	}
	ps.Conns = n
	p.mu.Lock()
	p.mine, p.epoch = n, ps.Epoch
	p.mu.Unlock()
	return ps
}

func (p *peerSide) post(ps *connsync.PeerState) {
	for {
		select {
		case p.updates <- ps:
			return
		default:
		}
		select { // drop the older update
		case <-p.updates:
		default:
		}
	}
}

// run hands the peer's state to the engine and works the gate, off the
// channel's goroutine (the engine may be busy for a moment).
func (p *peerSide) run(interval time.Duration) {
	defer p.wg.Done()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case ps := <-p.updates:
			p.mu.Lock()
			p.peer = ps
			p.mu.Unlock()
			if e := p.engine.Load(); e != nil {
				e.SetPeer(ps)
			}
		case <-t.C:
		}
		p.evaluate(time.Now())
	}
}

// evaluate opens or shuts the gate.
func (p *peerSide) evaluate(now time.Time) {
	if p.catchUp <= 0 {
		return
	}
	p.mu.Lock()
	was := p.holding
	peer, mine := p.peer, p.mine
	switch {
	case peer == nil:
		if p.holding && now.Sub(p.holdSince) >= p.timeout {
			p.holding, p.gate = false, fmt.Sprintf("no state from the peer within %s: preemption allowed", p.timeout)
		}
	case !peer.Master:
		p.timedOut = false
		p.holding, p.gate = false, "the peer is not master"
	default:
		need := uint64(math.Ceil(p.catchUp * float64(peer.Conns)))
		switch {
		case mine >= need:
			p.holding, p.gate = false, fmt.Sprintf("caught up: %d connections here, the master has %d", mine, peer.Conns)
		case p.timedOut:
		case !p.holding:
			p.holding, p.holdSince = true, now
			p.gate = fmt.Sprintf("holding: %d connections here, %d needed of the master's %d", mine, need, peer.Conns)
		case now.Sub(p.holdSince) >= p.timeout:
			p.timedOut = true
			p.holding, p.gate = false, fmt.Sprintf("not caught up after %s (%d of %d connections): preemption allowed", p.timeout, mine, peer.Conns)
		default:
			p.gate = fmt.Sprintf("holding: %d connections here, %d needed of the master's %d", mine, need, peer.Conns)
		}
	}
	holding, gate := p.holding, p.gate
	p.mu.Unlock()
	if holding == was {
		return
	}
	if holding {
		p.log.Info("caught-up gate shut: no preemption of the live master", "why", gate)
	} else if p.timedOut || peer == nil {
		p.log.Warn("caught-up gate open", "why", gate)
	} else {
		p.log.Info("caught-up gate open", "why", gate)
	}
	if e := p.engine.Load(); e != nil {
		e.HoldPreempt(holding)
	}
}

// status is the channel and the gate, for hadirector status.
func (p *peerSide) status() *control.PeerStatus {
	if p == nil {
		return nil
	}
	st := p.ch.Stats()
	ps := &control.PeerStatus{Local: st.LocalAddr.String(), Remote: st.PeerAddr.String(), Up: st.Link.Up,
		LastRx: st.Link.LastRx, PeerHolds: st.PeerHolds,
		TxState: st.TxState, TxPages: st.TxPages, RxState: st.RxState, RxPages: st.RxPages}
	for r, n := range st.Link.Drops {
		if ps.Drops == nil {
			ps.Drops = map[string]uint64{}
		}
		ps.Drops[r.String()] = n
	}
	for r, n := range st.DecodeErrors {
		if ps.Drops == nil {
			ps.Drops = map[string]uint64{}
		}
		ps.Drops["undecodable_"+r] = n
	}
	p.mu.Lock()
	ps.Conns, ps.Holding, ps.Gate = p.mine, p.holding, p.gate
	if p.holding {
		ps.GateSince = p.holdSince
	}
	if st.Peer != nil {
		ps.PeerMaster, ps.PeerConns, ps.PeerEntries = st.Peer.Master, st.Peer.Conns, len(st.Peer.Entries)
		ps.SameEpoch = st.Peer.Epoch == p.epoch
	}
	p.mu.Unlock()
	return ps
}

// outranks: in some instance this node's configured priority is above the
// peer's, so it may preempt the peer (tracking weights aside).
func outranks(cfg *config.Config, node, peer string) bool {
	for i := range cfg.Instances {
		in := &cfg.Instances[i]
		if cfg.PriorityOf(in, node) > cfg.PriorityOf(in, peer) {
			return true
		}
	}
	return false
}
