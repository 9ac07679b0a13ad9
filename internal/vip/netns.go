package vip

import (
	"errors"
	"fmt"
	"runtime"

	"github.com/vishvananda/netns"
)

// inNetns runs fn on a fresh goroutine whose OS thread is locked and, if it
// is not there already, moved into the network namespace h; sockets fn
// creates belong to h for their lifetime. When the thread is already in h
// (the daemon's normal case: one namespace for the whole process) no setns
// happens, so no CAP_SYS_ADMIN is needed. If the thread cannot be moved
// back, the goroutine exits with the thread still locked and the Go runtime
// discards the thread; the caller's own thread is never touched.
func inNetns(h netns.NsHandle, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		cur, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("vip: current network namespace: %w", err)
			return
		}
		defer cur.Close()
		if cur.Equal(h) {
			defer runtime.UnlockOSThread()
			errc <- fn()
			return
		}
		if err := netns.Set(h); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("vip: enter network namespace: %w", err)
			return
		}
		ferr := fn()
		if err := netns.Set(cur); err != nil {
			// Stay locked: the thread dies with this goroutine.
			errc <- errors.Join(ferr, fmt.Errorf("vip: restore network namespace (thread discarded): %w", err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// currentNetns returns a handle on the calling OS thread's network
// namespace.
func currentNetns() (netns.NsHandle, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	h, err := netns.Get()
	if err != nil {
		return netns.None(), fmt.Errorf("vip: current network namespace: %w", err)
	}
	return h, nil
}
