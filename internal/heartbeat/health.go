package heartbeat

import (
	"sync"
	"time"
)

// tracker decides whether a link is up and reports transitions. Valid
// frames are announced by the receive goroutine (valid); a watchdog
// goroutine (run) takes the link down when its deadline passes without one.
type tracker struct {
	name, kind string
	interval   time.Duration
	misses     int
	downAfter  time.Duration // nominal: DownAfter(interval, misses)
	onHealth   func(LinkHealth)
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

	kick chan struct{} // wakes the watchdog when the link comes up
	done chan struct{}
}

func newTracker(kind string, c *common, stats *counters) *tracker {
	da := DownAfter(c.interval, c.misses)
	return &tracker{
		name: c.name, kind: kind, interval: c.interval, misses: c.misses, downAfter: da,
		onHealth: c.onHealth, stats: stats,
		since: time.Now(), curDown: da,
		kick: make(chan struct{}, 1), done: make(chan struct{}),
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
	t.lastRx, t.deadline, t.curDown = now, now.Add(da), da
	cameUp := !t.up
	var h LinkHealth
	if cameUp {
		t.up, t.since = true, now
		t.transitions++
		h = t.snapshotLocked()
	}
	t.mu.Unlock()
	if cameUp {
		select {
		case t.kick <- struct{}{}:
		default:
		}
		if t.onHealth != nil {
			t.onHealth(h)
		}
	}
}

// expire takes the link down if its deadline has passed at now.
func (t *tracker) expire(now time.Time) {
	t.trMu.Lock()
	defer t.trMu.Unlock()
	t.mu.Lock()
	if !t.up || now.Before(t.deadline) {
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

// run is the watchdog goroutine; it returns when done is closed.
func (t *tracker) run() {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		t.mu.Lock()
		up, deadline := t.up, t.deadline
		t.mu.Unlock()
		if !up {
			select {
			case <-t.kick:
				continue
			case <-t.done:
				return
			}
		}
		if d := time.Until(deadline); d > 0 {
			timer.Reset(d)
			select {
			case <-timer.C:
			case <-t.done:
				return
			}
			continue // the deadline may have moved meanwhile
		}
		t.expire(time.Now())
	}
}

func (t *tracker) stop() { close(t.done) }

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
