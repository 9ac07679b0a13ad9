// Package director is hadirector's engine: one goroutine owns all mutable
// state (the running config, every VRRP instance's state machine, and, as
// their packages land, health transitions and the IPVS table) and turns
// events into actions and status snapshots.
//
// Everything that touches the network or the kernel reaches the engine
// through small interfaces declared here and wired in cmd, so the engine is
// tested with fakes and the real parts are proven in namespaces.
package director

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hadirector/hadirector/internal/config"
	"github.com/hadirector/hadirector/internal/connsync"
	"github.com/hadirector/hadirector/internal/control"
	"github.com/hadirector/hadirector/internal/healthcheck"
	"github.com/hadirector/hadirector/internal/vrrp"
)

// Options are the engine's connections to the world. The zero value runs
// no election (every instance stays in INIT), which is what `check`-like
// uses and the first tests need.
type Options struct {
	// Instances holds the I/O of each VRRP instance, by name. Instances
	// missing here are not run.
	Instances map[string]InstanceIO
	// Readers are the VRRP sockets the engine reads itself, on its own
	// goroutine (see waiter.go); other sources use Deliver.
	Readers []PacketReader
	// Links are the extra heartbeat links, by config name.
	Links map[string]Link
	// LinkInterval is how often a keepalive or advert goes out on the
	// links (the smallest configured link interval).
	LinkInterval time.Duration
	// Hooks is called on the engine goroutine for every transition; it
	// must not block (alert.Runner queues).
	Hooks func(Transition)
	// LinkHealth reports the links for status.
	LinkHealth func() []control.LinkStatus
	// NodeLoss reports the node-loss probe for status (nil: none).
	NodeLoss func() *control.NodeLossStatus
	// SocketDrops reports what the VRRP sockets dropped before the engine
	// saw it (bad TTL, own adverts, malformed), by reason.
	SocketDrops func() map[string]uint64
	// Now is the clock (tests inject one).
	Now func() time.Time
	// LinksDown are the interfaces down at start (see LinkState).
	LinksDown []string

	// Health probes the real servers (nil: nothing is probed and every
	// real server counts as healthy).
	Health Health
	// IPVS keeps the kernel's table (nil: the services are only shown).
	IPVS Programmer
	// ReconcilePeriod is how often IPVS is read whole and drift repaired
	// (default: the config's ipvs.reconcile_period).
	ReconcilePeriod time.Duration
	// ServiceHooks is called on the engine goroutine for every real-server
	// and quorum transition; it must not block.
	ServiceHooks func(ServiceEvent)
	// PeerChanged is called on the engine goroutine when what PeerState
	// returns changed (a verdict, an override, a transition); it must not
	// block (the peer channel's Kick).
	PeerChanged func()
	// HoldPreempt starts every instance with preemption held back
	// (vrrp.PreemptHold) until HoldPreempt(false): the caught-up gate.
	HoldPreempt bool
	// ConvergeWait bounds how long taking the virtual addresses waits for
	// the IPVS worker to apply the table (0: DefaultConvergeWait).
	ConvergeWait time.Duration
}

// Engine is the director. Create it with New and start Run in a goroutine;
// every other method hands work to the Run goroutine, so they are safe from
// any goroutine.
type Engine struct {
	node    string
	version string
	log     *slog.Logger
	opts    Options

	st       *state // owned by Run once it starts
	reqs     chan func(*state)
	packets  chan Packet
	health   chan healthcheck.Transition // forwardHealth's queue
	overflow atomic.Uint64               // packets dropped because the engine was behind
	done     chan struct{}
	waiter   atomic.Pointer[waiter] // while Run runs: how inputs wake it
	stopping atomic.Bool            // Run's ctx is done (set by an AfterFunc, which then wakes the loop)
	pump     pump                   // owned by Run (pump.go)
}

// state is owned by the Run goroutine; nothing else touches it.
type state struct {
	cfg        *config.Config
	advert     vrrp.Advert // receive's scratch (no allocation per advert)
	started    time.Time
	loaded     time.Time
	reloads    int
	lastReload *control.ReloadStatus

	instances []*instance // in config order
	groups    []*group
	// propagating: a sync group is being brought into line; transitions
	// caused by that do not propagate again.
	propagating bool
	linkDown    map[string]bool
	// lostAt: when a peer address was declared dead by the liveness
	// connection. Packets from it received before then are stale: sent by
	// the dead process, queued behind the Lost event.
	lostAt   map[netip.Addr]time.Time
	drops    DropCounts
	nextLink time.Time
	stopping bool
	scratch  vrrp.Advert
	// advertised: the turn's last deed was sending this instance's advert,
	// at priority advertisedPrio, to one destination (the pump may repeat
	// it; pump.go). Nil once anything else happens.
	advertised     *instance
	advertisedPrio uint8

	services []*service // in config order
	targets  map[healthcheck.TargetID]targetRef
	admin    map[adminKey]override
	ipvs     *ipvsWorker // nil without Options.IPVS
	// peer is the other director's latest state (nil: none); following:
	// this node programs the master's verdicts (peer.go).
	peer      *connsync.PeerState
	following bool
	epoch     uint64 // cfg.ServicesEpoch()
}

// ErrStopped is returned by calls made when Run is not running.
var ErrStopped = errors.New("director is not running")

// New makes an engine for node in cfg.
func New(cfg *config.Config, node, version string, log *slog.Logger, opts Options) (*Engine, error) {
	if cfg.Node(node) == nil {
		return nil, fmt.Errorf("node %q is not in %s", node, cfg.File)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	now := opts.Now()
	st := &state{cfg: cfg, epoch: cfg.ServicesEpoch(), started: now, loaded: now, drops: DropCounts{}, linkDown: map[string]bool{}, lostAt: map[netip.Addr]time.Time{},
		admin: map[adminKey]override{}}
	svcs, err := buildServices(cfg, nil, now)
	if err != nil {
		return nil, err
	}
	st.services = svcs
	if opts.IPVS != nil {
		period := opts.ReconcilePeriod
		if period <= 0 {
			period = cfg.IPVS.ReconcilePeriod.D()
		}
		if period <= 0 {
			period = config.DefaultReconcile
		}
		st.ipvs = newIPVSWorker(opts.IPVS, period, log)
	}
	for _, name := range opts.LinksDown {
		st.linkDown[name] = true
	}
	for i := range cfg.Instances {
		in := &cfg.Instances[i]
		io, ok := opts.Instances[in.Name]
		if !ok {
			continue
		}
		if io.Socket == nil || io.VIPs == nil {
			return nil, fmt.Errorf("instance %s: no socket or VIPs", in.Name)
		}
		st.instances = append(st.instances, newInstance(in, cfg.PriorityOf(in, node), io.Socket.Source(), io))
	}
	for i := range cfg.SyncGroups {
		g := &group{cfg: &cfg.SyncGroups[i]}
		for _, in := range st.instances {
			if slices.Contains(g.cfg.Instances, in.cfg.Name) {
				g.members = append(g.members, in)
				in.group = g
			}
		}
		st.groups = append(st.groups, g)
	}
	return &Engine{
		node: node, version: version, log: log, opts: opts, st: st,
		reqs:    make(chan func(*state), 16),
		packets: make(chan Packet, 1024),
		health:  make(chan healthcheck.Transition, 64),
		done:    make(chan struct{}),
	}, nil
}

// Deliver hands a received packet to the engine. It never blocks: when the
// engine is behind, the packet is dropped (and counted as such).
func (e *Engine) Deliver(p Packet) {
	select {
	case e.packets <- p:
		e.wake()
	default:
		e.overflow.Add(1)
	}
}

// wake wakes the loop if it sleeps, after an input was queued.
func (e *Engine) wake() {
	if w := e.waiter.Load(); w != nil {
		w.wake()
	}
}

// Run is the engine's loop. It returns when ctx ends; Shutdown first for a
// graceful handover.
func (e *Engine) Run(ctx context.Context) error {
	defer close(e.done)
	s := e.st
	e.log.Info("director running", "cluster", s.cfg.Cluster.Name, "instances", len(s.instances), "services", len(s.cfg.Services))
	now := e.opts.Now()
	e.startServices(s, now)
	if s.ipvs != nil {
		wctx, wcancel := context.WithCancel(ctx)
		wdone := make(chan struct{})
		go func() { s.ipvs.run(wctx); close(wdone) }()
		defer func() {
			// A full read of a large table can take seconds: do not hold
			// the daemon's exit for it (the kernel keeps what was written).
			wcancel()
			select {
			case <-wdone:
			case <-time.After(2 * time.Second):
				e.log.Warn("IPVS worker still busy at exit; not waiting for it")
			}
		}()
	}
	var health <-chan healthcheck.Transition
	if e.opts.Health != nil {
		health = e.opts.Health.Transitions()
	}
	s.nextLink = now // every node keeps its links alive, master or not
	for _, in := range s.instances {
		e.track(s, in, now) // a tracked link down at start: Fault, not Backup
		if e.opts.HoldPreempt {
			e.apply(s, in, in.machine.Step(vrrp.PreemptHold{On: true}, now), now)
		}
		e.apply(s, in, in.machine.Step(vrrp.Start{}, now), now)
	}
	w, err := newWaiter(e.opts.Readers)
	if err != nil {
		return err
	}
	defer w.close()
	e.waiter.Store(w)
	defer e.waiter.Store(nil) // before w.close (defers run last first)
	for _, r := range e.opts.Readers {
		e.pump.fds = append(e.pump.fds, r.Fd())
	}
	defer e.stopPump()
	defer context.AfterFunc(ctx, func() { e.stopping.Store(true); w.wake() })()
	if health != nil {
		go e.forwardHealth(ctx, health, w)
	}
	read := func(p Packet) {
		s.advertised = nil
		e.receive(s, p)
	}
	// The loop runs inside one RawConn.Read: Read calls turn at once and
	// again each time the epoll descriptor turns readable, and resets that
	// descriptor's readiness only once, here. A Read per sleep would reset
	// it each time and so need one more epoll_wait per wake to be safe.
	var turnErr error
	err = w.rc.Read(func(uintptr) bool {
		stop, terr := e.turn(s, w, read)
		turnErr = terr
		return stop
	})
	if err = errors.Join(err, turnErr); err != nil {
		return err
	}
	e.log.Info("director stopped")
	return nil
}

// turn is one waking of the loop: it drains the readers, takes the queued
// inputs and runs the deadlines due, then sets the timer and reports
// whether to sleep (false, nil) or stop (ctx done, or an error).
func (e *Engine) turn(s *state, w *waiter, read func(Packet)) (stop bool, err error) {
	w.sleeping.Store(false)
	if e.pumpTurn(w) {
		return false, nil
	}
	e.stopPump()
	// Before the queues are looked at: an input queued from here on sets
	// it again.
	w.pending.Store(false)
	s.advertised = nil
	for {
		more := false
		for _, r := range e.opts.Readers {
			if r.Drain(read) {
				more = true // stopped at its cap: come back before sleeping
			}
		}
		for {
			if e.poll(s) {
				if e.stopping.Load() {
					return true, nil
				}
				continue
			}
			now := e.opts.Now()
			next := e.nextDeadline(s)
			if !next.IsZero() && !now.Before(next) {
				e.tick(s)
				continue
			}
			if err := w.arm(next, now); err != nil {
				return true, err
			}
			if more {
				break
			}
			if s.advertised != nil {
				e.setPump(s, s.advertised, s.advertisedPrio)
			}
			// Announce the sleep, then look once more: an input queued
			// before the announcement is seen here, one queued after it
			// writes the wake descriptor.
			w.sleeping.Store(true)
			if e.poll(s) {
				w.sleeping.Store(false)
				if e.stopping.Load() {
					return true, nil
				}
				continue
			}
			return false, nil
		}
	}
}

// poll takes one queued input, if any, without blocking, and reports
// whether it did (a done ctx counts as one).
func (e *Engine) poll(s *state) bool {
	if e.stopping.Load() {
		return true
	}
	// Most turns find nothing queued: say so without a select, which is
	// a good part of an idle advert's CPU. An input queued just after
	// these reads wakes the loop (see turn), so nothing is lost.
	if len(e.reqs) == 0 && len(e.packets) == 0 && len(e.health) == 0 {
		return false
	}
	// Whatever it is may change what the pump would send.
	e.stopPump()
	s.advertised = nil
	select {
	case f := <-e.reqs:
		f(s)
	case p := <-e.packets:
		e.receive(s, p)
	case tr := <-e.health:
		e.healthChanged(s, tr)
	default:
		return false
	}
	return true
}

// forwardHealth moves the probes' transitions onto the engine's queue and
// wakes the loop.
func (e *Engine) forwardHealth(ctx context.Context, in <-chan healthcheck.Transition, w *waiter) {
	for {
		select {
		case <-ctx.Done():
			return
		case tr, ok := <-in:
			if !ok {
				return // the manager closed
			}
			select {
			case e.health <- tr:
				w.wake()
			case <-ctx.Done():
				return
			}
		}
	}
}

// nextDeadline is the earliest deadline of any machine or link send (zero:
// none).
func (e *Engine) nextDeadline(s *state) time.Time { return e.deadlineExcept(s, nil) }

// deadlineExcept is nextDeadline without the machine of skip (the pump's
// instance, whose deadlines setPump splits).
func (e *Engine) deadlineExcept(s *state, skip *instance) time.Time {
	var next time.Time
	for _, in := range s.instances {
		if in == skip {
			continue
		}
		next = earlier(next, in.machine.NextDeadline())
	}
	if len(e.opts.Links) > 0 {
		next = earlier(next, s.nextLink)
	}
	return next
}

// earlier is the earlier of two deadlines, where zero means none.
func earlier(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}

func (e *Engine) tick(s *state) {
	now := e.opts.Now()
	for _, in := range s.instances {
		if d := in.machine.NextDeadline(); !d.IsZero() && !now.Before(d) {
			acts := in.machine.AppendTick(in.lendActs(), now)
			e.apply(s, in, acts, now)
			in.returnActs(acts)
		}
	}
	if len(e.opts.Links) > 0 && !now.Before(s.nextLink) {
		e.sendLinks(s)
		s.nextLink = now.Add(e.opts.LinkInterval)
	}
}

// sendLinks sends, on every link, each master instance's advert that uses
// it, or a keepalive when there is none, so that both ends see the link.
func (e *Engine) sendLinks(s *state) {
	for name, l := range e.opts.Links {
		sent := false
		for _, in := range s.instances {
			if in.machine.State() != vrrp.Master || !slices.Contains(in.io.Links, name) {
				continue
			}
			s.scratch = in.advert
			s.scratch.Priority = in.machine.Priority()
			if in.machine.Stopping() {
				s.scratch.Priority = 0
			}
			env, err := advertEnvelope(in.cfg.Name, in.io.Socket.Source(), in.io.Socket.Group(), &s.scratch)
			if err == nil {
				err = l.Send(env)
			}
			if err != nil {
				e.log.Debug("link send failed", "link", name, "err", err)
			}
			sent = true
		}
		if !sent {
			if err := l.Send(keepalive()); err != nil {
				e.log.Debug("link send failed", "link", name, "err", err)
			}
		}
	}
}

// receive decodes a packet and feeds it to the instance it is for.
func (e *Engine) receive(s *state, p Packet) {
	if s.stopping && !e.anyMasterStopping(s) {
		return
	}
	src, dst, payload := p.Src, p.Dst, p.Payload
	var target *instance
	if p.Link != "" {
		name, from, adv, isAdvert, err := openEnvelope(p.Payload)
		if err != nil {
			s.drops[vrrp.DropTruncated]++
			return
		}
		if !isAdvert {
			return // keepalive: the link layer already counted it as life
		}
		for _, in := range s.instances {
			if in.cfg.Name == name && slices.Contains(in.io.Links, p.Link) {
				target = in
			}
		}
		if target == nil {
			s.drops[vrrp.DropWrongVRID]++
			return
		}
		src, dst, payload = from, target.io.Socket.Group(), adv
	}
	if lost, ok := s.lostAt[src]; ok && !p.At.IsZero() && p.At.Before(lost) {
		// Sent by a process that has since died (the liveness connection
		// said so): acting on it would hand the VIPs back to nobody.
		s.drops[vrrp.DropFromDeadPeer]++
		return
	}
	a := &s.advert // reused: Unmarshal keeps its Addrs' storage (the machine keeps no part of it)
	if err := a.Unmarshal(payload, src, dst); err != nil {
		s.drops[vrrp.Reason(err)]++
		return
	}
	if target == nil {
		for _, in := range s.instances {
			if in.cfg.Interface == p.Interface && uint8(in.cfg.VRID) == a.VRID && (in.cfg.Family() == config.IPv4) == src.Is4() {
				target = in
				break
			}
		}
	}
	if target == nil {
		s.drops[vrrp.DropWrongVRID]++
		return
	}
	if len(target.io.Peers) > 0 && p.Link == "" && !slices.Contains(target.io.Peers, src) {
		// Unicast instances listen to their peers only.
		s.drops[vrrp.DropWrongVRID]++
		return
	}
	now := e.opts.Now()
	if p.Link == "" && !p.At.IsZero() && p.At.Before(now) {
		// Its arrival: a routine advert is read late, and the timers
		// must run from when it came (heartbeat/routine.go).
		now = p.At
	}
	acts := target.machine.AppendReceived(target.lendActs(), src, a, now)
	e.apply(s, target, acts, now)
	target.returnActs(acts)
	if p.Link == "" {
		e.noteRoutine(target, src, payload)
	}
}

func (e *Engine) anyMasterStopping(s *state) bool {
	for _, in := range s.instances {
		if in.machine.Stopping() {
			return true
		}
	}
	return false
}

// apply carries out a machine's actions in order.
func (e *Engine) apply(s *state, in *instance, actions []vrrp.Action, now time.Time) {
	for _, a := range actions {
		switch a := a.(type) {
		case vrrp.SendAdvert:
			if err := in.send(a.Priority); err != nil {
				e.log.Warn("sending VRRP advert", "instance", in.cfg.Name, "err", err)
				s.advertised = nil
			} else if len(in.io.Peers) <= 1 {
				s.advertised, s.advertisedPrio = in, a.Priority
			}
			if len(e.opts.Links) > 0 && len(in.io.Links) > 0 {
				// A master's state goes out on the links at once too.
				s.nextLink = now
			}
		case vrrp.TakeVIPs:
			// Takeover order: the table this node will direct with is in
			// the kernel first, then the addresses, then the ARP.
			e.converge(s, in)
			if err := in.io.VIPs.Take(); err != nil {
				e.log.Error("taking the VIPs", "instance", in.cfg.Name, "err", err)
			}
		case vrrp.ReleaseVIPs:
			if err := in.io.VIPs.Release(); err != nil {
				e.log.Error("releasing the VIPs", "instance", in.cfg.Name, "err", err)
			}
		case vrrp.Announce:
			if err := in.io.VIPs.Announce(); err != nil {
				e.log.Warn("announcing the VIPs", "instance", in.cfg.Name, "err", err)
			}
		case vrrp.Transition:
			if a.To != vrrp.Backup {
				e.setRoutine(in, routine{})
			}
			in.lastTransition, in.lastReason = now, a.Reason
			e.log.Info("VRRP transition", "instance", in.cfg.Name, "from", a.From.String(), "to", a.To.String(),
				"priority", in.machine.Priority(), "reason", a.Reason)
			if e.opts.Hooks != nil {
				e.opts.Hooks(Transition{Instance: in.cfg.Name, From: a.From, To: a.To, Priority: int(in.machine.Priority()), Reason: a.Reason, At: now})
			}
			if in.group != nil {
				e.syncGroup(s, in, a, now)
			}
			if a.From == vrrp.Master || a.To == vrrp.Master {
				e.follow(s) // a master follows no one
				e.peerKick()
			}
		case vrrp.Stopped:
			in.stopped = true
		}
	}
}

// Shutdown stops every instance gracefully: a master advertises priority 0
// and keeps its VIPs until its successor has spoken (or a bound passes).
// It returns when every instance has stopped, or ctx ends.
func (e *Engine) Shutdown(ctx context.Context) error {
	if err := e.do(ctx, func(s *state) {
		s.stopping = true
		now := e.opts.Now()
		for _, in := range s.instances {
			e.apply(s, in, in.machine.Step(vrrp.Stop{}, now), now)
		}
	}); err != nil {
		return err
	}
	for {
		var all bool
		if err := e.do(ctx, func(s *state) {
			all = true
			for _, in := range s.instances {
				all = all && in.stopped
			}
		}); err != nil {
			return err
		}
		if all {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// do runs f on the loop and waits for it.
func (e *Engine) do(ctx context.Context, f func(*state)) error {
	finished := make(chan struct{})
	select {
	case e.reqs <- func(s *state) { f(s); close(finished) }:
		e.wake()
	case <-e.done:
		return ErrStopped
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-finished:
		return nil
	case <-e.done:
		select {
		case <-finished:
			return nil
		default:
			return ErrStopped // queued as the loop ended
		}
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Alive answers when the loop is making progress; the systemd watchdog is
// fed only while it does.
func (e *Engine) Alive(ctx context.Context) error {
	return e.do(ctx, func(*state) {})
}

// inPlaceFields are the keys of a VRRP instance that a reload changes in
// the running state machine; every other change to the election (nodes'
// interfaces, links, instances added or removed, VIPs, interfaces, VRIDs,
// unicast peers, tracked interfaces, sync groups) needs a restart, because
// it changes sockets, addresses or watches built at start.
var inPlaceFields = []string{"priority", "advert_interval", "preempt", "preempt_delay", "notify", "notify_timeout"}

// restartNeeded lists the changes a reload cannot apply to running
// instances.
func restartNeeded(changes []config.Change) []string {
	var out []string
	for _, c := range changes {
		switch c.Section {
		case "node", "vrrp_instance":
			if c.Op == config.Changed && !slices.ContainsFunc(c.Fields, func(f string) bool { return !slices.Contains(inPlaceFields, f) }) {
				continue
			}
			out = append(out, c.String())
		case "link", "sync_group":
			out = append(out, c.String())
		case "ipvs":
			if slices.Contains(c.Fields, "state_file") {
				out = append(out, c.String())
			}
		}
	}
	return out
}

// Reload applies a new, already validated config: services by their
// difference, and to running VRRP instances their priority, advert
// interval, preempt settings and hooks. It is refused whole (the running
// config kept) when this node is not in it, or when it changes the election
// in a way only a restart can apply. It returns what changed.
func (e *Engine) Reload(ctx context.Context, cfg *config.Config) ([]config.Change, error) {
	var changes []config.Change
	var err error
	derr := e.do(ctx, func(s *state) {
		diff := config.Diff(s.cfg, cfg)
		now := e.opts.Now()
		switch restart := restartNeeded(diff); {
		case cfg.Node(e.node) == nil:
			err = fmt.Errorf("node %q is not in the new config; nodes there: %v", e.node, cfg.NodeNames())
		case len(s.instances) > 0 && len(restart) > 0:
			err = fmt.Errorf("the new config changes what a reload cannot apply (%s): restart the daemon for that", strings.Join(restart, "; "))
		}
		// (A priority to or from 255 cannot get here: validation ties it to
		// owning the VIPs, and changing VIPs or addresses needs a restart.)
		var next []*service
		if err == nil {
			next, err = buildServices(cfg, s.services, now)
		}
		if err != nil {
			s.lastReload = &control.ReloadStatus{At: now, Error: err.Error()}
			return
		}
		s.cfg, s.loaded, s.epoch = cfg, now, cfg.ServicesEpoch()
		e.reloadInstances(s, cfg, now)
		// The new services follow the master (or not) from their first
		// push: a backup's table never shows its own verdicts in passing.
		e.setFollow(s, next)
		e.reloadServices(s, next, now)
		if s.ipvs != nil {
			s.ipvs.setPeriod(cfg.IPVS.ReconcilePeriod.D())
		}
		e.peerKick()
		changes = diff
		s.reloads++
		lr := &control.ReloadStatus{At: s.loaded, Applied: true}
		for _, c := range changes {
			lr.Changes = append(lr.Changes, c.String())
		}
		s.lastReload = lr
	})
	if derr != nil {
		return nil, derr
	}
	return changes, err
}

// reloadInstances points the running instances at cfg and hands their
// machines the settings that may change in place.
func (e *Engine) reloadInstances(s *state, cfg *config.Config, now time.Time) {
	for _, in := range s.instances {
		for i := range cfg.Instances {
			nc := &cfg.Instances[i]
			if nc.Name != in.cfg.Name {
				continue
			}
			in.cfg = nc
			in.advert.Interval = nc.AdvertInterval.D()
			e.apply(s, in, in.machine.Step(vrrp.Reconfigure{
				Priority: uint8(cfg.PriorityOf(nc, e.node)), AdvertInterval: nc.AdvertInterval.D(),
				Preempt: nc.Preempt, PreemptDelay: nc.PreemptDelay.D(),
			}, now), now)
		}
	}
	for _, g := range s.groups {
		for i := range cfg.SyncGroups {
			if cfg.SyncGroups[i].Name == g.cfg.Name {
				g.cfg = &cfg.SyncGroups[i]
			}
		}
	}
}

// RefuseReload records a reload that did not pass validation, for status.
func (e *Engine) RefuseReload(ctx context.Context, reason error) error {
	return e.do(ctx, func(s *state) {
		s.lastReload = &control.ReloadStatus{At: e.opts.Now(), Error: reason.Error()}
	})
}

// Status is a snapshot for the control socket.
func (e *Engine) Status(ctx context.Context) (*control.Status, error) {
	var st *control.Status
	err := e.do(ctx, func(s *state) { st = e.snapshot(s) })
	if err == nil && e.opts.LinkHealth != nil {
		st.Links = e.opts.LinkHealth()
	}
	if err == nil && e.opts.NodeLoss != nil {
		st.NodeLoss = e.opts.NodeLoss()
	}
	if err == nil && e.opts.SocketDrops != nil {
		for r, n := range e.opts.SocketDrops() {
			if n == 0 {
				continue
			}
			if st.Drops == nil {
				st.Drops = map[string]uint64{}
			}
			st.Drops[r] += n
		}
	}
	return st, err
}

func (e *Engine) snapshot(s *state) *control.Status {
	c := s.cfg
	st := &control.Status{
		Cluster: c.Cluster.Name, Node: e.node, Version: e.version, PID: os.Getpid(),
		Started: s.started, ConfigFile: c.File, Loaded: s.loaded, Reloads: s.reloads, LastReload: s.lastReload,
		Instances: []control.InstanceStatus{}, Services: []control.ServiceStatus{},
	}
	running := map[string]*instance{}
	for _, in := range s.instances {
		running[in.cfg.Name] = in
	}
	for i := range c.Instances {
		in := &c.Instances[i]
		if r := running[in.Name]; r != nil {
			st.Instances = append(st.Instances, r.status(e.node))
			continue
		}
		// Not run (no I/O given): RFC 5798's Initialize, owning nothing.
		is := control.InstanceStatus{Name: in.Name, VRID: in.VRID, Interface: in.Interface, State: vrrp.Initialize.String(),
			Priority: c.PriorityOf(in, e.node), AdvertInterval: in.AdvertInterval.D()}
		for _, v := range in.VIPs {
			is.VIPs = append(is.VIPs, v.String())
		}
		st.Instances = append(st.Instances, is)
	}
	if len(s.drops) > 0 || e.overflow.Load() > 0 {
		st.Drops = map[string]uint64{}
		for r, n := range s.drops {
			st.Drops[r.String()] = n
		}
		if n := e.overflow.Load(); n > 0 {
			st.Drops["engine_queue_full"] = n
		}
	}
	for _, sv := range s.services {
		st.Services = append(st.Services, e.serviceStatus(s, sv))
	}
	if s.ipvs != nil {
		st.IPVS = s.ipvs.snapshot()
	}
	return st
}

// LinkState reports an interface's link going up or down. Each instance
// tracks its own interface (down: Fault) and its track_interface entries
// (weight 0: Fault; otherwise the priority changes by the weight).
func (e *Engine) LinkState(ifname string, up bool) {
	e.do(context.Background(), func(s *state) {
		if s.linkDown[ifname] == !up {
			return
		}
		s.linkDown[ifname] = !up
		e.log.Info("tracked interface", "interface", ifname, "up", up)
		now := e.opts.Now()
		for _, in := range s.instances {
			e.track(s, in, now)
		}
	})
}

// track feeds an instance's machine the state of the interfaces it tracks.
func (e *Engine) track(s *state, in *instance, now time.Time) {
	fault := s.linkDown[in.cfg.Interface]
	delta := 0
	for _, t := range in.cfg.TrackInterfaces {
		if !s.linkDown[t.Name] {
			continue
		}
		if t.Weight == 0 {
			fault = true
		} else {
			delta += t.Weight
		}
	}
	if fault != in.fault {
		in.fault = fault
		var ev vrrp.Event = vrrp.LinkUp{}
		if fault {
			ev = vrrp.LinkDown{}
		}
		e.apply(s, in, in.machine.Step(ev, now), now)
	}
	if delta != in.delta {
		in.delta = delta
		e.apply(s, in, in.machine.Step(vrrp.PriorityDelta{Delta: delta}, now), now)
	}
}

// PeerLost reports that the peer is gone: the liveness connection saw its
// process die (its kernel closed the connection without a goodbye), or its
// node stopped answering (every link silent, no ARP answer). A backup whose
// master that was takes over at once instead of waiting out the timer.
// reason is for the transition ("" : the liveness connection).
func (e *Engine) PeerLost(addrs []netip.Addr, reason string) {
	e.do(context.Background(), func(s *state) {
		now := e.opts.Now()
		for _, a := range addrs {
			s.lostAt[a] = now
		}
		for _, in := range s.instances {
			for _, a := range addrs {
				e.apply(s, in, in.machine.Step(vrrp.MasterLost{Master: a, Reason: reason}, now), now)
			}
		}
	})
}

// group is a sync group: instances that fail over together.
type group struct {
	cfg     *config.SyncGroup
	members []*instance
	state   vrrp.State // last state reported to the group's hook
}

// syncGroup brings the other members of in's group into line after in's
// transition t (keepalived's vrrp_sync_group): a member in Fault puts the
// group in Fault; one that yields, or takes over, carries the others along.
func (e *Engine) syncGroup(s *state, in *instance, t vrrp.Transition, now time.Time) {
	g := in.group
	if !s.propagating {
		s.propagating = true
		reason := fmt.Sprintf("sync group %s: %s went %s", g.cfg.Name, in.cfg.Name, t.To)
		var ev vrrp.Event
		switch {
		case t.To == vrrp.Fault:
			ev = vrrp.GroupFault{On: true}
		case t.From == vrrp.Fault && !g.anyOwnFault():
			ev = vrrp.GroupFault{On: false}
		case t.From == vrrp.Master && t.To == vrrp.Backup:
			ev = vrrp.ForceBackup{Reason: reason}
		case t.From == vrrp.Backup && t.To == vrrp.Master:
			ev = vrrp.ForceMaster{Reason: reason}
		}
		if ev != nil {
			for _, m := range g.members {
				if m != in {
					e.apply(s, m, m.machine.Step(ev, now), now)
				}
			}
		}
		s.propagating = false
	}
	// The group's hook runs when all members agree on a new state.
	st := in.machine.State()
	for _, m := range g.members {
		if m.machine.State() != st {
			return
		}
	}
	if st != g.state {
		from := g.state
		g.state = st
		e.log.Info("sync group transition", "group", g.cfg.Name, "from", from.String(), "to", st.String())
		if e.opts.Hooks != nil {
			e.opts.Hooks(Transition{Group: g.cfg.Name, From: from, To: st, Reason: t.Reason, At: now})
		}
	}
}

// anyOwnFault: a member is in Fault for its own tracked interfaces.
func (g *group) anyOwnFault() bool {
	for _, m := range g.members {
		if m.fault {
			return true
		}
	}
	return false
}
