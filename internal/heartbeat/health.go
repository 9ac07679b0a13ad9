package heartbeat

import (
	"sync"
	"time"
)

// tracker decides whether a link is up and reports transitions. Valid
// frames are announced by the receive goroutine (valid), which pushes a
// timer back to the new deadline; the timer takes the link down (expire)
// when it fires. Pushing a pending timer back costs no wake-up, so a
// healthy link costs nothing here between frames (a watchdog goroutine
// would wake at every stale deadline).
type tracker struct {
	name, kind string
	interval   time.Duration
	misses     int
	downAfter  time.Duration // nominal: DownAfter(interval, misses)
	onHealth   func(LinkHealth)
	onQuiet    func(LinkHealth)
	stats      *counters

	// trMu serialises transitions together with their OnHealth calls, so
	// callbacks arrive in the order the transitions happened.
	trMu sync.Mutex

	mu          sync.Mutex // guards the fields below (never held during callbacks)
	up          bool
	since       time.Time
	lastRx      time.Time
	deadline    time.Time     // up until then
	curDown     time.Duration // the down-after in use (serial: stretched to the airtime)
	transitions uint64
	lastErr     string
	timer       *time.Timer // runs fire at the deadline; nil until the first frame
	stopped     bool
	// quietAt: when the link counts as quiet (one frame missed); the timer
	// fires then first when onQuiet is set, and quietSent says the quiet
	// of this silence was reported.
	quietAt   time.Time
	quietSent bool

	done chan struct{} // closed by stop
}

func newTracker(kind string, c *common, stats *counters) *tracker {
	da := DownAfter(c.interval, c.misses)
	return &tracker{
		name: c.name, kind: kind, interval: c.interval, misses: c.misses, downAfter: da,
		onHealth: c.onHealth, onQuiet: c.onQuiet, stats: stats,
		since: time.Now(), curDown: da,
		done: make(chan struct{}),
	}
}

// valid records a valid frame received at now. spacing is the least time
// between two frames the medium allows (a serial line's airtime of this
// frame; 0 for UDP): when it exceeds the interval, frames cannot arrive
// faster than that, and the deadline is computed from it instead.
func (t *tracker) valid(now time.Time, spacing time.Duration) {
	t.trMu.Lock()
	defer t.trMu.Unlock()
	da := t.downAfter
	if spacing > t.interval {
		da = DownAfter(spacing, t.misses)
	}
	t.mu.Lock()
	if t.stopped {
		t.mu.Unlock()
		return
	}
	t.lastRx, t.deadline, t.curDown = now, now.Add(da), da
	first := da
	if t.onQuiet != nil {
		q := QuietAfter(max(spacing, t.interval))
		t.quietAt, t.quietSent, first = now.Add(q), false, q
	}
	// The timer runs at least that long from now, so never before the
	// deadline; a little after it is harmless (fire checks).
	if t.timer == nil {
		t.timer = time.AfterFunc(first, t.fire)
	} else {
		t.timer.Reset(first)
	}
	cameUp := !t.up
	var h LinkHealth
	if cameUp {
		t.up, t.since = true, now
		t.transitions++
		h = t.snapshotLocked()
	}
	t.mu.Unlock()
	if cameUp && t.onHealth != nil {
		t.onHealth(h)
	}
}

// fire runs (on its own goroutine) when the timer expires.
func (t *tracker) fire() {
	now := time.Now()
	t.mu.Lock()
	if t.stopped || !t.up {
		t.mu.Unlock()
		return
	}
	if t.onQuiet != nil && !t.quietSent {
		if d := t.quietAt.Sub(now); d > 0 {
			// A frame arrived while the timer was firing.
			t.timer.Reset(d)
			t.mu.Unlock()
			return
		}
		t.quietSent = true
		h := t.snapshotLocked()
		t.timer.Reset(max(t.deadline.Sub(now), 0))
		t.mu.Unlock()
		t.onQuiet(h)
		return
	}
	if d := t.deadline.Sub(now); d > 0 {
		// A frame arrived while the timer was firing.
		t.timer.Reset(d)
		t.mu.Unlock()
		return
	}
	t.mu.Unlock()
	t.expire(now)
}

// expire takes the link down if its deadline has passed at now.
func (t *tracker) expire(now time.Time) {
	t.trMu.Lock()
	defer t.trMu.Unlock()
	t.mu.Lock()
	if t.stopped || !t.up || now.Before(t.deadline) {
		t.mu.Unlock()
		return
	}
	t.up, t.since = false, now
	t.transitions++
	h := t.snapshotLocked()
	t.mu.Unlock()
	if t.onHealth != nil {
		t.onHealth(h)
	}
}

// stop stops the timer; once it returns, no transition is in progress and
// none is reported any more.
func (t *tracker) stop() {
	t.mu.Lock()
	if t.stopped {
		t.mu.Unlock()
		return
	}
	t.stopped = true
	if t.timer != nil {
		t.timer.Stop()
	}
	close(t.done)
	t.mu.Unlock()
	t.trMu.Lock() // wait for a transition (and its OnHealth call) in progress
	t.trMu.Unlock()
}

func (t *tracker) setErr(err error) {
	if err == nil {
		return
	}
	t.mu.Lock()
	t.lastErr = err.Error()
	t.mu.Unlock()
}

func (t *tracker) snapshot() LinkHealth {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.snapshotLocked()
}

func (t *tracker) snapshotLocked() LinkHealth {
	return LinkHealth{
		Name:        t.name,
		Kind:        t.kind,
		Up:          t.up,
		Since:       t.since,
		LastRx:      t.lastRx,
		DownAfter:   t.curDown,
		Transitions: t.transitions,
		LastError:   t.lastErr,
		Stats:       t.stats.snapshot(),
	}
}
