package healthcheck

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultRoundJitter is Options.RoundJitter's default: each round starts
// within ±2 % of the interval from its fixed-rate slot.
const DefaultRoundJitter = 0.02

// Options configure a Manager. The zero value is usable.
type Options struct {
	// Logger receives debug lines for transitions and errors (a checker
	// that panicked). Default: discard.
	Logger *slog.Logger
	// Pinger is the ICMP socket pair shared by ICMP checks. Default: the
	// Manager makes its own on first use and closes it in Close.
	Pinger *Pinger
	// Quantum is the scheduler's resolution (default DefaultQuantum): it
	// wakes at most once per quantum and starts every round due within
	// half a quantum.
	Quantum time.Duration
	// RoundJitter is the largest deviation of a round from its fixed-rate
	// slot, as a fraction of the interval (default DefaultRoundJitter,
	// at most 0.25; negative: none). The first round is always at a
	// random offset within one interval.
	RoundJitter float64
}

// Manager schedules the probes of all targets and emits their transitions.
// Its methods are safe for concurrent use.
type Manager struct {
	log       *slog.Logger
	env       Env
	ownPinger bool
	jitter    float64
	q         *queue
	wheel     *wheel

	mu      sync.Mutex
	closed  bool
	targets map[TargetID]*target
	probes  map[string]*probe

	running  sync.WaitGroup
	inFlight atomic.Int64
	checks   atomic.Uint64
	failures atomic.Uint64
	late     atomic.Uint64
	panics   atomic.Uint64
}

// target is one subscriber of a probe. Its state fields are guarded by the
// mutex of its current probe.
type target struct {
	id    TargetID
	spec  Spec
	probe *probe // guarded by Manager.mu

	state     State
	since     time.Time
	weight    int
	hasWeight bool
}

// probe runs one checker on its schedule for every target subscribed to it.
type probe struct {
	m        *Manager
	key      string
	checker  Checker
	interval time.Duration
	timeout  time.Duration

	// guarded by the wheel's mutex
	wheelTick  int64 // the wheel's tick of the next round
	wheelIndex int   // in the wheel's slot; -1: not there

	mu      sync.Mutex
	stopped bool
	// round is the context of the check in flight, if any.
	round    *roundCtx
	subs     []*target
	anchor   time.Time // the current round's fixed-rate slot
	due      time.Time // when the current round was scheduled to start
	streakOK bool
	streak   int
	// quiet: the latest round changed no subscriber, and the streak has
	// reached every subscriber's rise and fall: while the results stay the
	// same (and carry no weight), no subscriber will change, and record
	// skips them. Cleared when the subscribers or their specs change.
	quiet  bool
	last   Result
	lastAt time.Time
	rounds uint64
}

// NewManager returns a Manager with no targets.
func NewManager(opts Options) *Manager {
	m := &Manager{
		log:     opts.Logger,
		env:     Env{Pinger: opts.Pinger},
		jitter:  opts.RoundJitter,
		q:       newQueue(),
		targets: make(map[TargetID]*target),
		probes:  make(map[string]*probe),
	}
	if m.log == nil {
		m.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if m.env.Pinger == nil {
		m.env.Pinger = NewPinger()
		m.ownPinger = true
	}
	switch {
	case m.jitter == 0:
		m.jitter = DefaultRoundJitter
	case m.jitter < 0:
		m.jitter = 0
	case m.jitter > 0.25:
		m.jitter = 0.25
	}
	quantum := opts.Quantum
	if quantum <= 0 {
		quantum = DefaultQuantum
	}
	m.wheel = newWheel(quantum, (*probe).run)
	go m.wheel.run()
	go m.q.run()
	return m
}

// Transitions delivers every transition of every target, in order per
// target. The channel is unbuffered and fed from a coalescing queue: a
// consumer that falls behind receives merged transitions (see Transition),
// never a blocked probe. It is closed by Close.
//
// A transition of a target that was just removed may still arrive (it was
// already being handed over); ignore transitions of unknown targets.
func (m *Manager) Transitions() <-chan Transition { return m.q.out }

// Add starts probing a target. If another target already uses a spec with
// the same probe key, the two share that probe. Add fails for an invalid
// spec or an id that is already added.
func (m *Manager) Add(id TargetID, spec Spec) error {
	if err := spec.Validate(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	if _, ok := m.targets[id]; ok {
		return fmt.Errorf("%w: %s", ErrDuplicateTarget, id)
	}
	p, err := m.probeLocked(spec)
	if err != nil {
		return err
	}
	t := &target{id: id, spec: spec, state: spec.Initial, since: time.Now()}
	m.targets[id] = t
	m.attachLocked(t, p)
	return nil
}

// Update changes a target's spec in place, keeping its state. If only
// rise, fall or the initial state change, nothing else is disturbed. If the
// probe key changes (checker, interval, timeout), the target moves to the
// probe of its new spec, keeping its current state until the new probe's
// results say otherwise (a reload must not bounce a healthy server).
func (m *Manager) Update(id TargetID, spec Spec) error {
	if err := spec.Validate(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	t, ok := m.targets[id]
	if !ok {
		return fmt.Errorf("%w: %s", ErrUnknownTarget, id)
	}
	old := t.probe
	if spec.probeKey() == old.key {
		old.mu.Lock()
		old.quiet = false
		t.spec = spec
		old.mu.Unlock()
		return nil
	}
	p, err := m.probeLocked(spec)
	if err != nil {
		return err
	}
	m.detachLocked(t)
	p.mu.Lock()
	t.spec = spec
	p.mu.Unlock()
	m.attachLocked(t, p)
	return nil
}

// Remove stops probing a target (and stops its probe if no other target
// uses it; a check in flight is canceled). Pending transitions of the
// target are discarded.
func (m *Manager) Remove(id TargetID) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	t, ok := m.targets[id]
	if !ok {
		return fmt.Errorf("%w: %s", ErrUnknownTarget, id)
	}
	delete(m.targets, id)
	m.detachLocked(t)
	m.q.drop(id)
	return nil
}

// probeLocked returns the probe for spec's key, creating (and scheduling)
// it if there is none.
func (m *Manager) probeLocked(spec Spec) (*probe, error) {
	key := spec.probeKey()
	if p, ok := m.probes[key]; ok {
		return p, nil
	}
	c, err := spec.Check.NewChecker(&m.env)
	if err != nil {
		return nil, err
	}
	p := &probe{
		m: m, key: key, checker: c,
		interval: spec.Interval, timeout: spec.Timeout,
	}
	// The first round at a random offset within one interval.
	offset := time.Duration(rand.Int64N(int64(spec.Interval)))
	p.wheelIndex = -1
	p.mu.Lock()
	p.anchor = time.Now().Add(offset)
	p.due = p.anchor
	m.wheel.push(p, p.due)
	p.mu.Unlock()
	m.probes[key] = p
	return p, nil
}

func (m *Manager) attachLocked(t *target, p *probe) {
	p.mu.Lock()
	p.quiet = false
	p.subs = append(p.subs, t)
	p.mu.Unlock()
	t.probe = p
}

// detachLocked unsubscribes t from its probe and stops the probe if it
// was the last subscriber.
func (m *Manager) detachLocked(t *target) {
	p := t.probe
	p.mu.Lock()
	p.subs = slices.DeleteFunc(p.subs, func(s *target) bool { return s == t })
	last := len(p.subs) == 0
	if last {
		p.stopLocked()
	}
	p.mu.Unlock()
	if last {
		delete(m.probes, p.key)
	}
}

func (p *probe) stopLocked() {
	p.stopped = true
	p.m.wheel.remove(p)
	if p.round != nil {
		p.round.cancel(context.Canceled) // the check in flight returns at once
	}
	// This interrupts the check in flight too, if the checker has a
	// Close: the HTTP check does not watch its round's context (see
	// httpChecker.exchange). run closes it again once the check is over.
	closeChecker(p.checker)
}

// closeChecker releases what a checker keeps between rounds (an HTTP
// check's kept-alive connection).
func closeChecker(c Checker) {
	if cl, ok := c.(io.Closer); ok {
		cl.Close()
	}
}

// Close stops every probe, waits for the checks in flight to return (they
// are canceled), and closes the Transitions channel. Transitions not yet
// delivered are discarded.
func (m *Manager) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	for _, p := range m.probes {
		p.mu.Lock()
		p.stopLocked()
		p.mu.Unlock()
	}
	m.mu.Unlock()
	m.running.Wait()
	m.wheel.close()
	m.q.close()
	if m.ownPinger {
		return m.env.Pinger.Close()
	}
	return nil
}

// run is one round of a probe, in a goroutine of its own started by the
// wheel.
func (p *probe) run() {
	m := p.m
	start := time.Now()
	// A context of its own per round, canceled by stopLocked if the probe
	// stops.
	ctx := &roundCtx{deadline: start.Add(p.timeout)}
	p.mu.Lock()
	if p.stopped {
		p.mu.Unlock()
		return
	}
	m.running.Add(1)
	due := p.due
	p.round = ctx
	p.mu.Unlock()
	defer m.running.Done()

	if start.Sub(due) > p.interval/10+10*time.Millisecond {
		m.late.Add(1)
	}
	m.inFlight.Add(1)
	res := p.check(ctx)
	ctx.cancel(context.Canceled)
	m.inFlight.Add(-1)
	at := time.Now()
	// From the round's start, the base of its deadline: a check measures
	// from its own start, a little later when the machine is busy, and a
	// timed-out probe would then seem to have given up before its timeout.
	res.Duration = at.Sub(start)
	m.checks.Add(1)
	if !res.OK {
		m.failures.Add(1)
	}

	p.mu.Lock()
	defer p.mu.Unlock()
	p.round = nil
	if p.stopped {
		closeChecker(p.checker)
		return // removed while the check ran: its result belongs to no one
	}
	p.record(res, at)
	p.scheduleLocked(at)
}

// check runs the checker, turning a panic into a failed result: a buggy
// checker fails its own target, not the daemon.
func (p *probe) check(ctx context.Context) (res Result) {
	defer func() {
		if r := recover(); r != nil {
			p.m.panics.Add(1)
			p.m.log.Error("healthcheck: checker panicked", "probe", p.key, "panic", fmt.Sprint(r))
			res = Result{Detail: fmt.Sprintf("checker panicked: %v", r)}
		}
	}()
	return p.checker.Check(ctx)
}

// record counts the result into the probe's streak and emits the
// transitions of its subscribers. p.mu is held.
func (p *probe) record(res Result, at time.Time) {
	p.rounds++
	p.last, p.lastAt = res, at
	if p.streak > 0 && res.OK == p.streakOK {
		p.streak++
	} else {
		p.streakOK, p.streak, p.quiet = res.OK, 1, false
	}
	if p.quiet && !res.HasWeight {
		return
	}
	changed := false
	reached := true // the streak has reached every subscriber's rise and fall
	for _, t := range p.subs {
		reached = reached && p.streak >= t.spec.Rise && p.streak >= t.spec.Fall
		to := t.state
		switch {
		case res.OK && p.streak >= t.spec.Rise:
			to = StateUp
		case !res.OK && p.streak >= t.spec.Fall:
			to = StateDown
		}
		tr := Transition{
			Target: t.id, From: t.state, To: to, Detail: res.Detail, At: at,
			ConsecutiveCount: p.streak, Weight: res.Weight, HasWeight: res.HasWeight,
		}
		switch {
		case to != t.state:
			t.state, t.since = to, at
			if to == StateUp {
				t.weight, t.hasWeight = res.Weight, res.HasWeight
			}
		case to == StateUp && res.OK && (res.HasWeight != t.hasWeight || res.Weight != t.weight):
			t.weight, t.hasWeight = res.Weight, res.HasWeight
			tr.WeightChanged = true
		default:
			continue
		}
		changed = true
		p.m.log.Debug("healthcheck: transition", "target", t.id, "from", tr.From, "to", tr.To,
			"detail", tr.Detail, "consecutive", tr.ConsecutiveCount)
		p.m.q.push(tr)
	}
	p.quiet = !changed && reached && !res.HasWeight
}

// scheduleLocked queues the next round: the next fixed-rate
// slot after the current one (skipping slots already past, if the check or
// the process was late), plus a random deviation of up to ±jitter·interval.
func (p *probe) scheduleLocked(now time.Time) {
	p.anchor = p.anchor.Add(p.interval)
	if behind := now.Sub(p.anchor); behind > 0 {
		skip := behind / p.interval // slots entirely missed
		if skip > 0 {
			p.m.late.Add(uint64(skip))
			p.anchor = p.anchor.Add(skip * p.interval)
		}
	}
	next := p.anchor
	if j := int64(float64(p.interval) * p.m.jitter); j > 0 {
		next = next.Add(time.Duration(rand.Int64N(2*j+1) - j))
	}
	p.due = next
	p.m.wheel.push(p, next)
}

// TargetStatus is a snapshot of one target, for status displays.
type TargetStatus struct {
	ID    TargetID
	Spec  Spec
	State State
	// Since is when the target entered State (when it was added, for the
	// initial state).
	Since time.Time
	// Weight is the dynamic weight in force, if HasWeight.
	Weight    int
	HasWeight bool
	// Last is the latest result of the target's probe, obtained at LastAt
	// (zero before the first round).
	Last   Result
	LastAt time.Time
	// Streak is the number of identical results in a row (StreakOK: all
	// successes).
	Streak   int
	StreakOK bool
	// Shared is how many targets share this target's probe (itself
	// included); Rounds how many rounds the probe has completed.
	Shared int
	Rounds uint64
}

// Status returns a snapshot of one target.
func (m *Manager) Status(id TargetID) (TargetStatus, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	t, ok := m.targets[id]
	if !ok {
		return TargetStatus{}, false
	}
	p := t.probe
	p.mu.Lock()
	defer p.mu.Unlock()
	return TargetStatus{
		ID: id, Spec: t.spec, State: t.state, Since: t.since,
		Weight: t.weight, HasWeight: t.hasWeight,
		Last: p.last, LastAt: p.lastAt, Streak: p.streak, StreakOK: p.streakOK,
		Shared: len(p.subs), Rounds: p.rounds,
	}, true
}

// Stats are the Manager's counters.
type Stats struct {
	Targets int // targets added
	Probes  int // distinct probes (after dedup)
	// InFlight is the number of checks running now.
	InFlight int
	Checks   uint64 // checks completed
	Failures uint64 // of which failed
	// Late counts rounds that started more than a tenth of the interval
	// (+10ms) after their slot, or were skipped because the previous round
	// overran.
	Late uint64
	// Panics counts checker panics (each a failed result).
	Panics uint64
	// Transitions counts transitions queued; Coalesced how many of them
	// were merged into a later one before the consumer took them.
	Transitions uint64
	Coalesced   uint64
}

// Stats returns the counters.
func (m *Manager) Stats() Stats {
	m.mu.Lock()
	s := Stats{Targets: len(m.targets), Probes: len(m.probes)}
	m.mu.Unlock()
	s.InFlight = int(m.inFlight.Load())
	s.Checks = m.checks.Load()
	s.Failures = m.failures.Load()
	s.Late = m.late.Load()
	s.Panics = m.panics.Load()
	s.Transitions, s.Coalesced = m.q.counts()
	return s
}

// roundCtx is the context of one round: its deadline, and a cancel when
// the probe stops. It costs one small allocation when nothing waits on
// Done (an HTTP check over a kept-alive connection enforces the deadline
// on its socket); context.WithDeadline costs a timer and a cancelCtx per
// round, and a child map for every context.AfterFunc on it. Done is made
// (with its timer for the deadline) on first use. It implements the
// AfterFunc method that package context looks for, so that
// context.AfterFunc and the contexts derived from it need no goroutine to
// watch it.
type roundCtx struct {
	deadline time.Time

	mu    sync.Mutex
	done  chan struct{}
	timer *time.Timer
	err   error
	funcs []*roundFunc
}

// roundFunc is a function registered by AfterFunc.
type roundFunc struct {
	f    func()
	done bool // started, or stopped
}

func (c *roundCtx) Deadline() (time.Time, bool) { return c.deadline, true }

func (c *roundCtx) Value(any) any { return nil }

func (c *roundCtx) Done() <-chan struct{} {
	c.mu.Lock()
	if c.done != nil {
		defer c.mu.Unlock()
		return c.done
	}
	c.done = make(chan struct{})
	done := c.done
	var funcs []*roundFunc
	if c.err != nil {
		close(c.done)
	} else if d := time.Until(c.deadline); d <= 0 {
		funcs = c.endLocked(context.DeadlineExceeded)
	} else {
		c.timer = time.AfterFunc(d, func() { c.cancel(context.DeadlineExceeded) })
	}
	c.mu.Unlock()
	startFuncs(funcs)
	return done
}

// Err is DeadlineExceeded from the deadline on, even if no timer has
// fired yet (Done is then closed first, as the contract of Err asks).
func (c *roundCtx) Err() error {
	c.mu.Lock()
	var funcs []*roundFunc
	if c.err == nil && !time.Now().Before(c.deadline) {
		funcs = c.endLocked(context.DeadlineExceeded)
	}
	err := c.err
	c.mu.Unlock()
	startFuncs(funcs)
	return err
}

// AfterFunc arranges for f to run in its own goroutine once the context
// is done, like context.AfterFunc.
func (c *roundCtx) AfterFunc(f func()) (stop func() bool) {
	c.Done() // arms the deadline's timer
	rf := &roundFunc{f: f}
	c.mu.Lock()
	if c.err != nil {
		rf.done = true
		c.mu.Unlock()
		go f()
		return func() bool { return false }
	}
	c.funcs = append(c.funcs, rf)
	c.mu.Unlock()
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		stopped := !rf.done
		rf.done = true
		return stopped
	}
}

func (c *roundCtx) cancel(err error) {
	c.mu.Lock()
	var funcs []*roundFunc
	if c.err == nil {
		funcs = c.endLocked(err)
	}
	c.mu.Unlock()
	startFuncs(funcs)
}

// endLocked ends the context with err, and returns the functions to
// start (once c.mu is released).
func (c *roundCtx) endLocked(err error) []*roundFunc {
	c.err = err
	if c.done != nil {
		close(c.done)
	}
	if c.timer != nil {
		c.timer.Stop()
	}
	funcs := c.funcs
	c.funcs = nil
	for i, rf := range funcs {
		if rf.done {
			funcs[i] = nil
		}
		rf.done = true
	}
	return funcs
}

func startFuncs(funcs []*roundFunc) {
	for _, rf := range funcs {
		if rf != nil {
			go rf.f()
		}
	}
}

func (c *roundCtx) String() string { return "healthcheck.roundCtx" }
