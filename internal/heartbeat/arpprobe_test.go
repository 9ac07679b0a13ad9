package heartbeat_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/hadirector/hadirector/integration/netlab"
	"github.com/hadirector/hadirector/internal/heartbeat"
)

// TestProbeARP: a node whose kernel is there answers; the same node with
// its link down, and an address nobody has, do not, within the wait.
func TestProbeARP(t *testing.T) {
	a, b := netlab.PairForTest(t, "hba", "eth0", []string{"10.7.0.1/24"}, []string{"10.7.0.2/24"})
	probe := func(target string) (bool, time.Duration) {
		t.Helper()
		var alive bool
		start := time.Now()
		if err := a.Do(func() error {
			var err error
			alive, err = heartbeat.ProbeARP("eth0", netip.MustParseAddr(target), 2, 5*time.Millisecond)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return alive, time.Since(start)
	}
	for range 3 {
		if alive, took := probe("10.7.0.2"); !alive {
			t.Fatalf("the peer did not answer ARP (%v)", took)
		} else {
			t.Logf("answered in %v", took)
		}
	}
	if alive, took := probe("10.7.0.9"); alive {
		t.Error("an address nobody has answered")
	} else {
		t.Logf("no answer after %v (2 tries × 5ms)", took)
	}
	link, err := b.Netlink().LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Netlink().LinkSetDown(link); err != nil {
		t.Fatal(err)
	}
	if alive, _ := probe("10.7.0.2"); alive {
		t.Error("a node with its link down answered")
	}
	if _, err := heartbeat.ProbeARP("eth0", netip.MustParseAddr("fd00::1"), 1, time.Millisecond); err == nil {
		t.Error("an IPv6 target was accepted")
	}
}

// TestARPProber: a prober opened ahead answers probe after probe, frames
// queued between probes (the peer's own ARP traffic) do not confuse it,
// and an address nobody has still gets no answer.
func TestARPProber(t *testing.T) {
	a, b := netlab.PairForTest(t, "hbp", "eth0", []string{"10.7.3.1/24"}, []string{"10.7.3.2/24"})
	var p *heartbeat.ARPProber
	if err := a.Do(func() (err error) { p, err = heartbeat.NewARPProber("eth0"); return err }); err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for i := range 3 {
		start := time.Now()
		alive, err := p.Probe(netip.MustParseAddr("10.7.3.2"), 2, 5*time.Millisecond)
		if err != nil || !alive {
			t.Fatalf("probe %d: alive %v, err %v", i, alive, err)
		}
		t.Logf("probe %d answered in %v", i, time.Since(start))
		// The peer asks for us meanwhile: frames queue on the idle socket.
		b.Do(func() error {
			_, _ = heartbeat.ProbeARP("eth0", netip.MustParseAddr("10.7.3.1"), 1, 5*time.Millisecond)
			return nil
		})
	}
	start := time.Now()
	if alive, err := p.Probe(netip.MustParseAddr("10.7.3.9"), 2, 5*time.Millisecond); err != nil || alive {
		t.Fatalf("nobody's address: alive %v, err %v", alive, err)
	}
	if took := time.Since(start); took < 10*time.Millisecond {
		t.Errorf("gave up after %v, before its two 5 ms waits", took)
	}
}
