package healthcheck

import (
	"container/heap"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultQuantum is Options.Quantum's default.
const DefaultQuantum = 5 * time.Millisecond

// wheel starts probe rounds when they are due. One goroutine sleeps until
// the earliest due round and then starts every round due within half a
// quantum, each on a worker goroutine of its own (see dispatch); it wakes
// at most once per quantum. So 10 000 rounds a second cost 200 wake-ups a
// second (5ms quantum), not 10 000 timer firings each waking a thread, and
// a round starts within about half a quantum of its slot. A round in
// flight is not in the heap: the probe puts itself back when the round is
// over, so a slow check delays only its own probe.
type wheel struct {
	quantum time.Duration
	start   func(*probe)
	epoch   time.Time // due times are kept as monotonic offsets from it

	mu       sync.Mutex
	h        probeHeap
	nextWake time.Time // when the loop plans to wake; zero: idle
	wake     chan struct{}
	done     chan struct{}
	exited   chan struct{}

	// now is the loop's latest wake-up (nanoseconds since epoch): the
	// coarse clock that stamps idle workers.
	now atomic.Int64

	idleMu     sync.Mutex
	idle       []*worker // LIFO: the most recently idle worker is at the end
	idleClosed bool
}

// worker is a goroutine that runs rounds handed to it by dispatch.
type worker struct {
	work      chan *probe // buffered 1; nil: exit
	idleSince int64       // wheel.now when it went idle
}

func newWheel(quantum time.Duration, start func(*probe)) *wheel {
	return &wheel{
		quantum: quantum,
		start:   start,
		epoch:   time.Now(),
		wake:    make(chan struct{}, 1),
		done:    make(chan struct{}),
		exited:  make(chan struct{}),
	}
}

// push schedules p's next round at due. p must not be in the heap.
func (w *wheel) push(p *probe, due time.Time) {
	w.mu.Lock()
	p.wheelDue = due.Sub(w.epoch)
	heap.Push(&w.h, p)
	early := w.nextWake.IsZero() || due.Before(w.nextWake.Add(-w.quantum/2))
	w.mu.Unlock()
	if early {
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
}

// remove takes p out of the heap if it is there.
func (w *wheel) remove(p *probe) {
	w.mu.Lock()
	if p.wheelIndex >= 0 {
		heap.Remove(&w.h, p.wheelIndex)
	}
	w.mu.Unlock()
}

func (w *wheel) run() {
	defer close(w.exited)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var batch []*probe
	var lastWake, lastReap time.Time
	for {
		now := time.Now()
		lastWake = now
		w.now.Store(int64(now.Sub(w.epoch)))
		if now.Sub(lastReap) >= workerIdle/2 {
			lastReap = now
			w.reap()
		}
		w.mu.Lock()
		horizon := now.Add(w.quantum / 2).Sub(w.epoch)
		for len(w.h) > 0 && w.h[0].wheelDue <= horizon {
			batch = append(batch, heap.Pop(&w.h).(*probe))
		}
		var sleep time.Duration = -1
		if len(w.h) > 0 {
			next := w.epoch.Add(w.h[0].wheelDue - w.quantum/2)
			if earliest := lastWake.Add(w.quantum); next.Before(earliest) {
				next = earliest
			}
			w.nextWake = next
			sleep = next.Sub(now)
		} else {
			w.nextWake = time.Time{}
		}
		w.mu.Unlock()
		for i, p := range batch {
			w.dispatch(p)
			batch[i] = nil
		}
		batch = batch[:0]

		if sleep < 0 || sleep > workerIdle {
			w.idleMu.Lock()
			if len(w.idle) > 0 {
				sleep = workerIdle // to reap them
			}
			w.idleMu.Unlock()
		}
		if sleep >= 0 {
			timer.Reset(sleep)
		} else {
			timer.Stop()
		}
		select {
		case <-timer.C:
		case <-w.wake:
			// Something is due earlier than planned; but wake at most
			// once per quantum.
			if d := time.Until(lastWake.Add(w.quantum)); d > 0 {
				timer.Reset(d)
				select {
				case <-timer.C:
				case <-w.done:
					return
				}
			}
		case <-w.done:
			return
		}
	}
}

// workerIdle is how long a worker goroutine waits for another round
// before it exits (give or take half of it: the loop reaps every half
// workerIdle).
const workerIdle = time.Second

// dispatch hands a due round to an idle worker, or starts a new worker if
// none is idle: a round never waits for a worker, so a slow check delays
// only its own probe. Workers live on between rounds, so their stacks,
// grown by a first check, serve the next ones (a fresh goroutine per round
// spent about 7 % of the prober's CPU growing its stack).
//
// Idle workers form a stack: the most recently idle one gets the next
// round, so a burst's extra workers stay idle and exit, and the few that
// carry the steady load keep warm stacks. (A FIFO hand-off, as an
// unbuffered channel shared by all workers is, cycles through every worker
// a burst ever started: none is idle long enough to exit, and thousands of
// stacks stay alive, shrunk by the GC and grown again by the next round.)
func (w *wheel) dispatch(p *probe) {
	w.idleMu.Lock()
	if n := len(w.idle); n > 0 {
		wk := w.idle[n-1]
		w.idle[n-1] = nil
		w.idle = w.idle[:n-1]
		w.idleMu.Unlock()
		wk.work <- p
		return
	}
	w.idleMu.Unlock()
	go w.worker(p)
}

func (w *wheel) worker(p *probe) {
	wk := &worker{work: make(chan *probe, 1)}
	for p != nil {
		w.start(p)
		w.idleMu.Lock()
		if w.idleClosed {
			w.idleMu.Unlock()
			return
		}
		wk.idleSince = w.now.Load()
		w.idle = append(w.idle, wk)
		w.idleMu.Unlock()
		p = <-wk.work
	}
}

// reap stops the workers idle for workerIdle or longer: those at the
// bottom of the stack.
func (w *wheel) reap() {
	limit := w.now.Load() - int64(workerIdle)
	w.idleMu.Lock()
	n := 0
	for n < len(w.idle) && w.idle[n].idleSince <= limit {
		w.idle[n].work <- nil
		n++
	}
	if n > 0 {
		w.idle = append(w.idle[:0], w.idle[n:]...)
		clear(w.idle[len(w.idle):cap(w.idle)][:n])
	}
	w.idleMu.Unlock()
}

func (w *wheel) close() {
	close(w.done)
	<-w.exited
	w.idleMu.Lock()
	w.idleClosed = true
	for _, wk := range w.idle {
		wk.work <- nil
	}
	w.idle = nil
	w.idleMu.Unlock()
}

// probeHeap is a min-heap of probes by due time.
type probeHeap []*probe

func (h probeHeap) Len() int           { return len(h) }
func (h probeHeap) Less(i, j int) bool { return h[i].wheelDue < h[j].wheelDue }
func (h probeHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].wheelIndex = i
	h[j].wheelIndex = j
}

func (h *probeHeap) Push(x any) {
	p := x.(*probe)
	p.wheelIndex = len(*h)
	*h = append(*h, p)
}

func (h *probeHeap) Pop() any {
	old := *h
	n := len(old)
	p := old[n-1]
	old[n-1] = nil
	p.wheelIndex = -1
	*h = old[:n-1]
	return p
}
