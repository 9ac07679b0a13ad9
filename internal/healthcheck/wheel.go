package healthcheck

import (
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultQuantum is Options.Quantum's default.
const DefaultQuantum = 5 * time.Millisecond

// wheelSlots is the number of slots of the wheel (a power of two): with
// the default quantum, one turn is 20s.
const wheelSlots = 4096

// wheel starts probe rounds when they are due. One goroutine sleeps until
// the earliest due round and then starts every round due within half a
// quantum, each on a worker goroutine of its own (see dispatch); it wakes
// at most once per quantum. So 10 000 rounds a second cost 200 wake-ups a
// second (5ms quantum), not 10 000 timer firings each waking a thread, and
// a round starts within about half a quantum of its slot. A round in
// flight is not in the wheel: the probe puts itself back when the round is
// over, so a slow check delays only its own probe.
//
// It is a timing wheel: slot k (modulo wheelSlots) holds the rounds due
// within half a quantum of k quanta after the epoch, so scheduling and
// removing a round costs O(1), and a wake-up takes whole slots. (A binary
// heap of 10 000 probes cost about 1.5µs per round, 6 % of a kept-alive
// HTTP probe, chasing pointers.) A round due more than a turn ahead waits
// in its slot for its turn.
type wheel struct {
	quantum time.Duration
	start   func(*probe)
	epoch   time.Time // due times are kept as monotonic offsets from it

	mu     sync.Mutex
	slots  [wheelSlots][]*probe
	count  int   // rounds in the slots
	cur    int64 // the last tick taken
	nextAt int64 // the tick the loop plans to take next; math.MaxInt64: idle
	wake   chan struct{}
	done   chan struct{}
	exited chan struct{}

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
		cur:     -1,
		nextAt:  math.MaxInt64,
		wake:    make(chan struct{}, 1),
		done:    make(chan struct{}),
		exited:  make(chan struct{}),
	}
}

// tickOf is the tick whose slot holds a round due at d (since the epoch):
// the one within half a quantum of d.
func (w *wheel) tickOf(d time.Duration) int64 {
	return int64((d + w.quantum/2) / w.quantum)
}

// push schedules p's next round at due. p must not be in the wheel.
func (w *wheel) push(p *probe, due time.Time) {
	w.mu.Lock()
	k := max(w.tickOf(due.Sub(w.epoch)), w.cur+1) // a past tick is taken at the next wake-up
	p.wheelTick = k
	slot := &w.slots[k&(wheelSlots-1)]
	p.wheelIndex = len(*slot)
	*slot = append(*slot, p)
	w.count++
	early := k < w.nextAt
	w.mu.Unlock()
	if early {
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
}

// remove takes p out of the wheel if it is there.
func (w *wheel) remove(p *probe) {
	w.mu.Lock()
	if i := p.wheelIndex; i >= 0 {
		slot := &w.slots[p.wheelTick&(wheelSlots-1)]
		last := len(*slot) - 1
		if i != last {
			(*slot)[i] = (*slot)[last]
			(*slot)[i].wheelIndex = i
		}
		(*slot)[last] = nil
		*slot = (*slot)[:last]
		p.wheelIndex = -1
		w.count--
	}
	w.mu.Unlock()
}

// takeLocked moves the rounds of the ticks up to now into batch, and
// returns the next tick that holds a round (math.MaxInt64 if none).
func (w *wheel) takeLocked(now int64, batch []*probe) ([]*probe, int64) {
	from := w.cur + 1
	if now-from >= wheelSlots {
		from = now - wheelSlots + 1 // a whole turn: every slot once
	}
	for k := from; k <= now && w.count > 0; k++ {
		slot := &w.slots[k&(wheelSlots-1)]
		kept := (*slot)[:0]
		for _, p := range *slot {
			if p.wheelTick <= now {
				p.wheelIndex = -1
				batch = append(batch, p)
				w.count--
				continue
			}
			p.wheelIndex = len(kept) // a later turn
			kept = append(kept, p)
		}
		clear((*slot)[len(kept):])
		*slot = kept
	}
	w.cur = now
	// The first slot ahead with a round of this turn; failing that, the
	// earliest round of a later turn. (After the take, a slot k ahead
	// holds only ticks k, k+wheelSlots, ...)
	next := int64(math.MaxInt64)
	for k := now + 1; k <= now+wheelSlots && w.count > 0; k++ {
		for _, p := range w.slots[k&(wheelSlots-1)] {
			if p.wheelTick == k {
				return batch, k
			}
			next = min(next, p.wheelTick)
		}
	}
	return batch, next
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
		var next int64
		batch, next = w.takeLocked(int64(now.Sub(w.epoch)/w.quantum), batch)
		w.nextAt = next
		w.mu.Unlock()
		var sleep time.Duration = -1
		if next != math.MaxInt64 {
			at := w.epoch.Add(time.Duration(next) * w.quantum)
			if earliest := lastWake.Add(w.quantum); at.Before(earliest) {
				at = earliest
			}
			sleep = at.Sub(now)
		}
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
