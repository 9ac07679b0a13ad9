package healthcheck

import (
	"container/heap"
	"sync"
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
	work     chan *probe // unbuffered: a send succeeds only to an idle worker
	done     chan struct{}
	exited   chan struct{}
}

func newWheel(quantum time.Duration, start func(*probe)) *wheel {
	return &wheel{
		quantum: quantum,
		start:   start,
		epoch:   time.Now(),
		wake:    make(chan struct{}, 1),
		work:    make(chan *probe),
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
	var lastWake time.Time
	for {
		now := time.Now()
		lastWake = now
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
// before it exits.
const workerIdle = time.Second

// dispatch hands a due round to an idle worker, or starts a new worker if
// none is idle: a round never waits for a worker, so a slow check delays
// only its own probe. Workers live on between rounds, so their stacks,
// grown by a first check, serve the next ones (a fresh goroutine per round
// spent about 7 % of the prober's CPU growing its stack).
func (w *wheel) dispatch(p *probe) {
	select {
	case w.work <- p:
	default:
		go w.worker(p)
	}
}

func (w *wheel) worker(p *probe) {
	idle := time.NewTimer(workerIdle)
	defer idle.Stop()
	for {
		w.start(p)
		idle.Reset(workerIdle)
		select {
		case p = <-w.work:
		case <-idle.C:
			return
		case <-w.done:
			return
		}
	}
}

func (w *wheel) close() {
	close(w.done)
	<-w.exited
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
