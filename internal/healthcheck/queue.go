package healthcheck

import "sync"

// queue hands transitions from the probes to the consumer without ever
// blocking a probe: at most one transition waits per target, and a newer
// one of the same target merges into it.
type queue struct {
	out    chan Transition
	wake   chan struct{} // buffered 1
	done   chan struct{}
	exited chan struct{}

	mu        sync.Mutex
	pending   map[TargetID]*Transition
	order     []TargetID // FIFO of targets with a pending transition (may hold stale ids)
	pushed    uint64
	coalesced uint64
	closed    bool
}

func newQueue() *queue {
	return &queue{
		out:     make(chan Transition),
		wake:    make(chan struct{}, 1),
		done:    make(chan struct{}),
		exited:  make(chan struct{}),
		pending: make(map[TargetID]*Transition),
	}
}

// push queues tr, merging it into a pending transition of the same target.
func (q *queue) push(tr Transition) {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return
	}
	q.pushed++
	if pt, ok := q.pending[tr.Target]; ok {
		q.coalesced++
		merged := tr
		merged.From = pt.From
		merged.Coalesced = pt.Coalesced + 1
		merged.WeightChanged = merged.From == merged.To && (pt.WeightChanged || tr.WeightChanged)
		*pt = merged
	} else {
		t := tr
		q.pending[tr.Target] = &t
		q.order = append(q.order, tr.Target)
	}
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// drop discards the pending transition of a removed target.
func (q *queue) drop(id TargetID) {
	q.mu.Lock()
	delete(q.pending, id)
	q.mu.Unlock()
}

// pop takes the oldest pending transition.
func (q *queue) pop() (Transition, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.order) > 0 {
		id := q.order[0]
		q.order = q.order[1:]
		if len(q.order) == 0 {
			q.order = nil // release the backing array
		}
		if pt, ok := q.pending[id]; ok {
			delete(q.pending, id)
			return *pt, true
		}
	}
	return Transition{}, false
}

func (q *queue) run() {
	defer close(q.exited)
	defer close(q.out)
	for {
		select {
		case <-q.wake:
		case <-q.done:
			return
		}
		for {
			tr, ok := q.pop()
			if !ok {
				break
			}
			select {
			case q.out <- tr:
			case <-q.done:
				return
			}
		}
	}
}

func (q *queue) close() {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return
	}
	q.closed = true
	q.mu.Unlock()
	close(q.done)
	<-q.exited
}

func (q *queue) counts() (pushed, coalesced uint64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.pushed, q.coalesced
}
