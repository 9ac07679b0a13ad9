package healthcheck

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/hadirector/hadirector/integration/netlab"
)

// pair builds two namespaces joined by a veth pair: "prober"
// (10.77.0.1, fd77::1) and "server" (10.77.0.2, fd77::2 and extra
// addresses 10.77.0.10.. and fd77::10..). Addresses 10.77.0.200.. and
// fd77::200.. belong to no one.
func pair(t *testing.T, extra int) (prober, server *netlab.Node) {
	t.Helper()
	lab := netlab.NewForTest(t, "hdhc")
	var err error
	if prober, err = lab.AddNode("prober"); err != nil {
		t.Fatal(err)
	}
	if server, err = lab.AddNode("server"); err != nil {
		t.Fatal(err)
	}
	srvAddrs := []string{"10.77.0.2/24", "fd77::2/64"}
	for i := range extra {
		srvAddrs = append(srvAddrs, fmt.Sprintf("10.77.0.%d/24", 10+i), fmt.Sprintf("fd77::%x/64", 0x10+i))
	}
	if _, _, err := lab.Link(prober, "eth0", []string{"10.77.0.1/24", "fd77::1/64"}, server, "eth0", srvAddrs); err != nil {
		t.Fatal(err)
	}
	return prober, server
}

// pingerIn opens both sockets of a new Pinger inside node's namespace.
func pingerIn(t *testing.T, node *netlab.Node) *Pinger {
	t.Helper()
	p := NewPinger()
	t.Cleanup(func() { p.Close() })
	if err := node.Do(func() error {
		if err := p.Open(false); err != nil {
			return err
		}
		return p.Open(true)
	}); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestICMPCheck(t *testing.T) {
	noLeak(t)
	prober, _ := pair(t, 0)
	p := pingerIn(t, prober)
	env := &Env{Pinger: p}
	const timeout = 500 * time.Millisecond
	for _, tc := range []struct {
		name   string
		addr   string
		ok     bool
		detail string
	}{
		{"reachable IPv4", "10.77.0.2", true, "echo reply in"},
		{"reachable IPv6", "fd77::2", true, "echo reply in"},
		{"reachable IPv4-mapped", "::ffff:10.77.0.2", true, "echo reply in"},
		{"no such host IPv4", "10.77.0.200", false, "no echo reply: timeout after"},
		{"no such host IPv6", "fd77::200", false, "no echo reply: timeout after"},
		{"no route", "192.0.2.1", false, "sending echo request: network is unreachable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newChecker(t, ICMPSpec{Addr: netip.MustParseAddr(tc.addr)}, env)
			res, took := runCheck(t, c, timeout)
			wantResult(t, res, tc.ok, tc.detail)
			wantWithin(t, took, timeout)
		})
	}
	if n := p.Sockets(); n != 2 {
		t.Errorf("%d sockets opened; want 2 (one per family)", n)
	}
}

func TestICMPManyProbesShareOneSocket(t *testing.T) {
	noLeak(t)
	const hosts = 40
	prober, _ := pair(t, hosts)
	p := pingerIn(t, prober)
	env := &Env{Pinger: p}
	type probe struct {
		addr netip.Addr
		ok   bool
	}
	var probes []probe
	for i := range hosts {
		probes = append(probes,
			probe{netip.MustParseAddr(fmt.Sprintf("10.77.0.%d", 10+i)), true},
			probe{netip.MustParseAddr(fmt.Sprintf("fd77::%x", 0x10+i)), true},
			probe{netip.MustParseAddr(fmt.Sprintf("10.77.0.%d", 200+i)), false},
			probe{netip.MustParseAddr(fmt.Sprintf("fd77::%x", 0x200+i)), false},
		)
	}
	// Resolve the neighbours first. From a cold IPv6 neighbour cache, the
	// kernel loses some of 120 echo requests sent at once to 40 fresh
	// addresses on one link (while neighbour discovery runs), and those
	// probes fail at their timeout; this test is about the demultiplexing,
	// not about neighbour discovery.
	for _, pr := range probes {
		if pr.ok {
			ctx, cancel := context.WithTimeout(t.Context(), time.Second)
			if _, err := p.Ping(ctx, pr.addr); err != nil {
				t.Logf("warm-up ping %s: %v", pr.addr, err)
			}
			cancel()
		}
	}
	const rounds = 3 // each address probed by 3 concurrent checks: 480 in flight
	const timeout = time.Second
	var wg sync.WaitGroup
	errs := make(chan string, len(probes)*rounds)
	start := time.Now()
	for range rounds {
		for _, pr := range probes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := ICMPSpec{Addr: pr.addr}.NewChecker(env)
				if err != nil {
					errs <- err.Error()
					return
				}
				res, took := runCheck(t, c, timeout)
				if res.OK != pr.ok {
					errs <- fmt.Sprintf("%s: OK=%v (%s); want %v", pr.addr, res.OK, res.Detail, pr.ok)
				}
				if took > timeout+timeMargin {
					errs <- fmt.Sprintf("%s: took %v", pr.addr, took)
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	t.Logf("%d concurrent probes in %v; unmatched replies: %d", len(probes)*rounds, time.Since(start).Round(time.Millisecond), p.Unmatched())
	if n := p.Sockets(); n != 2 {
		t.Errorf("%d sockets opened; want 2", n)
	}
}

// TestICMPThroughManager: the Manager passes its Pinger to ICMP checks.
func TestICMPThroughManager(t *testing.T) {
	noLeak(t)
	prober, _ := pair(t, 0)
	p := pingerIn(t, prober)
	m := newManager(t, Options{Pinger: p})
	rec := record(m)
	spec := Spec{Interval: 50 * time.Millisecond, Timeout: 50 * time.Millisecond, Rise: 2, Fall: 2}
	spec.Check = ICMPSpec{Addr: netip.MustParseAddr("10.77.0.2")}
	if err := m.Add("up", spec); err != nil {
		t.Fatal(err)
	}
	spec.Check = ICMPSpec{Addr: netip.MustParseAddr("10.77.0.201")}
	if err := m.Add("down", spec); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 3*time.Second, "both transitions", func() bool { return len(rec.settle(0, 0)) >= 2 })
	for _, tr := range rec.settle(0, 0) {
		want := map[TargetID]State{"up": StateUp, "down": StateDown}[tr.Target]
		if tr.To != want {
			t.Errorf("%s went %v; want %v (%s)", tr.Target, tr.To, want, tr.Detail)
		}
	}
}

// TestICMPLoopback needs only CAP_NET_RAW, no namespace.
func TestICMPLoopback(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("ICMP echo over a raw socket: needs root (CAP_NET_RAW)")
	}
	noLeak(t)
	p := NewPinger()
	defer p.Close()
	for _, a := range []string{"127.0.0.1", "::1"} {
		res, took := runCheck(t, newChecker(t, ICMPSpec{Addr: netip.MustParseAddr(a)}, &Env{Pinger: p}), time.Second)
		wantResult(t, res, true, "echo reply")
		wantWithin(t, took, time.Second)
	}
}

// TestTCPAndHTTPToAMissingHost: a host that does not exist (no ARP answer)
// fails at the timeout — keepalived's issue #2115.
func TestTCPAndHTTPToAMissingHost(t *testing.T) {
	noLeak(t)
	prober, _ := pair(t, 0)
	const timeout = 400 * time.Millisecond
	for name, spec := range map[string]CheckSpec{
		"tcp":        TCPSpec{Addr: netip.MustParseAddrPort("10.77.0.200:80")},
		"http":       HTTPSpec{Addr: netip.MustParseAddrPort("10.77.0.200:80")},
		"https IPv6": HTTPSpec{Addr: netip.MustParseAddrPort("[fd77::200]:443"), TLS: true},
	} {
		t.Run(name, func(t *testing.T) {
			c := newChecker(t, spec, nil)
			var res Result
			var took time.Duration
			// The socket is made in the calling thread's namespace.
			if err := prober.Do(func() error { res, took = runCheck(t, c, timeout); return nil }); err != nil {
				t.Fatal(err)
			}
			wantResult(t, res, false, "connect: timeout after")
			wantWithin(t, took, timeout)
		})
	}
}

func TestParseEchoReply(t *testing.T) {
	data := []byte("cookie!!payload")
	for _, v6 := range []bool{false, true} {
		b := make([]byte, icmpHeaderLen+len(data))
		marshalEcho(b, v6, true, 0xbeef, 0x1234, data)
		id, seq, got, ok := parseEchoReply(b, v6)
		if !ok || id != 0xbeef || seq != 0x1234 || !bytes.Equal(got, data) {
			t.Errorf("v6=%v: parse(marshal) = %x %x %q %v", v6, id, seq, got, ok)
		}
		if _, _, _, ok := parseEchoReply(b, !v6); ok {
			t.Errorf("v6=%v: parsed as the other family", v6)
		}
		req := make([]byte, len(b))
		marshalEcho(req, v6, false, 1, 2, data)
		if _, _, _, ok := parseEchoReply(req, v6); ok {
			t.Errorf("v6=%v: an echo request parsed as a reply", v6)
		}
		if _, _, _, ok := parseEchoReply(b[:icmpHeaderLen-1], v6); ok {
			t.Errorf("v6=%v: a short message parsed", v6)
		}
	}
	b := make([]byte, icmpHeaderLen+len(data))
	marshalEcho(b, false, true, 1, 2, data)
	b[10] ^= 0xff
	if _, _, _, ok := parseEchoReply(b, false); ok {
		t.Error("a corrupt IPv4 message parsed")
	}
}

func FuzzParseEchoReply(f *testing.F) {
	for _, v6 := range []bool{false, true} {
		b := make([]byte, icmpHeaderLen+8)
		marshalEcho(b, v6, true, 7, 9, []byte("12345678"))
		f.Add(b, v6)
	}
	f.Add([]byte{0, 0}, false)
	f.Add([]byte{}, true)
	f.Fuzz(func(t *testing.T, b []byte, v6 bool) {
		id, seq, data, ok := parseEchoReply(b, v6)
		if !ok {
			return
		}
		if len(data) != len(b)-icmpHeaderLen {
			t.Fatalf("data length %d from a %d-byte message", len(data), len(b))
		}
		// What parses re-marshals to the same message. (The checksum
		// field may differ: 0x0000 and 0xffff both verify.)
		again := make([]byte, len(b))
		marshalEcho(again, v6, true, id, seq, data)
		if !bytes.Equal(again[4:], b[4:]) || !bytes.Equal(again[:2], b[:2]) {
			t.Fatalf("re-marshalled %x; parsed from %x", again, b)
		}
		if _, _, _, ok := parseEchoReply(again, v6); !ok {
			t.Fatalf("re-marshalled %x does not parse", again)
		}
	})
}
