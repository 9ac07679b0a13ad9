package netlab

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

// SkipMessage is the reason NewForTest gives when it skips.
const SkipMessage = "network-namespace scenario: needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN)"

// NewForTest creates a lab for a test or benchmark and registers its Close
// with tb.Cleanup. It skips the test (SkipMessage) unless the process is root
// with CAP_SYS_ADMIN and CAP_NET_ADMIN, and first Sweeps leftovers of
// crashed earlier runs with the same prefix (logging what it removed).
//
// Cleanup runs when the test returns, fails (t.Fatal/FailNow), or panics in
// the test goroutine: the testing package runs Cleanup functions before it
// re-raises the panic (netlab_test.go proves both with child processes). It
// does NOT run if the binary dies otherwise: a panic in another goroutine,
// os.Exit, a signal, or go test's -timeout (which panics from a timer
// goroutine). Then the lab's processes die through PR_SET_PDEATHSIG and the
// namespaces stay until the next Sweep, e.g. the next NewForTest with this
// prefix. Give each scenario a context deadline below -timeout (see the
// package documentation) so a hung scenario fails normally instead.
func NewForTest(tb testing.TB, prefix string, opts ...Option) *Lab {
	tb.Helper()
	if !privileged() {
		tb.Skip(SkipMessage)
	}
	if removed, err := Sweep(prefix); err != nil {
		tb.Logf("netlab: sweeping leftovers of earlier runs: %v", err)
	} else if len(removed) > 0 {
		tb.Logf("netlab: removed leftovers of earlier runs: %s", strings.Join(removed, " "))
	}
	lab, err := New(prefix, opts...)
	if err != nil {
		tb.Fatalf("netlab: %v", err)
	}
	tb.Cleanup(func() {
		if err := lab.Close(); err != nil {
			tb.Errorf("netlab: closing lab %s: %v", lab.Name(), err)
		}
	})
	return lab
}

// privileged reports whether the process runs as root with CAP_SYS_ADMIN
// and CAP_NET_ADMIN in its effective set.
func privileged() bool {
	if os.Geteuid() != 0 {
		return false
	}
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				return false
			}
			const capNetAdmin, capSysAdmin = 12, 21
			return caps&(1<<capNetAdmin) != 0 && caps&(1<<capSysAdmin) != 0
		}
	}
	return false
}

// PairForTest is NewForTest with two nodes, "a" and "b", joined by a veth
// pair called ifname at both ends, with addrsA and addrsB (see Link): the
// bed of most two-host tests.
func PairForTest(tb testing.TB, prefix, ifname string, addrsA, addrsB []string) (a, b *Node) {
	tb.Helper()
	lab := NewForTest(tb, prefix)
	var err error
	if a, err = lab.AddNode("a"); err != nil {
		tb.Fatal(err)
	}
	if b, err = lab.AddNode("b"); err != nil {
		tb.Fatal(err)
	}
	if _, _, err := lab.Link(a, ifname, addrsA, b, ifname, addrsB); err != nil {
		tb.Fatal(err)
	}
	return a, b
}
