// Package kerneltest holds what tests of the real IPVS kernel share: the
// rule that a missing IPVS fails a test inside the test VM and skips it
// elsewhere, and a fresh network namespace per test (its own IPVS table,
// sysctls and sync daemons). It imports nothing of hadirector, so the
// packages under test can use it from their internal tests.
package kerneltest

import (
	"fmt"
	"os"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// NeedIPVS runs the test if preflight (ipvs.Preflight) passes, fails it
// inside the VM (HADIRECTOR_VMTEST=1, where IPVS is the point) and skips it
// elsewhere with howToRun, the command that runs it in the VM.
func NeedIPVS(t testing.TB, preflight func() error, howToRun string) {
	t.Helper()
	err := preflight()
	if err == nil {
		return
	}
	if os.Getenv("HADIRECTOR_VMTEST") == "1" {
		t.Fatalf("inside the test VM the kernel must have IPVS: %v", err)
	}
	t.Skipf("kernel has no IPVS (%v); run in the VM: %s", err, howToRun)
}

// GoExec is the command that runs the tests of package pkg
// ("./internal/ipvs/") in the VM.
func GoExec(pkg string) string {
	return `CGO_ENABLED=0 go test -exec "$PWD/integration/vm/go-exec.sh" ` + pkg
}

var counter atomic.Int32

// NewNetns creates a named network namespace for one test, with lo up, and
// returns its path; the test's cleanup deletes it. lo must be up: until
// the namespace has a local routing table the kernel refuses every IPv4
// IPVS destination with EINVAL (ip_vs_new_dest wants inet_addr_type() to
// say UNICAST or LOCAL).
func NewNetns(t testing.TB, prefix string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("creating a network namespace needs root")
	}
	name := fmt.Sprintf("%s-%d-%d", prefix, os.Getpid(), counter.Add(1))
	errc := make(chan error, 1)
	go func() {
		// netns.NewNamed moves the calling thread into the new namespace.
		// This goroutine exits with its thread locked, so the runtime
		// destroys that thread rather than reuse it in the wrong namespace.
		runtime.LockOSThread()
		h, err := netns.NewNamed(name)
		if err != nil {
			errc <- err
			return
		}
		h.Close()
		lo, err := netlink.LinkByName("lo")
		if err == nil {
			err = netlink.LinkSetUp(lo)
		}
		if err != nil {
			err = fmt.Errorf("set lo up: %w", err)
		}
		errc <- err
	}()
	if err := <-errc; err != nil {
		t.Fatalf("new network namespace %s: %v", name, err)
	}
	t.Cleanup(func() {
		if err := netns.DeleteNamed(name); err != nil {
			t.Errorf("delete network namespace %s: %v", name, err)
		}
	})
	return "/var/run/netns/" + name
}
