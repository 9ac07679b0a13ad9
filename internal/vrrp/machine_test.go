package vrrp

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"
)

var (
	t0    = time.Date(2026, 11, 21, 0, 0, 0, 0, time.UTC)
	self  = netip.MustParseAddr("10.0.0.11")
	low   = netip.MustParseAddr("10.0.0.5")  // a peer with a lower address
	high  = netip.MustParseAddr("10.0.0.20") // a peer with a higher address
	vip   = netip.MustParseAddr("10.0.0.100")
	adv1s = time.Second
)

func advert(prio uint8, interval time.Duration) *Advert {
	return &Advert{Version: 3, VRID: 51, Priority: prio, Interval: interval, Addrs: []netip.Addr{vip}}
}

// step is one line of a scenario: at t0+at, feed ev, expect these actions
// (rendered by render) and then this state.
type step struct {
	at    time.Duration
	ev    Event
	want  string
	state State
}

func render(as []Action) string {
	var parts []string
	for _, a := range as {
		switch a := a.(type) {
		case SendAdvert:
			parts = append(parts, fmt.Sprintf("advert(%d)", a.Priority))
		case TakeVIPs:
			parts = append(parts, "take")
		case ReleaseVIPs:
			parts = append(parts, "release")
		case Announce:
			parts = append(parts, "announce")
		case Transition:
			parts = append(parts, fmt.Sprintf("%s->%s", a.From, a.To))
		case Stopped:
			parts = append(parts, "stopped")
		default:
			parts = append(parts, fmt.Sprintf("%T", a))
		}
	}
	return strings.Join(parts, " ")
}

func from(a netip.Addr, adv *Advert) Received { return Received{From: a, Advert: adv} }

func runScenario(t *testing.T, m *Machine, steps []step) {
	t.Helper()
	for i, s := range steps {
		got := render(m.Step(s.ev, t0.Add(s.at)))
		if got != s.want || m.State() != s.state {
			t.Fatalf("step %d (%T at %v): got %q in %s, want %q in %s", i, s.ev, s.at, got, m.State(), s.want, s.state)
		}
	}
}

func cfg(prio uint8) Config {
	return Config{VRID: 51, Priority: prio, AdvertInterval: adv1s, Preempt: true, Primary: self}
}

func TestTimers(t *testing.T) {
	m := New(cfg(100))
	m.Step(Start{}, t0)
	// Skew_Time = (256-100)/256 s = 609.375 ms; Master_Down = 3.609375 s.
	if got, want := m.SkewTime(), 609375*time.Microsecond; got != want {
		t.Errorf("SkewTime = %v, want %v", got, want)
	}
	if got, want := m.MasterDownInterval(), 3609375*time.Microsecond; got != want {
		t.Errorf("MasterDownInterval = %v, want %v", got, want)
	}
	if got, want := m.NextDeadline(), t0.Add(3609375*time.Microsecond); !got.Equal(want) {
		t.Errorf("NextDeadline = %v, want %v", got, want)
	}
}

func TestScenarios(t *testing.T) {
	mdi := 3609375 * time.Microsecond // Master_Down_Interval at priority 100, 1 s
	tests := []struct {
		name  string
		cfg   Config
		steps []step
	}{
		{"alone: backup, then master after Master_Down_Interval", cfg(100), []step{
			{0, Start{}, "INIT->BACKUP", Backup},
			{mdi - time.Millisecond, Tick{}, "", Backup},
			{mdi, Tick{}, "BACKUP->MASTER advert(100) take", Master},
			{mdi + time.Second, Tick{}, "advert(100)", Master},
		}},
		{"owner (255) is master at once", cfg(255), []step{
			{0, Start{}, "INIT->MASTER advert(255) take", Master},
		}},
		{"a higher-priority master keeps us backup; each advert restarts the timer", cfg(100), []step{
			{0, Start{}, "INIT->BACKUP", Backup},
			{time.Second, from(low, advert(200, adv1s)), "", Backup},
			{time.Second + mdi - time.Millisecond, Tick{}, "", Backup},
			{time.Second + mdi, Tick{}, "BACKUP->MASTER advert(100) take", Master},
		}},
		{"preempt: a lower-priority master is ignored and preempted", cfg(100), []step{
			{0, Start{}, "INIT->BACKUP", Backup},
			{time.Second, from(low, advert(50, adv1s)), "", Backup},
			{2 * time.Second, from(low, advert(50, adv1s)), "", Backup},
			{mdi, Tick{}, "BACKUP->MASTER advert(100) take", Master},
		}},
		{"nopreempt: a lower-priority master is kept", Config{VRID: 51, Priority: 100, AdvertInterval: adv1s, Primary: self}, []step{
			{0, Start{}, "INIT->BACKUP", Backup},
			{time.Second, from(low, advert(50, adv1s)), "", Backup},
			{mdi, Tick{}, "", Backup},
			{time.Second + mdi, Tick{}, "BACKUP->MASTER advert(100) take", Master}, // it went quiet
		}},
		{"preempt delay: accept the lower master until the delay is over", Config{VRID: 51, Priority: 100, AdvertInterval: adv1s, Preempt: true, PreemptDelay: 5 * time.Second, Primary: self}, []step{
			{0, Start{}, "INIT->BACKUP", Backup},
			{1 * time.Second, from(low, advert(50, adv1s)), "", Backup}, // delay starts: preempt at 6 s
			{4 * time.Second, from(low, advert(50, adv1s)), "", Backup}, // timer now 4 s + mdi
			{4*time.Second + mdi - time.Millisecond, Tick{}, "", Backup},
			{5 * time.Second, from(low, advert(50, adv1s)), "", Backup}, // still held: 5 s + mdi
			{6 * time.Second, from(low, advert(50, adv1s)), "", Backup}, // delay over: ignored
			{5*time.Second + mdi, Tick{}, "BACKUP->MASTER advert(100) take", Master},
		}},
		{"preempt hold: a lower master is kept while held, preempted once released; a dead one is replaced anyway", cfg(100), []step{
			{0, Start{}, "INIT->BACKUP", Backup},
			{0, PreemptHold{On: true}, "", Backup},
			{time.Second, from(low, advert(50, adv1s)), "", Backup},
			{2 * time.Second, from(low, advert(50, adv1s)), "", Backup},
			{mdi + time.Second, Tick{}, "", Backup}, // accepted: no preemption
			{3 * time.Second, PreemptHold{On: false}, "", Backup},
			{3 * time.Second, from(low, advert(50, adv1s)), "", Backup}, // ignored now
			{2*time.Second + mdi, Tick{}, "BACKUP->MASTER advert(100) take", Master},
		}},
		{"preempt hold does not keep a backup from replacing a silent master", cfg(100), []step{
			{0, Start{}, "INIT->BACKUP", Backup},
			{0, PreemptHold{On: true}, "", Backup},
			{time.Second, from(low, advert(50, adv1s)), "", Backup},
			{time.Second + mdi, Tick{}, "BACKUP->MASTER advert(100) take", Master},
		}},
		{"priority 0: take over after Skew_Time", cfg(100), []step{
			{0, Start{}, "INIT->BACKUP", Backup},
			{time.Second, from(high, advert(200, adv1s)), "", Backup},
			{2 * time.Second, from(high, advert(0, adv1s)), "", Backup},
			{2*time.Second + 609375*time.Microsecond, Tick{}, "BACKUP->MASTER advert(100) take", Master},
		}},
		{"repeated priority 0 does not delay the takeover", cfg(100), []step{
			{0, Start{}, "INIT->BACKUP", Backup},
			{time.Second, from(high, advert(200, adv1s)), "", Backup},
			{2 * time.Second, from(high, advert(0, adv1s)), "", Backup},
			{2*time.Second + 500*time.Millisecond, from(high, advert(0, adv1s)), "", Backup},
			{2*time.Second + 609375*time.Microsecond, Tick{}, "BACKUP->MASTER advert(100) take", Master},
		}},
		{"the backup uses the master's advert interval (RFC 5798 Master_Adver_Interval)", Config{VRID: 51, Priority: 100, AdvertInterval: 100 * time.Millisecond, Preempt: true, Primary: self}, []step{
			{0, Start{}, "INIT->BACKUP", Backup},
			{10 * time.Millisecond, from(high, advert(200, adv1s)), "", Backup},
			{10*time.Millisecond + 3*time.Second, Tick{}, "", Backup}, // own 100 ms timer would have fired long ago
			{10*time.Millisecond + mdi, Tick{}, "BACKUP->MASTER advert(100) take", Master},
		}},
		{"master yields to a higher priority", cfg(100), []step{
			{0, Start{}, "INIT->BACKUP", Backup},
			{mdi, Tick{}, "BACKUP->MASTER advert(100) take", Master},
			{4 * time.Second, from(low, advert(150, adv1s)), "advert(100) MASTER->BACKUP release", Backup},
		}},
		{"equal priority: the higher address wins", cfg(100), []step{
			{0, Start{}, "INIT->BACKUP", Backup},
			{mdi, Tick{}, "BACKUP->MASTER advert(100) take", Master},
			{4 * time.Second, from(low, advert(100, adv1s)), "advert(100)", Master}, // lower address loses (announced at takeover already)
			{5 * time.Second, from(high, advert(100, adv1s)), "advert(100) MASTER->BACKUP release", Backup},
		}},
		{"split brain: the winner answers at once and announces, at most once per Master_Down_Interval", cfg(100), []step{
			{0, Start{}, "INIT->BACKUP", Backup},
			{mdi, Tick{}, "BACKUP->MASTER advert(100) take", Master},
			{mdi + time.Second, from(low, advert(50, adv1s)), "advert(100)", Master},
			{2 * mdi, from(low, advert(50, adv1s)), "advert(100) announce", Master},
			{2*mdi + 10*time.Millisecond, from(low, advert(50, adv1s)), "advert(100)", Master},
			// Once more after ReannounceDelay, in case the loser's own
			// announcement left after ours.
			{2*mdi + ReannounceDelay - time.Millisecond, Tick{}, "", Master},
			{2*mdi + ReannounceDelay, Tick{}, "announce", Master},
		}},
		{"split brain: no second announcement after yielding", cfg(100), []step{
			{0, Start{}, "INIT->BACKUP", Backup},
			{mdi, Tick{}, "BACKUP->MASTER advert(100) take", Master},
			{2 * mdi, from(low, advert(50, adv1s)), "advert(100) announce", Master},
			{2*mdi + 100*time.Millisecond, from(high, advert(200, adv1s)), "advert(100) MASTER->BACKUP release", Backup},
			{2*mdi + ReannounceDelay, Tick{}, "", Backup},
		}},
		{"master answers a resigning router at once", cfg(100), []step{
			{0, Start{}, "INIT->BACKUP", Backup},
			{mdi, Tick{}, "BACKUP->MASTER advert(100) take", Master},
			{mdi + 300*time.Millisecond, from(low, advert(0, adv1s)), "advert(100)", Master},
			{mdi + 1300*time.Millisecond, Tick{}, "advert(100)", Master}, // the interval restarted
		}},
		{"graceful stop: priority 0, keep the VIPs until the successor speaks, then linger", cfg(100), []step{
			{0, Start{}, "INIT->BACKUP", Backup},
			{mdi, Tick{}, "BACKUP->MASTER advert(100) take", Master},
			{5 * time.Second, Stop{}, "advert(0)", Master},
			{5*time.Second + 600*time.Millisecond, from(low, advert(90, adv1s)), "", Master},
			{5*time.Second + 619*time.Millisecond, Tick{}, "", Master},
			{5*time.Second + 620*time.Millisecond, Tick{}, "release MASTER->INIT stopped", Initialize},
		}},
		{"graceful stop without a successor: release after two intervals, priority 0 each interval", cfg(100), []step{
			{0, Start{}, "INIT->BACKUP", Backup},
			{mdi, Tick{}, "BACKUP->MASTER advert(100) take", Master},
			{5 * time.Second, Stop{}, "advert(0)", Master},
			{6 * time.Second, Tick{}, "advert(0)", Master},
			{7 * time.Second, Tick{}, "release MASTER->INIT stopped", Initialize},
		}},
		{"stop as backup is immediate", cfg(100), []step{
			{0, Start{}, "INIT->BACKUP", Backup},
			{time.Second, Stop{}, "BACKUP->INIT stopped", Initialize},
		}},
		{"fault: link down as master resigns and releases; adverts ignored; link up -> backup", cfg(100), []step{
			{0, Start{}, "INIT->BACKUP", Backup},
			{mdi, Tick{}, "BACKUP->MASTER advert(100) take", Master},
			{4 * time.Second, LinkDown{}, "advert(0) release MASTER->FAULT", Fault},
			{5 * time.Second, from(low, advert(50, adv1s)), "", Fault},
			{20 * time.Second, Tick{}, "", Fault},
			{21 * time.Second, LinkUp{}, "FAULT->BACKUP", Backup},
			{21*time.Second + mdi, Tick{}, "BACKUP->MASTER advert(100) take", Master},
		}},
		{"fault at start", cfg(100), []step{
			{0, LinkDown{}, "", Initialize},
			{0, Start{}, "INIT->FAULT", Fault},
		}},
		{"weighted tracking: the master advertises its lower priority at once and is preempted", cfg(100), []step{
			{0, Start{}, "INIT->BACKUP", Backup},
			{mdi, Tick{}, "BACKUP->MASTER advert(100) take", Master},
			{4 * time.Second, PriorityDelta{-60}, "advert(40)", Master},
			{4*time.Second + 10*time.Millisecond, from(low, advert(90, adv1s)), "advert(40) MASTER->BACKUP release", Backup},
		}},
		{"reconfigure as master: a new priority and interval are advertised at once, and preempt off holds", cfg(100), []step{
			{0, Start{}, "INIT->BACKUP", Backup},
			{mdi, Tick{}, "BACKUP->MASTER advert(100) take", Master},
			{4 * time.Second, Reconfigure{Priority: 120, AdvertInterval: 500 * time.Millisecond, Preempt: true}, "advert(120)", Master},
			{4*time.Second + 500*time.Millisecond, Tick{}, "advert(120)", Master},
			{5 * time.Second, Reconfigure{Priority: 120, AdvertInterval: 500 * time.Millisecond, Preempt: true}, "", Master}, // nothing changed
			{5*time.Second + 100*time.Millisecond, Reconfigure{Priority: 80, AdvertInterval: 500 * time.Millisecond, Preempt: true}, "advert(80)", Master},
			{5*time.Second + 200*time.Millisecond, from(low, advert(90, adv1s)), "advert(80) MASTER->BACKUP release", Backup},
		}},
		{"reconfigure as backup: a raised priority preempts (by the timer, as RFC 5798 does)", cfg(100), []step{
			{0, Start{}, "INIT->BACKUP", Backup},
			{time.Second, from(high, advert(150, adv1s)), "", Backup},
			{1500 * time.Millisecond, Reconfigure{Priority: 200, AdvertInterval: adv1s, Preempt: true}, "", Backup},
			{2 * time.Second, from(high, advert(150, adv1s)), "", Backup}, // a lower master now: ignored
			// Master_Down_Timer, set by the last accepted advert at 1s (at
			// priority 100's skew), runs out: preemption.
			{time.Second + 3*adv1s + 156*adv1s/256, Tick{}, "BACKUP->MASTER advert(200) take", Master},
		}},
		{"reconfigure never moves to or from address owner", cfg(100), []step{
			{0, Start{}, "INIT->BACKUP", Backup},
			{mdi, Tick{}, "BACKUP->MASTER advert(100) take", Master},
			{4 * time.Second, Reconfigure{Priority: 255, AdvertInterval: adv1s, Preempt: true}, "", Master},
		}},
		{"master lost: a backup takes over at once, but only for the current master", cfg(100), []step{
			{0, Start{}, "INIT->BACKUP", Backup},
			{time.Second, from(high, advert(200, adv1s)), "", Backup},
			{1500 * time.Millisecond, MasterLost{Master: low}, "", Backup},
			{1600 * time.Millisecond, MasterLost{Master: high}, "BACKUP->MASTER advert(100) take", Master},
		}},
		{"sync group: forced master and backup", cfg(100), []step{
			{0, Start{}, "INIT->BACKUP", Backup},
			{time.Second, from(high, advert(200, adv1s)), "", Backup},
			{2 * time.Second, ForceMaster{"group"}, "BACKUP->MASTER advert(100) take", Master},
			{3 * time.Second, ForceMaster{"group"}, "", Master},
			{4 * time.Second, ForceBackup{"group"}, "MASTER->BACKUP release", Backup},
			{4*time.Second + mdi, Tick{}, "BACKUP->MASTER advert(100) take", Master},
		}},
		{"sync group fault: in and out, but not while the own link is down", cfg(100), []step{
			{0, Start{}, "INIT->BACKUP", Backup},
			{mdi, Tick{}, "BACKUP->MASTER advert(100) take", Master},
			{4 * time.Second, GroupFault{On: true}, "advert(0) release MASTER->FAULT", Fault},
			{5 * time.Second, LinkDown{}, "", Fault},
			{6 * time.Second, GroupFault{On: false}, "", Fault},
			{7 * time.Second, LinkUp{}, "FAULT->BACKUP", Backup},
		}},
		{"an advert for another VRID changes nothing", cfg(100), []step{
			{0, Start{}, "INIT->BACKUP", Backup},
			{time.Second, from(high, &Advert{Version: 3, VRID: 52, Priority: 200, Interval: adv1s}), "", Backup},
			{mdi, Tick{}, "BACKUP->MASTER advert(100) take", Master},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			runScenario(t, New(tt.cfg), tt.steps)
		})
	}
}

func TestPriorityClamp(t *testing.T) {
	for _, tt := range []struct {
		base  uint8
		delta int
		want  uint8
	}{{100, 0, 100}, {100, -200, 1}, {100, 200, 254}, {255, -100, 255}, {254, 1, 254}} {
		m := New(cfg(tt.base))
		m.Step(PriorityDelta{tt.delta}, t0)
		if got := m.Priority(); got != tt.want {
			t.Errorf("base %d delta %d: priority %d, want %d", tt.base, tt.delta, got, tt.want)
		}
	}
}

func TestStats(t *testing.T) {
	m := New(cfg(100))
	m.Step(Start{}, t0)
	m.Step(from(high, &Advert{Version: 3, VRID: 9, Priority: 200, Interval: adv1s}), t0)
	m.Step(from(low, advert(50, adv1s)), t0)
	m.Step(LinkDown{}, t0)
	m.Step(from(low, advert(50, adv1s)), t0)
	if got, want := m.Stats(), (Stats{WrongVRID: 1, LowerPriority: 1, InFault: 1}); got != want {
		t.Errorf("Stats = %+v, want %+v", got, want)
	}
}

func TestMasterAddr(t *testing.T) {
	m := New(cfg(100))
	m.Step(Start{}, t0)
	if m.MasterAddr().IsValid() {
		t.Error("a fresh backup knows no master")
	}
	m.Step(from(high, advert(200, adv1s)), t0)
	if m.MasterAddr() != high {
		t.Errorf("MasterAddr = %v, want %v", m.MasterAddr(), high)
	}
	m.Step(Tick{}, t0.Add(10*time.Second))
	if m.State() != Master || m.MasterAddr() != self {
		t.Errorf("as master: %v %v", m.State(), m.MasterAddr())
	}
}

// TestIdleStepsAllocateNothing: a master's advert tick and a backup's
// received advert, the two events of an idle pair's every interval, cost
// no allocation with a reused buffer (the engine lends one per instance).
func TestIdleStepsAllocateNothing(t *testing.T) {
	master := New(cfg(200))
	master.Step(Start{}, t0)
	master.Step(Tick{}, t0.Add(4*time.Second)) // Master_Down_Interval ran out
	if master.State() != Master {
		t.Fatalf("state %s, want MASTER", master.State())
	}
	backup := New(cfg(100))
	backup.Step(Start{}, t0)
	adv := advert(200, adv1s)
	buf := make([]Action, 0, 4)
	now := t0.Add(4 * time.Second)
	if a := testing.AllocsPerRun(100, func() {
		now = now.Add(adv1s)
		buf = master.AppendTick(buf[:0], now)
		if len(buf) != 1 {
			t.Fatalf("master tick: %s, want one advert", render(buf))
		}
		buf = backup.AppendReceived(buf[:0], high, adv, now)
	}); a != 0 {
		t.Errorf("%.1f allocations per advert, want 0", a)
	}
	if backup.State() != Backup || backup.MasterAddr() != high {
		t.Errorf("backup is %s following %v", backup.State(), backup.MasterAddr())
	}
}
