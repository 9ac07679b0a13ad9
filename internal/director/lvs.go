package director

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hadirector/hadirector/internal/config"
	"github.com/hadirector/hadirector/internal/control"
	"github.com/hadirector/hadirector/internal/healthcheck"
	"github.com/hadirector/hadirector/internal/ipvs"
)

// The engine's LVS side: health transitions and operator overrides in, the
// desired IPVS table out. The policy itself is in policy.go; the kernel is
// written by an ipvsWorker, off the engine goroutine, so a slow kernel never
// delays an election.

// Health is the probe manager as the engine uses it ([*healthcheck.Manager]).
type Health interface {
	Add(id healthcheck.TargetID, spec healthcheck.Spec) error
	Update(id healthcheck.TargetID, spec healthcheck.Spec) error
	Remove(id healthcheck.TargetID) error
	Transitions() <-chan healthcheck.Transition
	Status(id healthcheck.TargetID) (healthcheck.TargetStatus, bool)
}

// Programmer keeps the kernel's IPVS table as desired ([*ipvs.Reconciler]).
type Programmer interface {
	// Apply reads the kernel, diffs and repairs drift.
	Apply(desired ipvs.Table) ipvs.Result
	// ApplyChanges diffs against what it last knew: one operation per
	// changed entry.
	ApplyChanges(desired ipvs.Table) ipvs.Result
}

// ServiceEvent is a real server's or a service's quorum transition, for
// notify hooks.
type ServiceEvent struct {
	Service string // the service's name
	Key     string // its config key
	// Real is the real server's address; "" for a quorum event.
	Real string
	// State: a real server is "UP" or "DOWN"; a quorum "UP" (regained) or
	// "DOWN" (lost).
	State string
	// Weight: what the real server counts for toward the quorum (its
	// weight when up, 0 when down or drained), or the service's live
	// weight for a quorum event.
	Weight int
	Detail string
	At     time.Time
}

// Admin operations on a real server (the control socket's drain, enable
// and set-weight).
const (
	AdminDrain     = "drain"
	AdminEnable    = "enable"
	AdminSetWeight = "set-weight"
)

// buildServices makes the running services of cfg, carrying over from old
// (nil at start) the health of real servers and the quorum state of
// services that exist in both.
func buildServices(cfg *config.Config, old []*service, now time.Time) ([]*service, error) {
	prev := map[string]*service{}
	for _, s := range old {
		prev[s.key] = s
	}
	out := make([]*service, 0, len(cfg.Services))
	for i := range cfg.Services {
		s, err := newService(&cfg.Services[i], now)
		if err != nil {
			return nil, err
		}
		if p := prev[s.key]; p != nil {
			s.quorumUp, s.quorumAt = p.quorumUp, p.quorumAt
			for _, r := range s.reals {
				if pr := p.real(r.cfg.Address.AddrPort()); pr != nil && pr.target != "" && r.target != "" {
					r.health, r.since, r.detail = pr.health, pr.since, pr.detail
					r.dynamic, r.hasDynamic = pr.dynamic, pr.hasDynamic
				}
			}
		}
		out = append(out, s)
	}
	return out, nil
}

func (s *service) real(addr netip.AddrPort) *real {
	for _, r := range s.reals {
		if r.cfg.Address.AddrPort() == addr {
			return r
		}
	}
	return nil
}

// startServices adds the probes and hands the whole desired table to the
// worker. It runs once, when Run starts.
func (e *Engine) startServices(s *state, now time.Time) {
	for _, sv := range s.services {
		sv.initQuorum(s.admin)
		for _, r := range sv.reals {
			if r.target != "" && e.opts.Health != nil {
				if err := e.opts.Health.Add(r.target, r.spec); err != nil {
					e.log.Error("health check not started", "service", sv.cfg.Name, "real", r.cfg.Address, "err", err)
				}
			}
		}
		e.pushService(s, sv)
	}
	e.log.Debug("services started", "services", len(s.services), "at", now)
}

// pushService hands the service's entries to the IPVS worker if they
// changed since last time.
func (e *Engine) pushService(s *state, sv *service) {
	if s.ipvs == nil {
		return
	}
	svc, dests := sv.entries(s.admin)
	if sv.pushed && svc == sv.lastSvc && slices.Equal(dests, sv.lastDests) {
		return
	}
	sv.pushed, sv.lastSvc, sv.lastDests = true, svc, dests
	s.ipvs.set(svc, dests)
}

// healthChanged applies a probe transition.
func (e *Engine) healthChanged(s *state, tr healthcheck.Transition) {
	sv, r := s.findTarget(tr.Target)
	if r == nil {
		return // removed by a reload; the transition was already on its way
	}
	now := e.opts.Now()
	o := s.admin[adminKey{sv.key, r.cfg.Address.AddrPort()}]
	before, _, _ := sv.realEntry(r, o)
	r.detail = tr.Detail
	if tr.To != r.health {
		r.health, r.since = tr.To, tr.At
	}
	if tr.To == healthcheck.StateUp {
		r.dynamic, r.hasDynamic = tr.Weight, tr.HasWeight
	}
	after, present, _ := sv.realEntry(r, o)
	if tr.From != tr.To {
		e.log.Info("real server "+strings.ToLower(tr.To.String()), "service", sv.cfg.Name, "real", r.cfg.Address.String(),
			"detail", tr.Detail, "weight", after.Weight, "in_table", present)
		w := 0 // what it counts for toward the quorum
		if r.live(o) {
			w = r.weight(o)
		}
		e.serviceEvent(ServiceEvent{Service: sv.cfg.Name, Key: sv.key, Real: r.cfg.Address.String(),
			State: strings.ToUpper(tr.To.String()), Weight: w, Detail: tr.Detail, At: now})
		e.peerKick()
	} else if before.Weight != after.Weight {
		e.log.Info("real server weight", "service", sv.cfg.Name, "real", r.cfg.Address.String(), "weight", after.Weight)
	}
	e.serviceChanged(s, sv, now)
}

// serviceChanged re-evaluates the quorum and pushes the service.
func (e *Engine) serviceChanged(s *state, sv *service, now time.Time) {
	if sv.updateQuorum(s.admin, now) {
		live := sv.liveWeight(s.admin)
		state, msg := "UP", "quorum regained"
		if !sv.quorumUp {
			state, msg = "DOWN", "quorum lost"
		}
		args := []any{"service", sv.cfg.Name, "live_weight", live, "quorum", sv.cfg.Quorum}
		if sv.cfg.SorryServer != nil {
			args = append(args, "sorry_server", sv.cfg.SorryServer.String(), "sorry_active", sv.sorryActive())
		}
		if sv.quorumUp {
			e.log.Info(msg, args...)
		} else {
			e.log.Warn(msg, args...)
		}
		e.serviceEvent(ServiceEvent{Service: sv.cfg.Name, Key: sv.key, State: state, Weight: live, Detail: msg, At: now})
	}
	e.pushService(s, sv)
}

func (e *Engine) serviceEvent(ev ServiceEvent) {
	if e.opts.ServiceHooks != nil {
		e.opts.ServiceHooks(ev)
	}
}

func (s *state) findTarget(id healthcheck.TargetID) (*service, *real) {
	if s.targets == nil {
		s.targets = map[healthcheck.TargetID]targetRef{}
		for _, sv := range s.services {
			for _, r := range sv.reals {
				if r.target != "" {
					s.targets[r.target] = targetRef{sv, r}
				}
			}
		}
	}
	t := s.targets[id]
	return t.svc, t.real
}

// targetRef finds a probe's real server (state.targets, built on first
// use after each start or reload).
type targetRef struct {
	svc  *service
	real *real
}

// reloadServices moves the running services to cfg: probes added, updated
// and removed, overrides of what is gone dropped, and only the services
// whose entries changed pushed to the kernel.
func (e *Engine) reloadServices(s *state, next []*service, now time.Time) {
	old := map[healthcheck.TargetID]bool{}
	for _, sv := range s.services {
		for _, r := range sv.reals {
			if r.target != "" {
				old[r.target] = true
			}
		}
	}
	keep := map[adminKey]bool{}
	for _, sv := range next {
		for _, r := range sv.reals {
			keep[adminKey{sv.key, r.cfg.Address.AddrPort()}] = true
			if r.target == "" || e.opts.Health == nil {
				continue
			}
			var err error
			if old[r.target] {
				err = e.opts.Health.Update(r.target, r.spec)
				delete(old, r.target)
			} else {
				err = e.opts.Health.Add(r.target, r.spec)
			}
			if err != nil {
				e.log.Error("health check not updated", "service", sv.cfg.Name, "real", r.cfg.Address, "err", err)
			}
		}
	}
	if e.opts.Health != nil {
		for id := range old {
			if err := e.opts.Health.Remove(id); err != nil && !errors.Is(err, healthcheck.ErrUnknownTarget) {
				e.log.Warn("health check not removed", "target", id, "err", err)
			}
		}
	}
	for k := range s.admin {
		if !keep[k] {
			e.log.Info("override dropped: the real server left the config", "service", k.service, "real", k.real)
			delete(s.admin, k)
		}
	}
	if s.ipvs != nil {
		gone := map[ipvs.ServiceKey]bool{}
		for _, sv := range s.services {
			gone[sv.svc.Key()] = true
		}
		for _, sv := range next {
			delete(gone, sv.svc.Key())
		}
		for k := range gone {
			s.ipvs.remove(k)
		}
	}
	s.services, s.targets = next, nil
	for _, sv := range next {
		e.serviceChanged(s, sv, now)
	}
}

// Admin applies an operator's drain, enable or set-weight to a real server
// of a service (named by its name or key). The override lasts until
// enable, across reloads, while the real server stays in the config.
func (e *Engine) Admin(ctx context.Context, req control.AdminRequest) (string, error) {
	var msg string
	var err error
	derr := e.do(ctx, func(s *state) { msg, err = e.admin(s, req) })
	if derr != nil {
		return "", derr
	}
	return msg, err
}

func (e *Engine) admin(s *state, req control.AdminRequest) (string, error) {
	var sv *service
	for _, c := range s.services {
		if c.cfg.Name == req.Service || c.key == req.Service {
			sv = c
			break
		}
	}
	if sv == nil {
		names := make([]string, 0, len(s.services))
		for _, c := range s.services {
			names = append(names, c.cfg.Name)
		}
		return "", fmt.Errorf("no virtual service %q; services: %s", req.Service, strings.Join(names, ", "))
	}
	r, err := sv.findReal(req.Real)
	if err != nil {
		return "", err
	}
	k := adminKey{sv.key, r.cfg.Address.AddrPort()}
	o := s.admin[k]
	var msg string
	switch req.Op {
	case AdminDrain:
		o.Drained = true
		msg = fmt.Sprintf("%s in %s: drained (weight 0; established connections finish)", r.cfg.Address, sv.cfg.Name)
	case AdminEnable:
		o = override{} // At (below) records when it was cleared, for the peer
		msg = fmt.Sprintf("%s in %s: enabled (configured weight %d, health %s)", r.cfg.Address, sv.cfg.Name, r.cfg.Weight, r.health)
	case AdminSetWeight:
		if req.Weight < 0 || req.Weight > 65535 {
			return "", fmt.Errorf("weight %d is out of range 0..65535", req.Weight)
		}
		o.Weight, o.HasWeight = req.Weight, true
		msg = fmt.Sprintf("%s in %s: weight %d (configured %d) until enable", r.cfg.Address, sv.cfg.Name, req.Weight, r.cfg.Weight)
	default:
		return "", fmt.Errorf("unknown operation %q: use drain, enable or set-weight", req.Op)
	}
	o.At = e.opts.Now()
	s.admin[k] = o
	e.log.Info("operator: "+req.Op, "service", sv.cfg.Name, "real", r.cfg.Address.String(), "weight", req.Weight)
	e.serviceChanged(s, sv, e.opts.Now())
	e.peerKick()
	return msg, nil
}

// findReal finds a real server by "ip:port", or by "ip" when only one real
// server of the service has that address.
func (s *service) findReal(name string) (*real, error) {
	if ap, err := netip.ParseAddrPort(name); err == nil {
		if r := s.real(ap); r != nil {
			return r, nil
		}
	} else if a, err := netip.ParseAddr(name); err == nil {
		var found []*real
		for _, r := range s.reals {
			if r.cfg.Address.Addr == a {
				found = append(found, r)
			}
		}
		if len(found) == 1 {
			return found[0], nil
		}
		if len(found) > 1 {
			return nil, fmt.Errorf("%s has %d real servers at %s: give the port", s.cfg.Name, len(found), a)
		}
	} else {
		return nil, fmt.Errorf("%q is not a real server address (ip or ip:port)", name)
	}
	addrs := make([]string, 0, len(s.reals))
	for _, r := range s.reals {
		addrs = append(addrs, r.cfg.Address.String())
	}
	return nil, fmt.Errorf("%s has no real server %s; its real servers: %s", s.cfg.Name, name, strings.Join(addrs, ", "))
}

// serviceStatus is a service for the control socket.
func (e *Engine) serviceStatus(s *state, sv *service) control.ServiceStatus {
	ss := control.ServiceStatus{
		Name: sv.cfg.Name, Key: sv.key, Scheduler: string(sv.cfg.Scheduler), Forwarding: string(sv.cfg.Forwarding),
		Quorum: sv.cfg.Quorum, LiveWeight: sv.liveWeight(s.admin), QuorumUp: sv.quorumUp, QuorumSince: sv.quorumAt,
		RealServers: []control.RealStatus{},
	}
	if sv.cfg.SorryServer != nil {
		ss.SorryServer = sv.cfg.SorryServer.String()
		ss.SorryActive = sv.sorryActive()
	}
	for _, r := range sv.reals {
		o := s.admin[adminKey{sv.key, r.cfg.Address.AddrPort()}]
		d, present, state := sv.realEntry(r, o)
		rs := control.RealStatus{
			Address: r.cfg.Address.String(), Weight: r.cfg.Weight, Forwarding: string(r.cfg.Forwarding),
			State: state, InTable: present, Drained: o.Drained, Since: r.since, Detail: r.detail,
		}
		if present {
			rs.EffectiveWeight = d.Weight
		}
		if o.HasWeight {
			w := o.Weight
			rs.WeightOverride = &w
		}
		switch {
		case r.target == "":
			rs.Health = "unchecked"
		default:
			rs.Health = r.health.String()
			if r.spec.Check != nil {
				rs.Check = strings.SplitN(r.spec.Check.Key(), "|", 2)[0]
			}
		}
		ss.RealServers = append(ss.RealServers, rs)
	}
	return ss
}

// ---- the IPVS worker ------------------------------------------------------

// ipvsWorker owns the calls into the kernel table: the engine hands it
// each changed service (never blocking), and it applies the changes at
// once (ApplyChanges: one operation per changed entry) and the whole
// table every period (Apply: read, diff, repair drift).
type ipvsWorker struct {
	prog   Programmer
	period time.Duration
	log    *slog.Logger
	kick   chan struct{}

	mu      sync.Mutex
	desired ipvs.Table
	status  control.IPVSStatus
	// version counts changes to desired; applied is the version the
	// kernel last got (its operations done, failed ones retried later).
	version, applied uint64
	appliedCh        chan struct{} // closed and replaced at each run
}

func newIPVSWorker(p Programmer, period time.Duration, log *slog.Logger) *ipvsWorker {
	return &ipvsWorker{prog: p, period: period, log: log, kick: make(chan struct{}, 1), desired: ipvs.NewTable(),
		appliedCh: make(chan struct{})}
}

// set replaces a service and its destinations in the desired table.
func (w *ipvsWorker) set(svc ipvs.Service, dests []ipvs.Destination) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.desired.Set(svc, dests...); err != nil {
		// The config was validated; this is a bug, not an operator error.
		w.log.Error("IPVS: service refused", "service", svc, "err", err)
		return
	}
	w.version++
	w.poke()
}

// setPeriod changes the full-run period from the next run on.
func (w *ipvsWorker) setPeriod(d time.Duration) {
	if d <= 0 {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.period = d
}

// remove deletes a service from the desired table.
func (w *ipvsWorker) remove(k ipvs.ServiceKey) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.desired.Delete(k)
	w.version++
	w.poke()
}

func (w *ipvsWorker) poke() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// run applies the table until ctx ends: the whole table at once (adopting
// what the kernel holds) and every period, the changes as they come.
func (w *ipvsWorker) run(ctx context.Context) {
	full := time.NewTimer(w.period)
	defer full.Stop()
	isFull := true
	for {
		if isFull {
			select { // a full run covers the changes waiting
			case <-w.kick:
			default:
			}
		}
		w.mu.Lock()
		snap, ver := w.desired.Clone(), w.version
		w.mu.Unlock()
		if isFull {
			w.record(w.prog.Apply(snap), true)
			w.mu.Lock()
			full.Reset(w.period)
			w.mu.Unlock()
		} else {
			w.record(w.prog.ApplyChanges(snap), false)
		}
		w.mu.Lock()
		w.applied = ver
		close(w.appliedCh)
		w.appliedCh = make(chan struct{})
		w.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-w.kick:
			isFull = false
		case <-full.C:
			isFull = true
		}
	}
}

// waitApplied waits until the kernel has had every change made so far, or
// d passes; it returns how many changes were still waiting then (0: done).
func (w *ipvsWorker) waitApplied(d time.Duration) uint64 {
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	w.mu.Lock()
	want := w.version
	for w.applied < want {
		ch := w.appliedCh
		w.mu.Unlock()
		select {
		case <-ch:
		case <-deadline.C:
			w.mu.Lock()
			left := w.version - w.applied
			w.mu.Unlock()
			return left
		}
		w.mu.Lock()
	}
	w.mu.Unlock()
	return 0
}

func (w *ipvsWorker) record(res ipvs.Result, full bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	st := &w.status
	now := time.Now()
	st.LastRun, st.LastDuration = now, res.Duration
	if full {
		st.LastFull, st.FullRuns = now, st.FullRuns+1
	} else {
		st.ChangeRuns++
	}
	st.Ops += uint64(len(res.Ops))
	st.Repairs += uint64(len(res.Repaired))
	st.FailedOps += uint64(len(res.Failed))
	st.Failed = st.Failed[:0]
	for _, f := range res.Failed {
		st.Failed = append(st.Failed, f.Error())
	}
	st.Unowned = st.Unowned[:0]
	for _, k := range res.Unowned {
		st.Unowned = append(st.Unowned, k.String())
	}
	st.Error = ""
	if res.Err != nil { // failed operations and repairs the reconciler logs itself
		st.Error = res.Err.Error()
		w.log.Error("IPVS", "err", res.Err)
	}
}

func (w *ipvsWorker) snapshot() *control.IPVSStatus {
	w.mu.Lock()
	defer w.mu.Unlock()
	st := w.status
	st.Failed = slices.Clone(st.Failed)
	st.Unowned = slices.Clone(st.Unowned)
	st.Services = w.desired.Len()
	st.Destinations = w.desired.NumDests()
	return &st
}
