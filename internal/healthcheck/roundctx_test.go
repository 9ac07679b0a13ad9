package healthcheck

import (
	"context"
	"errors"
	"runtime"
	"testing"
	"time"
)

// TestRoundCtx: the round's context keeps the contract of a context with a
// deadline and a cancel, and contexts derived from it watch it without a
// goroutine of their own.
func TestRoundCtx(t *testing.T) {
	noLeak(t)
	t.Run("deadline", func(t *testing.T) {
		dl := time.Now().Add(30 * time.Millisecond)
		c := &roundCtx{deadline: dl}
		if d, ok := c.Deadline(); !ok || !d.Equal(dl) {
			t.Errorf("Deadline %v, %v", d, ok)
		}
		if c.Err() != nil || c.Value("x") != nil {
			t.Errorf("Err %v before the deadline", c.Err())
		}
		child, cancel := context.WithCancel(c)
		defer cancel()
		ran := make(chan struct{})
		context.AfterFunc(c, func() { close(ran) })
		select {
		case <-c.Done():
		case <-time.After(time.Second):
			t.Fatal("Done not closed at the deadline")
		}
		if time.Now().Before(dl) || !errors.Is(c.Err(), context.DeadlineExceeded) {
			t.Errorf("done before the deadline, or Err %v", c.Err())
		}
		<-ran
		<-child.Done()
		if !errors.Is(child.Err(), context.DeadlineExceeded) {
			t.Errorf("child Err %v", child.Err())
		}
	})
	t.Run("Err at the deadline without Done", func(t *testing.T) {
		c := &roundCtx{deadline: time.Now().Add(-time.Millisecond)}
		if !errors.Is(c.Err(), context.DeadlineExceeded) {
			t.Errorf("Err %v past the deadline", c.Err())
		}
		select {
		case <-c.Done():
		default:
			t.Error("Err non-nil, Done open")
		}
	})
	t.Run("cancel", func(t *testing.T) {
		c := &roundCtx{deadline: time.Now().Add(time.Hour)}
		before := runtime.NumGoroutine()
		ran := make(chan struct{})
		stop := context.AfterFunc(c, func() { close(ran) })
		stopped := context.AfterFunc(c, func() { t.Error("a stopped function ran") })
		children := make([]context.CancelFunc, 10)
		for i := range children {
			_, children[i] = context.WithTimeout(c, time.Hour)
		}
		if n := runtime.NumGoroutine(); n > before {
			t.Errorf("%d goroutines watch the round's context", n-before)
		}
		if !stopped() {
			t.Error("stop of a pending function: false")
		}
		c.cancel(context.Canceled)
		<-ran
		if stop() {
			t.Error("stop of a function that ran: true")
		}
		if !errors.Is(c.Err(), context.Canceled) {
			t.Errorf("Err %v after cancel", c.Err())
		}
		c.cancel(context.DeadlineExceeded) // no effect
		if !errors.Is(c.Err(), context.Canceled) {
			t.Errorf("Err %v after a second cancel", c.Err())
		}
		late := make(chan struct{})
		context.AfterFunc(c, func() { close(late) })
		<-late
		for _, cancel := range children {
			cancel()
		}
	})
}
