package director

import (
	"context"
	"fmt"
	"time"

	"github.com/hadirector/hadirector/internal/connsync"
	"github.com/hadirector/hadirector/internal/healthcheck"
	"github.com/hadirector/hadirector/internal/vrrp"
)

// This file is the engine's side of the peer state channel
// (connsync.PeerChannel): what it tells the other director, and what it
// does with what the other director says.
//
//   - Operator overrides (drain, set-weight, enable) apply on both
//     directors: each override carries when it was set, and the newer one
//     wins on both sides. A drain on the master is not undone by a
//     failover.
//   - A backup follows the master's health verdicts: while the peer holds
//     the virtual addresses and runs the same services (same epoch), this
//     node's table shows the master's view of every real server, not its
//     own probes' view; so when it takes over, the table its synced
//     connections meet is the one they were made in. Its own probes keep
//     running; it switches to them when it becomes master, before it
//     takes the virtual addresses (Engine.apply, TakeVIPs).
//   - HoldPreempt is the caught-up gate's lever: cmd decides when this
//     node holds enough of the master's connections.

// PeerState is this node's state for the peer channel; Conns is left to
// the caller, which reads the kernel.
func (e *Engine) PeerState(ctx context.Context) (connsync.PeerState, error) {
	var ps connsync.PeerState
	err := e.do(ctx, func(s *state) {
		ps.Epoch = s.epoch
		ps.Master = anyMaster(s)
		for _, sv := range s.services {
			for _, r := range sv.reals {
				k := adminKey{sv.key, r.cfg.Address.AddrPort()}
				o, hasO := s.admin[k]
				down := r.health != healthcheck.StateUp
				if !down && !hasO {
					continue
				}
				pe := connsync.PeerEntry{Service: sv.key, Real: k.real, Down: down}
				if hasO {
					pe.Drained, pe.Weight, pe.HasWeight = o.Drained, o.Weight, o.HasWeight
					pe.AdminAt = o.At.UnixNano()
				}
				ps.Entries = append(ps.Entries, pe)
			}
		}
	})
	return ps, err
}

// SetPeer takes the peer's latest state; nil says there is none (the
// channel is down), and this node goes back to its own verdicts.
func (e *Engine) SetPeer(p *connsync.PeerState) {
	e.do(context.Background(), func(s *state) {
		if p != nil && p.Epoch != s.epoch && (s.peer == nil || s.peer.Epoch != p.Epoch) {
			e.log.Warn("the peer runs other services (its config differs): its health verdicts are not followed; deploy the same config on both directors",
				"peer_epoch", fmt.Sprintf("%016x", p.Epoch), "epoch", fmt.Sprintf("%016x", s.epoch))
		}
		s.peer = p
		if p != nil {
			e.adoptOverrides(s, p)
		}
		e.follow(s)
	})
}

// HoldPreempt holds back (or allows) preemption of a live lower-priority
// master on every instance (vrrp.PreemptHold).
func (e *Engine) HoldPreempt(on bool) {
	e.do(context.Background(), func(s *state) {
		now := e.opts.Now()
		for _, in := range s.instances {
			e.apply(s, in, in.machine.Step(vrrp.PreemptHold{On: on}, now), now)
		}
	})
}

// adoptOverrides takes every override of the peer that is newer than this
// node's (including a newer enable).
func (e *Engine) adoptOverrides(s *state, p *connsync.PeerState) {
	changed := map[*service]bool{}
	for _, pe := range p.Entries {
		if pe.AdminAt == 0 {
			continue
		}
		sv := s.serviceByKey(pe.Service)
		if sv == nil || sv.real(pe.Real) == nil {
			continue // not in this node's config
		}
		k := adminKey{sv.key, pe.Real}
		at := time.Unix(0, pe.AdminAt)
		if mine, ok := s.admin[k]; ok && !at.After(mine.At) {
			continue
		}
		o := override{Drained: pe.Drained, Weight: pe.Weight, HasWeight: pe.HasWeight, At: at}
		s.admin[k] = o
		e.log.Info("operator override from the peer", "service", sv.cfg.Name, "real", pe.Real.String(),
			"drained", o.Drained, "weight_override", o.HasWeight, "weight", o.Weight, "set_at", at)
		changed[sv] = true
	}
	now := e.opts.Now()
	for sv := range changed {
		e.serviceChanged(s, sv, now)
	}
}

// follow sets every real server to the master's verdict while the peer is
// the master of the same services and this node is not; else to its own;
// and pushes the services that changed.
func (e *Engine) follow(s *state) {
	now := e.opts.Now()
	for _, sv := range e.setFollow(s, s.services) {
		e.serviceChanged(s, sv, now)
	}
}

// setFollow sets the flags of services' real servers and returns the
// services that changed.
func (e *Engine) setFollow(s *state, services []*service) []*service {
	p := s.peer
	on := p != nil && p.Master && !anyMaster(s) && p.Epoch == s.epoch
	down := map[adminKey]bool{}
	if on {
		for _, pe := range p.Entries {
			if pe.Down {
				down[adminKey{pe.Service, pe.Real}] = true
			}
		}
	}
	if on != s.following {
		if on {
			e.log.Info("following the master's health verdicts (this node is its backup)")
		} else {
			e.log.Info("own health verdicts")
		}
		s.following = on
	}
	var changed []*service
	for _, sv := range services {
		c := false
		for _, r := range sv.reals {
			pd := down[adminKey{sv.key, r.cfg.Address.AddrPort()}]
			if r.follow != on || r.peerDown != pd {
				r.follow, r.peerDown, c = on, pd, true
			}
		}
		if c {
			changed = append(changed, sv)
		}
	}
	return changed
}

// peerKick tells the peer channel that this node's state changed.
func (e *Engine) peerKick() {
	if e.opts.PeerChanged != nil {
		e.opts.PeerChanged()
	}
}

func anyMaster(s *state) bool {
	for _, in := range s.instances {
		if in.machine.State() == vrrp.Master {
			return true
		}
	}
	return false
}

func (s *state) serviceByKey(key string) *service {
	for _, sv := range s.services {
		if sv.key == key {
			return sv
		}
	}
	return nil
}

// DefaultConvergeWait bounds how long a takeover waits for the IPVS table.
const DefaultConvergeWait = 200 * time.Millisecond

// converge waits (bounded) until the IPVS worker has applied the table, so
// that a takeover adds the virtual addresses only when the table this node
// directs with is in the kernel. The wait is normally nothing: both
// directors program IPVS all the time, and a change waits only while a
// kernel operation runs.
func (e *Engine) converge(s *state, in *instance) {
	if s.ipvs == nil {
		return
	}
	d := e.opts.ConvergeWait
	if d <= 0 {
		d = DefaultConvergeWait
	}
	start := time.Now()
	if left := s.ipvs.waitApplied(d); left > 0 {
		e.log.Warn("taking the VIPs before IPVS has every change", "instance", in.cfg.Name, "waited", d, "changes_waiting", left)
	} else if took := time.Since(start); took > time.Millisecond {
		e.log.Info("IPVS table applied before taking the VIPs", "instance", in.cfg.Name, "waited", took)
	}
}
