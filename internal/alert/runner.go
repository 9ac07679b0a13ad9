package alert

import (
	"container/list"
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"
)

// Defaults for RunnerConfig's zero fields.
const (
	DefaultQueueLen      = 64
	DefaultMaxConcurrent = 4
	DefaultTimeout       = 30 * time.Second
	DefaultKillGrace     = time.Second
	DefaultOutputLimit   = 4096
)

// RunnerConfig tunes a Runner. Zero fields take the defaults above.
type RunnerConfig struct {
	// QueueLen is how many events may wait (all lanes together; runs in
	// progress not counted). When full, the oldest waiting event is dropped.
	QueueLen int
	// MaxConcurrent is how many hooks may run at once (each of a different
	// lane).
	MaxConcurrent int
	// DefaultTimeout bounds a run whose Hook.Timeout is zero.
	DefaultTimeout time.Duration
	// KillGrace is the time between SIGTERM and SIGKILL at a timeout; it
	// also bounds how long the runner waits for a hook's output pipes after
	// the hook exited.
	KillGrace time.Duration
	// OutputLimit is how many bytes of the tail of stdout, and of stderr,
	// are kept for the log.
	OutputLimit int
}

func (c RunnerConfig) withDefaults() RunnerConfig {
	if c.QueueLen <= 0 {
		c.QueueLen = DefaultQueueLen
	}
	if c.MaxConcurrent <= 0 {
		c.MaxConcurrent = DefaultMaxConcurrent
	}
	if c.DefaultTimeout <= 0 {
		c.DefaultTimeout = DefaultTimeout
	}
	if c.KillGrace <= 0 {
		c.KillGrace = DefaultKillGrace
	}
	if c.OutputLimit <= 0 {
		c.OutputLimit = DefaultOutputLimit
	}
	return c
}

// Stats are a Runner's counters since it was made. Every run counted in Run
// ends in exactly one of Succeeded, Failed, TimedOut, Killed, StartErrors.
type Stats struct {
	Queued      uint64 // events accepted by Notify
	Run         uint64 // runs begun (including those that could not start)
	Succeeded   uint64 // exited 0
	Failed      uint64 // exited non-zero, or died of a signal the runner did not send
	TimedOut    uint64 // hit their timeout and were killed
	Killed      uint64 // killed because Close's context ended
	StartErrors uint64 // could not be started (missing, not executable, bad format)
	Dropped     uint64 // events never run: queue full, Notify after Close, or Close's context ended
	Pending     int    // events waiting now
	Running     int    // runs in progress now
}

// sinkExec is the lane class of hooks. Mail and webhooks will get their own
// classes, so a slow server never holds back a failover script.
const sinkExec = "exec"

type laneKey struct{ sink, kind, name string }

type job struct {
	key  laneKey
	hook Hook
	ev   Event
}

// Runner runs hooks off the caller's goroutine. Its methods are safe from any
// goroutine. Make it with NewRunner; end it with Close.
type Runner struct {
	cfg RunnerConfig
	log *slog.Logger

	kill     chan struct{} // closed when Close's context ends
	killOnce sync.Once
	wg       sync.WaitGroup // workers

	mu      sync.Mutex
	pending list.List        // *job, oldest first
	running map[laneKey]bool // lanes with a run in progress
	active  int              // workers
	closed  bool
	drained chan struct{} // closed once closed, no worker and nothing pending
	burst   uint64        // drops since the queue was last empty
	lateLog bool          // Notify after Close already logged
	st      Stats
}

// NewRunner makes a Runner. A nil logger discards.
func NewRunner(cfg RunnerConfig, log *slog.Logger) *Runner {
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Runner{
		cfg:     cfg.withDefaults(),
		log:     log,
		kill:    make(chan struct{}),
		running: make(map[laneKey]bool),
		drained: make(chan struct{}),
	}
}

// Notify queues one run of h for e and returns at once; it never waits for
// a hook, a worker or the queue. A zero e.At becomes now. Once the queue
// holds QueueLen waiting events, each new event drops the oldest waiting one
// (counted in Stats.Dropped). After Close, events are dropped and counted.
//
// Runs of one (e.Kind, e.Name) happen one at a time in Notify order, whatever
// the hook: an event with two hooks (say a per-state one and a generic one)
// is two Notify calls, run one after the other.
func (r *Runner) Notify(h Hook, e Event) {
	if e.At.IsZero() {
		e.At = time.Now()
	}
	j := &job{key: laneKey{sinkExec, e.Kind, e.Name}, hook: h, ev: e}

	var dropped *job
	var burstStart, late bool
	r.mu.Lock()
	switch {
	case r.closed:
		r.st.Dropped++
		late = !r.lateLog
		r.lateLog = true
	case !r.running[j.key] && r.active < r.cfg.MaxConcurrent:
		// While a worker slot is free, no waiting event has a free lane
		// (workers take every such event), so this one is next in its
		// lane: run it now.
		r.st.Queued++
		r.startWorkerLocked(j)
	default:
		r.st.Queued++
		r.pending.PushBack(j)
		if r.pending.Len() > r.cfg.QueueLen {
			dropped = r.pending.Remove(r.pending.Front()).(*job)
			r.st.Dropped++
			r.burst++
			burstStart = r.burst == 1
		}
	}
	r.mu.Unlock()

	switch {
	case late:
		r.log.Warn("alert: hook not run: the runner is closed (further such events are only counted)",
			eventAttrs(h, e)...)
	case burstStart:
		r.log.Warn("alert: queue full; dropping the oldest waiting events until it empties",
			append(eventAttrs(dropped.hook, dropped.ev), "queue_len", r.cfg.QueueLen)...)
	case dropped != nil:
		r.log.Debug("alert: queue full; dropped event", eventAttrs(dropped.hook, dropped.ev)...)
	}
}

// startWorkerLocked claims j's lane and starts a worker on it.
func (r *Runner) startWorkerLocked(j *job) {
	r.running[j.key] = true
	r.active++
	r.wg.Add(1)
	go r.worker(j)
}

// nextLocked takes the oldest waiting event whose lane is free, and claims
// its lane. Scanning oldest-first also gives the first event of that lane.
func (r *Runner) nextLocked() *job {
	for el := r.pending.Front(); el != nil; el = el.Next() {
		j := el.Value.(*job)
		if !r.running[j.key] {
			r.pending.Remove(el)
			r.running[j.key] = true
			return j
		}
	}
	return nil
}

func (r *Runner) worker(j *job) {
	defer r.wg.Done()
	for j != nil {
		r.run(j)
		var burst uint64
		r.mu.Lock()
		delete(r.running, j.key)
		j = r.nextLocked()
		if r.pending.Len() == 0 && r.burst > 0 {
			burst, r.burst = r.burst, 0
		}
		if j == nil {
			r.active--
			r.checkDrainedLocked()
		}
		r.mu.Unlock()
		if burst > 0 {
			r.log.Warn("alert: queue empty again; events were dropped while it was full",
				"dropped", burst)
		}
	}
}

func (r *Runner) checkDrainedLocked() {
	if r.closed && r.active == 0 && r.pending.Len() == 0 {
		select {
		case <-r.drained:
		default:
			close(r.drained)
		}
	}
}

// Stats returns the counters.
func (r *Runner) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.st
	s.Pending = r.pending.Len()
	s.Running = len(r.running)
	return s
}

// Close stops accepting events and lets the queue drain: waiting events
// still run, in order (the STOP events of a shutdown among them), and Close
// waits for the runs. If ctx ends first, the waiting events are dropped, the
// running hooks' process groups are sent SIGKILL, and Close returns after
// they are reaped with an error wrapping ctx.Err(). Close may be called more
// than once. When it returns, no goroutine of the Runner is left.
func (r *Runner) Close(ctx context.Context) error {
	r.mu.Lock()
	r.closed = true
	r.checkDrainedLocked()
	r.mu.Unlock()

	select {
	case <-r.drained:
	case <-ctx.Done():
		select {
		case <-r.drained: // finished just as ctx ended: nothing to kill
		default:
			return r.abandon(ctx)
		}
	}
	r.wg.Wait()
	return nil
}

// abandon drops what waits and kills what runs, for Close whose ctx ended.
func (r *Runner) abandon(ctx context.Context) error {
	r.mu.Lock()
	n := r.pending.Len()
	r.pending.Init()
	r.st.Dropped += uint64(n)
	burst := r.burst
	r.burst = 0
	killedBefore := r.st.Killed
	r.checkDrainedLocked()
	r.mu.Unlock()
	r.killOnce.Do(func() { close(r.kill) })
	<-r.drained
	r.wg.Wait()
	r.mu.Lock()
	killed := r.st.Killed - killedBefore
	r.mu.Unlock()

	if burst > 0 {
		r.log.Warn("alert: events were dropped while the queue was full", "dropped", burst)
	}
	if n > 0 || killed > 0 {
		r.log.Warn("alert: closed before every hook finished",
			"killed", killed, "dropped_waiting", n)
	}
	return fmt.Errorf("alert: close: %d running hooks killed, %d waiting events dropped: %w",
		killed, n, ctx.Err())
}

// eventAttrs returns a new slice with len == cap, so appending to it copies.
func eventAttrs(h Hook, e Event) []any {
	return []any{"hook", h.Path, "type", e.Kind, "name", e.Name, "state", e.State, "priority", e.Priority}
}
