package healthcheck

import (
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

// TestWheel: every round starts no earlier than half a quantum before it
// is due, and soon after; rounds due in the past start at once, rounds due
// beyond a turn of the wheel in their turn; a removed round never starts;
// and the idle workers exit with Close.
func TestWheel(t *testing.T) {
	noLeak(t)
	const q = 500 * time.Microsecond // a turn is wheelSlots·q ≈ 2s
	const slack = 100 * time.Millisecond
	var mu sync.Mutex
	started := map[*probe]time.Time{}
	var wg sync.WaitGroup
	w := newWheel(q, func(p *probe) {
		mu.Lock()
		started[p] = time.Now()
		mu.Unlock()
		wg.Done()
	})
	go w.run()
	defer w.close()

	now := time.Now()
	due := map[*probe]time.Time{}
	add := func(d time.Duration) *probe {
		p := &probe{wheelIndex: -1}
		due[p] = now.Add(d)
		return p
	}
	var ps []*probe
	for range 500 {
		ps = append(ps, add(time.Duration(rand.Int64N(int64(300*time.Millisecond)))))
	}
	ps = append(ps, add(-time.Second), add(0), add(wheelSlots*q+200*time.Millisecond), add(2*wheelSlots*q+50*time.Millisecond))
	removed := []*probe{add(100 * time.Millisecond), add(wheelSlots*q + 100*time.Millisecond)}
	wg.Add(len(ps))
	for _, p := range append(ps, removed...) {
		w.push(p, due[p])
	}
	for _, p := range removed {
		w.remove(p)
	}
	wg.Wait()
	time.Sleep(200 * time.Millisecond) // a removed round would have started by now

	mu.Lock()
	defer mu.Unlock()
	for _, p := range removed {
		if _, ok := started[p]; ok {
			t.Errorf("removed round due at %v started", due[p].Sub(now))
		}
	}
	for _, p := range ps {
		at, d := started[p], due[p]
		lo := d.Add(-q / 2)
		if lo.Before(now) {
			lo = now
		}
		hi := d
		if hi.Before(now) {
			hi = now
		}
		if at.Before(lo) || at.After(hi.Add(q/2+slack)) {
			t.Errorf("round due at %v started at %v", d.Sub(now), at.Sub(now))
		}
	}
	if w.count != 0 {
		t.Errorf("%d rounds left in the wheel", w.count)
	}
}
