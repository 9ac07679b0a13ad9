package vrrp

import (
	"fmt"
	"net/netip"
	"time"
)

// State is a VRRP router state (RFC 5798 §6.4), plus Fault for a tracked
// failure (keepalived's FAULT).
type State int

// States.
const (
	Initialize State = iota
	Backup
	Master
	Fault
)

func (s State) String() string {
	switch s {
	case Initialize:
		return "INIT"
	case Backup:
		return "BACKUP"
	case Master:
		return "MASTER"
	case Fault:
		return "FAULT"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// Config is one virtual router's static parameters.
type Config struct {
	VRID uint8
	// Priority is the configured priority, 1..255; 255 is the address owner.
	Priority       uint8
	AdvertInterval time.Duration
	Preempt        bool
	// PreemptDelay holds back a preemption this long after this router
	// first sees a lower-priority master (keepalived's preempt_delay).
	PreemptDelay time.Duration
	// Primary is this router's own source address on the instance's
	// interface; it breaks priority ties (RFC 5798 §6.4.3).
	Primary netip.Addr
	// HandoverLinger is how long a stopping master keeps the VIPs after the
	// new master's first advert, so that the new master's gratuitous ARP
	// reaches the clients before the old owner stops answering.
	// DefaultHandoverLinger when zero.
	HandoverLinger time.Duration
}

// DefaultHandoverLinger is Config.HandoverLinger's default.
const DefaultHandoverLinger = 20 * time.Millisecond

// Event is an input to Step.
type Event interface{ event() }

// Start takes the router out of Initialize (RFC 5798 Startup event).
type Start struct{}

// Stop is a graceful shutdown. A master advertises priority 0 but keeps
// its VIPs until the new master has spoken (or a bound passes), then
// releases them; Stopped reports when it is done.
type Stop struct{}

// Received is an advert that passed the codec's and the socket's checks.
type Received struct {
	From   netip.Addr // IP source address: the sender's primary address
	Advert *Advert
}

// Tick asks the machine to run the timers that are due. The driver sends
// it at NextDeadline.
type Tick struct{}

// LinkDown and LinkUp report a tracked interface without a weight: while
// any is down the router is in Fault.
type (
	LinkDown struct{}
	LinkUp   struct{}
)

// PriorityDelta sets the sum of the weights of failed tracked objects
// (negative lowers the priority). It never changes an owner's 255.
type PriorityDelta struct{ Delta int }

// Reconfigure changes the settings a reload may change in place: the
// configured priority (never to or from 255: ownership is not reloaded),
// the advert interval, preempt and preempt delay. A master announces a
// changed priority or interval at once.
type Reconfigure struct {
	Priority       uint8
	AdvertInterval time.Duration
	Preempt        bool
	PreemptDelay   time.Duration
}

// MasterLost says the master is gone: a liveness channel saw its process
// die (its kernel closed the connection), or its node answers nothing any
// more. It will send no more adverts, so a backup need not wait out
// Master_Down_Interval.
type MasterLost struct {
	Master netip.Addr
	// Reason says how it is known (for the transition); default: the
	// liveness connection.
	Reason string
}

// PreemptHold holds back (On) or allows again (Off) preemption of a live
// lower-priority master: a recovering director that does not yet hold the
// master's connections must not take the virtual addresses from it. It
// changes nothing else: a master that dies or resigns is still replaced at
// once.
type PreemptHold struct{ On bool }

// Sync group events: the engine keeps the instances of a sync group
// together (keepalived's vrrp_sync_group).
type (
	// GroupFault: another member is in Fault (On) or no longer (Off).
	GroupFault struct{ On bool }
	// ForceBackup: another member yielded to a higher-priority master.
	ForceBackup struct{ Reason string }
	// ForceMaster: another member took over.
	ForceMaster struct{ Reason string }
)

func (GroupFault) event()  {}
func (ForceBackup) event() {}
func (ForceMaster) event() {}

func (Start) event()         {}
func (Stop) event()          {}
func (Received) event()      {}
func (Tick) event()          {}
func (LinkDown) event()      {}
func (LinkUp) event()        {}
func (PriorityDelta) event() {}
func (Reconfigure) event()   {}
func (MasterLost) event()    {}
func (PreemptHold) event()   {}

// Action is an output of Step, for the driver to carry out in order.
type Action interface{ action() }

// SendAdvert: send an advert with this priority (0 = resigning).
type SendAdvert struct{ Priority uint8 }

// TakeVIPs: add the virtual addresses and announce them (gratuitous ARP,
// unsolicited NA).
type TakeVIPs struct{}

// ReleaseVIPs: remove the virtual addresses.
type ReleaseVIPs struct{}

// Announce: send gratuitous ARP / NA again for addresses already held
// (after meeting another master, so that every client converges here).
type Announce struct{}

// Transition reports a state change, with why.
type Transition struct {
	From, To State
	Reason   string
}

// Stopped: a Stop has finished; the router holds nothing.
type Stopped struct{}

func (SendAdvert) action()  {}
func (TakeVIPs) action()    {}
func (ReleaseVIPs) action() {}
func (Announce) action()    {}
func (Transition) action()  {}
func (Stopped) action()     {}

// Stats counts adverts the machine received and did not act on, by cause.
type Stats struct {
	WrongVRID     uint64 // advert for another virtual router
	LowerPriority uint64 // ignored: we preempt (backup) or win (master)
	InFault       uint64 // ignored while in Fault
	SplitBrain    uint64 // a master heard another master with lower priority
}

// Machine is one virtual router's RFC 5798 state machine. It is pure: it
// does no I/O and reads no clock; every call gets the time. It is not safe
// for concurrent use (the engine's loop owns it).
type Machine struct {
	cfg      Config
	state    State
	delta    int  // PriorityDelta
	fault    bool // a tracked interface is down
	gfault   bool // another member of the sync group is in Fault
	stopping bool // Stop received while master: handing over
	hold     bool // PreemptHold

	masterAdverInterval time.Duration
	master              netip.Addr // the current master's address, when known

	adverTimer, masterDownTimer, releaseAt time.Time
	// preemptAt is when a held-back preemption may happen (read when an
	// advert arrives, never a timer); lastAnnounce limits Announce.
	preemptAt, lastAnnounce time.Time
	// reannounceAt: a split brain's winner announces once more then (see
	// ReannounceDelay).
	reannounceAt time.Time

	stats Stats
}

// New returns a machine in Initialize.
func New(cfg Config) *Machine {
	if cfg.HandoverLinger == 0 {
		cfg.HandoverLinger = DefaultHandoverLinger
	}
	return &Machine{cfg: cfg, state: Initialize, masterAdverInterval: cfg.AdvertInterval}
}

// State is the current state.
func (m *Machine) State() State { return m.state }

// Stopping says a graceful stop is handing over (the state is still Master).
func (m *Machine) Stopping() bool { return m.stopping }

// MasterAddr is the current master: this router's primary address when it
// is master, the sender of the accepted adverts when backup, else invalid.
func (m *Machine) MasterAddr() netip.Addr {
	if m.state == Master {
		return m.cfg.Primary
	}
	return m.master
}

// Priority is the effective priority: configured, plus the tracking delta,
// kept within 1..254 (an owner's 255 never changes).
func (m *Machine) Priority() uint8 {
	if m.cfg.Priority == 255 {
		return 255
	}
	return uint8(min(max(int(m.cfg.Priority)+m.delta, 1), 254))
}

// AdvertInterval is the interval this router advertises at as master.
func (m *Machine) AdvertInterval() time.Duration { return m.cfg.AdvertInterval }

// Stats returns the counters.
func (m *Machine) Stats() Stats { return m.stats }

// SkewTime is (256 − Priority) × Master_Adver_Interval / 256 (RFC 5798 §6.1).
func (m *Machine) SkewTime() time.Duration {
	return time.Duration(256-int(m.Priority())) * m.masterAdverInterval / 256
}

// MasterDownInterval is 3 × Master_Adver_Interval + Skew_Time.
func (m *Machine) MasterDownInterval() time.Duration {
	return 3*m.masterAdverInterval + m.SkewTime()
}

// NextDeadline is when the driver must send Tick; zero when no timer runs.
func (m *Machine) NextDeadline() time.Time {
	advert, other := m.AdvertTimers()
	if advert.IsZero() || (!other.IsZero() && other.Before(advert)) {
		return other
	}
	return advert
}

// AdvertTimers splits NextDeadline for an engine that sends a master's
// unchanged adverts itself (Advertised): advert is when the next advert is
// due (zero: none, not a master), other the earliest of the machine's other
// deadlines (zero: none).
func (m *Machine) AdvertTimers() (advert, other time.Time) {
	for _, t := range []time.Time{m.masterDownTimer, m.releaseAt, m.reannounceAt} {
		if !t.IsZero() && (other.IsZero() || t.Before(other)) {
			other = t
		}
	}
	return m.adverTimer, other
}

// Advertised records that the advert due went out at now without a Tick
// (the engine's advert pump), and was the advert a Tick would have asked
// for: the next is due one advert interval later, as Tick would have set it. The
// caller vouches that it was that advert (same priority, not a stopping
// master's priority 0). It changes nothing unless the machine is a master
// that is not stopping.
func (m *Machine) Advertised(now time.Time) {
	if m.state == Master && !m.stopping && !m.adverTimer.IsZero() {
		m.adverTimer = now.Add(m.cfg.AdvertInterval)
	}
}

// Step feeds one event at time now and returns what to do, in order.
func (m *Machine) Step(e Event, now time.Time) []Action {
	return m.AppendStep(nil, e, now)
}

// AppendTick is AppendStep(dst, Tick{}, now), and AppendReceived
// AppendStep(dst, Received{from, a}, now), for the two events of an idle
// director's every advert: neither boxes its event, and with a dst of
// enough capacity neither allocates.
func (m *Machine) AppendTick(dst []Action, now time.Time) []Action {
	out := actions(dst)
	m.tick(&out, now)
	return out
}

// AppendReceived: see AppendTick. The machine keeps no part of a.
func (m *Machine) AppendReceived(dst []Action, from netip.Addr, a *Advert, now time.Time) []Action {
	out := actions(dst)
	m.received(&out, from, a, now)
	return out
}

// AppendStep is Step appending to dst.
func (m *Machine) AppendStep(dst []Action, e Event, now time.Time) []Action {
	out := actions(dst)
	switch e := e.(type) {
	case Start:
		m.start(&out, now)
	case Stop:
		m.stop(&out, now)
	case Received:
		m.received(&out, e.From, e.Advert, now)
	case Tick:
		m.tick(&out, now)
	case LinkDown:
		m.fault = true
		if m.state == Backup || m.state == Master {
			m.enterFault(&out, "tracked interface down")
		}
	case LinkUp:
		m.fault = false
		if m.state == Fault && !m.gfault {
			m.enterBackup(&out, now, "tracked interfaces up")
		}
	case GroupFault:
		m.gfault = e.On
		switch {
		case e.On && (m.state == Backup || m.state == Master):
			m.enterFault(&out, "a sync group member is in fault")
		case !e.On && m.state == Fault && !m.fault:
			m.enterBackup(&out, now, "sync group out of fault")
		}
	case ForceBackup:
		if m.state == Master && !m.stopping {
			m.clearTimers()
			m.master = netip.Addr{}
			m.transition(&out, Backup, e.Reason)
			out.add(ReleaseVIPs{})
			m.masterDownTimer = now.Add(m.MasterDownInterval())
		}
	case ForceMaster:
		if m.state == Backup {
			m.enterMaster(&out, now, e.Reason)
		}
	case PriorityDelta:
		before := m.Priority()
		m.delta = e.Delta
		// A master says its new priority at once, so that a backup that
		// now outranks it can preempt without waiting an interval.
		if m.state == Master && !m.stopping && m.Priority() != before {
			out.add(SendAdvert{m.Priority()})
			m.adverTimer = now.Add(m.cfg.AdvertInterval)
		}
	case Reconfigure:
		before, interval := m.Priority(), m.cfg.AdvertInterval
		if (e.Priority == 255) == (m.cfg.Priority == 255) {
			m.cfg.Priority = e.Priority
		}
		m.cfg.AdvertInterval, m.cfg.Preempt, m.cfg.PreemptDelay = e.AdvertInterval, e.Preempt, e.PreemptDelay
		if !m.cfg.Preempt {
			m.preemptAt = time.Time{}
		}
		if m.state == Master && !m.stopping {
			m.masterAdverInterval = m.cfg.AdvertInterval
			if m.Priority() != before || m.cfg.AdvertInterval != interval {
				out.add(SendAdvert{m.Priority()})
				m.adverTimer = now.Add(m.cfg.AdvertInterval)
			}
		}
	case PreemptHold:
		m.hold = e.On
		if e.On {
			m.preemptAt = time.Time{}
		}
	case MasterLost:
		if m.state == Backup && m.master.IsValid() && e.Master == m.master {
			reason := e.Reason
			if reason == "" {
				reason = "master's process is gone (liveness connection closed)"
			}
			m.enterMaster(&out, now, reason)
		}
	}
	return out
}

type actions []Action

func (a *actions) add(x ...Action) { *a = append(*a, x...) }

func (m *Machine) transition(out *actions, to State, reason string) {
	if m.state != to {
		out.add(Transition{From: m.state, To: to, Reason: reason})
	}
	m.state = to
}

func (m *Machine) start(out *actions, now time.Time) {
	if m.state != Initialize {
		return
	}
	m.stopping = false
	switch {
	case m.fault || m.gfault:
		m.transition(out, Fault, "tracked interface down at start")
	case m.cfg.Priority == 255:
		m.enterMaster(out, now, "address owner (priority 255)")
	default:
		m.enterBackup(out, now, "startup")
	}
}

func (m *Machine) stop(out *actions, now time.Time) {
	switch m.state {
	case Master:
		if m.stopping {
			return
		}
		// RFC 5798 sends priority 0 and leaves at once; dropping the VIPs
		// then leaves clients unanswered until the backup takes over (its
		// Skew_Time). Keep answering until the new master speaks.
		m.stopping = true
		out.add(SendAdvert{0})
		m.adverTimer = now.Add(m.cfg.AdvertInterval)
		m.releaseAt = now.Add(m.handoverBound())
	default:
		m.clearTimers()
		m.transition(out, Initialize, "stopped")
		out.add(Stopped{})
	}
}

// handoverBound is how long a stopping master waits for a successor: a
// backup takes over Skew_Time (< one interval) after priority 0, so two
// intervals cover a lost advert; never less than 100 ms for fast intervals.
func (m *Machine) handoverBound() time.Duration {
	return max(2*m.cfg.AdvertInterval, 100*time.Millisecond)
}

func (m *Machine) clearTimers() {
	m.adverTimer, m.masterDownTimer, m.preemptAt, m.releaseAt, m.reannounceAt = time.Time{}, time.Time{}, time.Time{}, time.Time{}, time.Time{}
}

func (m *Machine) enterMaster(out *actions, now time.Time, reason string) {
	m.clearTimers()
	m.master = netip.Addr{}
	m.transition(out, Master, reason)
	out.add(SendAdvert{m.Priority()}, TakeVIPs{})
	m.adverTimer = now.Add(m.cfg.AdvertInterval)
	m.lastAnnounce = now
}

func (m *Machine) enterBackup(out *actions, now time.Time, reason string) {
	m.clearTimers()
	m.masterAdverInterval = m.cfg.AdvertInterval
	m.master = netip.Addr{}
	m.transition(out, Backup, reason)
	m.masterDownTimer = now.Add(m.MasterDownInterval())
}

func (m *Machine) enterFault(out *actions, reason string) {
	if m.state == Master {
		// Say so on every link still working, and give the VIPs up: a
		// router that cannot reach its interface cannot serve them.
		out.add(SendAdvert{0}, ReleaseVIPs{})
	}
	m.clearTimers()
	m.stopping = false
	m.master = netip.Addr{}
	m.transition(out, Fault, reason)
}

// outranks says whether an advert of priority p from src beats this router
// (RFC 5798 §6.4.3: higher priority, or equal priority and higher primary
// address).
func (m *Machine) outranks(p uint8, src netip.Addr) bool {
	mine := m.Priority()
	return p > mine || (p == mine && src.Compare(m.cfg.Primary) > 0)
}

func (m *Machine) received(out *actions, from netip.Addr, a *Advert, now time.Time) {
	if a.VRID != m.cfg.VRID {
		m.stats.WrongVRID++
		return
	}
	switch m.state {
	case Fault:
		m.stats.InFault++
	case Backup:
		m.receivedAsBackup(out, from, a, now)
	case Master:
		m.receivedAsMaster(out, from, a, now)
	}
}

func (m *Machine) receivedAsBackup(out *actions, from netip.Addr, a *Advert, now time.Time) {
	if a.Priority == 0 {
		// The master resigned: take over after Skew_Time, which orders
		// several backups by priority. Repeats (a resigning master keeps
		// saying so, on every link) may only bring that moment closer,
		// never push it back.
		if at := now.Add(m.SkewTime()); at.Before(m.masterDownTimer) {
			m.masterDownTimer = at
		}
		return
	}
	lower := a.Priority < m.Priority()
	if m.cfg.Preempt && lower && !m.hold {
		if m.cfg.PreemptDelay == 0 {
			m.stats.LowerPriority++
			return // let Master_Down_Timer run out: preemption
		}
		if m.preemptAt.IsZero() {
			m.preemptAt = now.Add(m.cfg.PreemptDelay)
		}
		if !now.Before(m.preemptAt) {
			m.stats.LowerPriority++
			return
		}
		// Delay not over yet: accept this master for now.
	} else {
		m.preemptAt = time.Time{}
	}
	m.master = from
	m.masterAdverInterval = a.Interval
	m.masterDownTimer = now.Add(m.MasterDownInterval())
}

func (m *Machine) receivedAsMaster(out *actions, from netip.Addr, a *Advert, now time.Time) {
	switch {
	case m.stopping:
		if a.Priority > 0 && m.releaseAt.After(now.Add(m.cfg.HandoverLinger)) {
			// The successor has spoken (and sent its gratuitous ARP with
			// this advert): release shortly.
			m.releaseAt = now.Add(m.cfg.HandoverLinger)
		}
	case a.Priority == 0:
		// Another router resigned: answer at once so that nobody waits
		// out its Skew_Time before hearing the current master.
		out.add(SendAdvert{m.Priority()})
		m.adverTimer = now.Add(m.cfg.AdvertInterval)
	case m.outranks(a.Priority, from):
		// Yield, but say so first with one advert at our priority: the
		// winner may never have heard us (it spoke first after a partition
		// healed), and only a lower-priority advert tells it to announce
		// the VIPs again for the clients that followed us.
		out.add(SendAdvert{m.Priority()})
		m.clearTimers()
		m.master = from
		m.masterAdverInterval = a.Interval
		m.transition(out, Backup, fmt.Sprintf("higher-priority master %s (priority %d)", from, a.Priority))
		out.add(ReleaseVIPs{})
		m.masterDownTimer = now.Add(m.MasterDownInterval())
	default:
		// Two masters: the other one loses (RFC 5798 ignores its advert).
		// Tell it now rather than at our next interval, and announce the
		// VIPs again so that clients that followed it come back (keepalived
		// leaves them stranded: its issues #1528, #166). Announcing is
		// limited to once per Master_Down_Interval in case the other side
		// never yields (one-way link).
		m.stats.SplitBrain++
		out.add(SendAdvert{m.Priority()})
		m.adverTimer = now.Add(m.cfg.AdvertInterval)
		if now.Sub(m.lastAnnounce) >= m.MasterDownInterval() {
			out.add(Announce{})
			m.lastAnnounce = now
			m.reannounceAt = now.Add(ReannounceDelay)
		}
	}
}

// ReannounceDelay is when a split brain's winner announces the VIPs once
// more. The loser yields on the advert the winner sends with its first
// announcement, but its own gratuitous ARP may leave after the winner's (a
// takeover waits for the IPVS table, up to 200 ms): clients that followed
// it would stay with a director that no longer holds the VIPs until their
// ARP entries go stale.
const ReannounceDelay = 250 * time.Millisecond

func (m *Machine) tick(out *actions, now time.Time) {
	due := func(t time.Time) bool { return !t.IsZero() && !now.Before(t) }
	switch m.state {
	case Backup:
		if due(m.masterDownTimer) {
			m.enterMaster(out, now, "no advert from a master for Master_Down_Interval")
		}
	case Master:
		if m.stopping && due(m.releaseAt) {
			m.clearTimers()
			m.stopping = false
			out.add(ReleaseVIPs{})
			m.transition(out, Initialize, "stopped after handing over")
			out.add(Stopped{})
			return
		}
		if due(m.reannounceAt) {
			m.reannounceAt = time.Time{}
			if !m.stopping {
				out.add(Announce{})
			}
		}
		if due(m.adverTimer) {
			p := m.Priority()
			if m.stopping {
				p = 0
			}
			out.add(SendAdvert{p})
			m.adverTimer = now.Add(m.cfg.AdvertInterval)
		}
	}
}
