package ipvs

import (
	"errors"
	"strings"
	"testing"
	"time"

	mobyipvs "github.com/moby/ipvs"
)

// These exercise Kernel.do, the serialising, deadline-bounded call wrapper,
// without a kernel.

func newFakeKernel(timeout time.Duration) *Kernel {
	return &Kernel{timeout: timeout, sem: make(chan struct{}, 1)}
}

func TestCallReturnsResult(t *testing.T) {
	k := newFakeKernel(time.Second)
	want := errors.New("kernel said no")
	if err := k.do(func(*mobyipvs.Handle) error { return want }); err != want {
		t.Fatalf("do = %v, want %v", err, want)
	}
	if err := k.do(func(*mobyipvs.Handle) error { return nil }); err != nil {
		t.Fatalf("do = %v", err)
	}
}

func TestCallTimeoutWedgesUntilTheKernelAnswers(t *testing.T) {
	k := newFakeKernel(50 * time.Millisecond)
	release := make(chan struct{})
	start := time.Now()
	err := k.do(func(*mobyipvs.Handle) error { <-release; return nil })
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("stuck call: do = %v, want ErrTimeout", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("stuck call returned after %v", d)
	}
	// The stuck goroutine still owns the handle: the next call must not
	// reach the handle (it would steal replies) and must time out too.
	ran := false
	err = k.do(func(*mobyipvs.Handle) error { ran = true; return nil })
	if !errors.Is(err, ErrTimeout) || ran || !strings.Contains(err.Error(), "earlier call") {
		t.Fatalf("call behind a stuck one: do = %v (ran %v), want ErrTimeout without running", err, ran)
	}
	close(release) // the kernel answers at last
	deadline := time.Now().Add(5 * time.Second)
	for {
		err = k.do(func(*mobyipvs.Handle) error { return nil })
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("handle never released: %v", err)
		}
	}
}

func TestCallRecoversPanic(t *testing.T) {
	k := newFakeKernel(time.Second)
	err := k.do(func(*mobyipvs.Handle) error { panic("index out of range") })
	if err == nil || !strings.Contains(err.Error(), "panicked: index out of range") {
		t.Fatalf("do = %v, want the panic as an error", err)
	}
	if err := k.do(func(*mobyipvs.Handle) error { return nil }); err != nil {
		t.Fatalf("after a panic: do = %v", err)
	}
}

func TestCallSerialises(t *testing.T) {
	k := newFakeKernel(5 * time.Second)
	inside := 0
	errc := make(chan error)
	for range 20 {
		go func() {
			errc <- k.do(func(*mobyipvs.Handle) error {
				inside++ // the race detector flags this if calls overlap
				if inside != 1 {
					return errors.New("two calls inside at once")
				}
				time.Sleep(time.Millisecond)
				inside--
				return nil
			})
		}()
	}
	for range 20 {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
}

func TestCallAfterClose(t *testing.T) {
	k := newFakeKernel(time.Second)
	if err := k.Close(); err != nil {
		t.Fatalf("Close = %v", err)
	}
	if err := k.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}
	if _, err := k.Services(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Services after Close = %v, want ErrClosed", err)
	}
}

func TestInvalidArgumentsNeverReachTheKernel(t *testing.T) {
	k := newFakeKernel(time.Second)
	k.sem <- struct{}{} // any kernel call would now time out instead
	svc := Service{Protocol: TCP, Addr: v4, Scheduler: "rr"}
	for name, err := range map[string]error{
		"AddService":     k.AddService(Service{Protocol: TCP, Addr: v4}),
		"DelService":     k.DelService(Service{Scheduler: "rr"}),
		"AddDestination": k.AddDestination(svc, Destination{Addr: v6, Weight: 1}),
		"DelDestination": k.DelDestination(svc, Destination{}),
	} {
		if !errors.Is(err, errInvalid) {
			t.Errorf("%s = %v, want an errInvalid error", name, err)
		}
	}
	if _, err := k.Destinations(Service{}); !errors.Is(err, errInvalid) {
		t.Errorf("Destinations = %v, want an errInvalid error", err)
	}
}
