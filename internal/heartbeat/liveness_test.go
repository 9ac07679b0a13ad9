package heartbeat

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hadirector/hadirector/integration/netlab"
	"golang.org/x/sys/unix"
)

const lvTestDomain = "lab/liveness"

var lvOtherKey = []byte("fedcba9876543210fedcba9876543210")

// lvRec is one event and when OnPeer received it.
type lvRec struct {
	ev  LivenessEvent
	got time.Time
}

type lvRecorder struct {
	mu  sync.Mutex
	all []lvRec
	ch  chan lvRec
}

func newLvRecorder() *lvRecorder { return &lvRecorder{ch: make(chan lvRec, 1024)} }

func (r *lvRecorder) on(e LivenessEvent) {
	rec := lvRec{ev: e, got: time.Now()}
	r.mu.Lock()
	r.all = append(r.all, rec)
	r.mu.Unlock()
	select {
	case r.ch <- rec:
	default:
	}
}

func (r *lvRecorder) kinds() []LivenessKind {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []LivenessKind
	for _, e := range r.all {
		out = append(out, e.ev.Kind)
	}
	return out
}

// expect waits for the next event, which must be of kind k.
func (r *lvRecorder) expect(tb testing.TB, k LivenessKind, timeout time.Duration) lvRec {
	tb.Helper()
	select {
	case e := <-r.ch:
		if e.ev.Kind != k {
			tb.Fatalf("event %v, want %v", e.ev, k)
		}
		return e
	case <-time.After(timeout):
		tb.Fatalf("no %v event within %v (events so far: %v)", k, timeout, r.kinds())
		return lvRec{}
	}
}

// none checks that no event arrives within d.
func (r *lvRecorder) none(tb testing.TB, d time.Duration) {
	tb.Helper()
	select {
	case e := <-r.ch:
		tb.Fatalf("unexpected event %v", e.ev)
	default:
	}
	select {
	case e := <-r.ch:
		tb.Fatalf("unexpected event %v", e.ev)
	case <-time.After(d):
	}
}

func lvConfig(id, peer string, local, remote netip.Addr, port int, key []byte, r *lvRecorder) LivenessConfig {
	cfg := LivenessConfig{NodeID: id, PeerID: peer, Local: local, Peer: remote, Port: port, Key: key, Domain: lvTestDomain}
	if r != nil {
		cfg.OnPeer = r.on
	}
	return cfg
}

func mustLiveness(tb testing.TB, cfg LivenessConfig) *Liveness {
	tb.Helper()
	l, err := NewLiveness(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { l.Close() })
	return l
}

// lvFreeTCPPort finds a port free on every address.
func lvFreeTCPPort(tb testing.TB, addrs ...string) int {
	tb.Helper()
	for range 50 {
		l, err := net.Listen("tcp4", addrs[0]+":0")
		if err != nil {
			tb.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		ok := true
		var others []net.Listener
		for _, a := range addrs[1:] {
			o, err := net.Listen("tcp4", fmt.Sprintf("%s:%d", a, port))
			if err != nil {
				ok = false
				break
			}
			others = append(others, o)
		}
		l.Close()
		for _, o := range others {
			o.Close()
		}
		if ok {
			return port
		}
	}
	tb.Fatal("no free TCP port")
	return 0
}

// checkNoLivenessGoroutines fails if a goroutine of an endpoint still runs.
func checkNoLivenessGoroutines(tb testing.TB) {
	tb.Helper()
	markers := []string{"heartbeat.(*Liveness)", "heartbeat.(*lvNetns)", "heartbeat.(*lconn)"}
	var stacks string
	for range 200 {
		buf := make([]byte, 1<<20)
		stacks = string(buf[:runtime.Stack(buf, true)])
		leak := false
		for _, m := range markers {
			leak = leak || strings.Contains(stacks, m)
		}
		if !leak {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	tb.Fatalf("liveness goroutines still running after Close:\n%s", stacks)
}

var (
	lvLo1 = netip.MustParseAddr("127.0.0.1")
	lvLo2 = netip.MustParseAddr("127.0.0.2")
	lvLo3 = netip.MustParseAddr("127.0.0.3")
)

func TestLivenessConfigErrors(t *testing.T) {
	ok := lvConfig("lb1", "lb2", lvLo1, lvLo2, 0, testKey, nil)
	cases := map[string]func(*LivenessConfig){
		"no node id":        func(c *LivenessConfig) { c.NodeID = "" },
		"no peer id":        func(c *LivenessConfig) { c.PeerID = "" },
		"same ids":          func(c *LivenessConfig) { c.PeerID = c.NodeID },
		"long id":           func(c *LivenessConfig) { c.NodeID = strings.Repeat("x", 65) },
		"short key":         func(c *LivenessConfig) { c.Key = []byte("short") },
		"port":              func(c *LivenessConfig) { c.Port = 70000 },
		"no local":          func(c *LivenessConfig) { c.Local = netip.Addr{} },
		"unspecified peer":  func(c *LivenessConfig) { c.Peer = netip.IPv4Unspecified() },
		"families":          func(c *LivenessConfig) { c.Peer = netip.MustParseAddr("::1") },
		"same address":      func(c *LivenessConfig) { c.Peer = c.Local },
		"multicast":         func(c *LivenessConfig) { c.Peer = netip.MustParseAddr("224.0.0.18") },
		"negative timeout":  func(c *LivenessConfig) { c.HandshakeTimeout = -time.Second },
		"backoff order":     func(c *LivenessConfig) { c.BackoffMin, c.BackoffMax = time.Second, time.Millisecond },
		"keepalive sub-sec": func(c *LivenessConfig) { c.Keepalive = 1500 * time.Millisecond },
		"unknown zone": func(c *LivenessConfig) {
			c.Local, c.Peer = netip.MustParseAddr("fe80::1%nosuchif0"), netip.MustParseAddr("fe80::2")
		},
	}
	for name, mod := range cases {
		cfg := ok
		mod(&cfg)
		if l, err := NewLiveness(cfg); err == nil {
			l.Close()
			t.Errorf("%s: accepted", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
	if LivenessLost.String() != "lost" || LivenessKind(99).String() != "kind(99)" {
		t.Error("kind names")
	}
}

// TestLivenessLoopback runs two endpoints on 127.0.0.1 and 127.0.0.2 (no
// root needed), with either one as the arbiter: connect, Close (a crash, as
// seen by the peer) → Lost, a new instance → Connected, Bye → Bye (not
// Lost), and no goroutine left behind.
func TestLivenessLoopback(t *testing.T) {
	for _, ids := range [][2]string{{"lb1", "lb2"}, {"lb3", "lb2"}} {
		t.Run(ids[0]+"-"+ids[1], func(t *testing.T) {
			port := lvFreeTCPPort(t, "127.0.0.1", "127.0.0.2")
			ra, rb := newLvRecorder(), newLvRecorder()
			b := mustLiveness(t, lvConfig(ids[1], ids[0], lvLo2, lvLo1, port, testKey, rb))
			a := mustLiveness(t, lvConfig(ids[0], ids[1], lvLo1, lvLo2, port, testKey, ra))
			ca, cb := ra.expect(t, LivenessConnected, 5*time.Second), rb.expect(t, LivenessConnected, 5*time.Second)
			if ca.ev.Instance != b.Instance() || cb.ev.Instance != a.Instance() || ca.ev.Peer != ids[1] {
				t.Fatalf("instances: %v / %v, want %016x / %016x", ca.ev, cb.ev, b.Instance(), a.Instance())
			}
			if !a.Up() || !b.Up() {
				t.Fatal("not up after Connected")
			}
			ra.none(t, 50*time.Millisecond)
			rb.none(t, 0)

			// Close without bye: the peer sees the kernel's FIN.
			t0 := time.Now()
			if err := a.Close(); err != nil {
				t.Fatal(err)
			}
			lost := rb.expect(t, LivenessLost, 2*time.Second)
			t.Logf("Close → Lost: %v (%v)", lost.got.Sub(t0), lost.ev.Err)
			if !errors.Is(lost.ev.Err, io.EOF) && !errors.Is(lost.ev.Err, syscall.ECONNRESET) {
				t.Errorf("Lost error %v, want EOF or ECONNRESET", lost.ev.Err)
			}
			if b.Up() {
				t.Error("b still up")
			}
			ra.none(t, 0) // no events after Close

			// A new instance of a: Connected quickly, once.
			ra2 := newLvRecorder()
			t0 = time.Now()
			a2 := mustLiveness(t, lvConfig(ids[0], ids[1], lvLo1, lvLo2, port, testKey, ra2))
			c := rb.expect(t, LivenessConnected, 2*time.Second)
			t.Logf("new instance → Connected: %v", c.got.Sub(t0))
			if c.ev.Instance != a2.Instance() {
				t.Errorf("instance %016x, want %016x", c.ev.Instance, a2.Instance())
			}
			ra2.expect(t, LivenessConnected, 2*time.Second)
			rb.none(t, 50*time.Millisecond)

			// Graceful stop: Bye, not Lost.
			if err := a2.Bye(); err != nil {
				t.Fatalf("Bye: %v", err)
			}
			rb.expect(t, LivenessBye, 2*time.Second)
			rb.none(t, 100*time.Millisecond)
			if err := a2.Bye(); !errors.Is(err, ErrClosed) {
				t.Errorf("second Bye: %v", err)
			}
			st := b.Stats()
			t.Logf("b stats: %+v", st)
			if st.Connects != 2 || st.Losts != 1 || st.Byes != 1 || st.Downs != 0 || st.Up || st.AuthFailures != 0 {
				t.Errorf("b stats %+v", st)
			}
			if err := b.Close(); err != nil {
				t.Fatal(err)
			}
			if err := b.Close(); err != nil {
				t.Fatalf("second Close: %v", err)
			}
			checkNoLivenessGoroutines(t)
		})
	}
}

// TestLivenessSimultaneousStart starts both ends at the same moment, many
// times: both dial, and the arbiter must settle on one connection without
// any Lost, Bye or Down, and exactly one Connected on each side.
func TestLivenessSimultaneousStart(t *testing.T) {
	port := lvFreeTCPPort(t, "127.0.0.1", "127.0.0.2")
	var probes, dups, switches uint64
	for i := range 30 {
		ra, rb := newLvRecorder(), newLvRecorder()
		var a, b *Liveness
		var ea, eb error
		var wg sync.WaitGroup
		start := make(chan struct{})
		wg.Go(func() { <-start; a, ea = NewLiveness(lvConfig("lb1", "lb2", lvLo1, lvLo2, port, testKey, ra)) })
		wg.Go(func() { <-start; b, eb = NewLiveness(lvConfig("lb2", "lb1", lvLo2, lvLo1, port, testKey, rb)) })
		close(start)
		wg.Wait()
		if ea != nil || eb != nil {
			t.Fatal(ea, eb)
		}
		ra.expect(t, LivenessConnected, 5*time.Second)
		rb.expect(t, LivenessConnected, 5*time.Second)
		time.Sleep(20 * time.Millisecond) // let any second connection be settled
		ra.none(t, 0)
		rb.none(t, 0)
		sa, sb := a.Stats(), b.Stats()
		probes += sa.Probes
		dups += sa.Duplicates
		switches += sa.Switches + sb.Switches
		if !a.Up() || !b.Up() {
			t.Fatalf("run %d: not up", i)
		}
		b.Close()
		ra.expect(t, LivenessLost, 2*time.Second)
		a.Close()
	}
	t.Logf("30 simultaneous starts: %d probes, %d duplicates, %d switches", probes, dups, switches)
	checkNoLivenessGoroutines(t)
}

// TestLivenessAuthFailures: another key, another domain, another peer id:
// never Connected, never Lost, and the failures are counted.
func TestLivenessAuthFailures(t *testing.T) {
	cases := []struct {
		name string
		mod  func(*LivenessConfig)
	}{
		{"key", func(c *LivenessConfig) { c.Key = lvOtherKey }},
		{"domain", func(c *LivenessConfig) { c.Domain = "other/liveness" }},
		{"node-id", func(c *LivenessConfig) { c.NodeID = "lb9" }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			port := lvFreeTCPPort(t, "127.0.0.1", "127.0.0.2")
			ra, rb := newLvRecorder(), newLvRecorder()
			cfgA := lvConfig("lb1", "lb2", lvLo1, lvLo2, port, testKey, ra)
			tc.mod(&cfgA)
			b := mustLiveness(t, lvConfig("lb2", "lb1", lvLo2, lvLo1, port, testKey, rb))
			a := mustLiveness(t, cfgA)
			waitFor(t, 5*time.Second, "auth failures", func() bool {
				return b.Stats().AuthFailures >= 1 && b.Stats().Dials >= 2
			})
			a.Close()
			ra.none(t, 0)
			rb.none(t, 100*time.Millisecond)
			if b.Up() {
				t.Error("up")
			}
			sa, sb := a.Stats(), b.Stats()
			t.Logf("a: %d auth failures, %d handshake errors; b: %d auth failures, %d handshake errors",
				sa.AuthFailures, sa.HandshakeErrors, sb.AuthFailures, sb.HandshakeErrors)
			if sb.Handshakes != 0 || sb.Connects != 0 || sb.Losts != 0 {
				t.Errorf("b stats %+v", sb)
			}
			b.Close()
		})
	}
	checkNoLivenessGoroutines(t)
}

// TestLivenessRefusesOtherAddress: a connection from an address other than
// Peer is reset before a byte is read, even with a perfect handshake.
func TestLivenessRefusesOtherAddress(t *testing.T) {
	port := lvFreeTCPPort(t, "127.0.0.1", "127.0.0.2", "127.0.0.3")
	rb := newLvRecorder()
	b := mustLiveness(t, lvConfig("lb2", "lb1", lvLo2, lvLo1, port, testKey, rb))
	f := &lvFake{kl: deriveKey(testKey, lvKeyLabel+lvTestDomain), id: "lb1", peer: "lb2",
		local: lvLo3, target: netip.AddrPortFrom(lvLo2, uint16(port))}
	nc, err := f.dialRaw()
	if err == nil { // else reset even before connect(2) returned
		c := &lconn{nc: nc, dialed: true}
		_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
		err = c.initiate(f.params(42))
		nc.Close()
	}
	if err == nil || errors.Is(err, errLvAuth) {
		t.Fatalf("handshake from another address: %v, want the connection reset", err)
	}
	t.Logf("from %v: %v", lvLo3, err)
	waitFor(t, 2*time.Second, "refused", func() bool { return b.Stats().Refused == 1 })
	rb.none(t, 50*time.Millisecond)
	if st := b.Stats(); st.Accepted != 0 || st.Handshakes != 0 {
		t.Errorf("stats %+v", st)
	}
}

// TestLivenessHandshakeLimits: connections from the peer's address that
// never say hello are dropped after HandshakeTimeout, at most 8 run at
// once, and none of it is an event. A second endpoint cannot bind the same
// address and port (two daemons for one node).
func TestLivenessHandshakeLimits(t *testing.T) {
	port := lvFreeTCPPort(t, "127.0.0.1", "127.0.0.2")
	rb := newLvRecorder()
	cfg := lvConfig("lb2", "lb1", lvLo2, lvLo1, port, testKey, rb)
	cfg.HandshakeTimeout = 300 * time.Millisecond
	b := mustLiveness(t, cfg)
	f := &lvFake{local: lvLo1, target: netip.AddrPortFrom(lvLo2, uint16(port))}
	var conns []net.Conn
	for range lvMaxPending + 2 {
		nc, err := f.dialRaw()
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		conns = append(conns, nc)
	}
	start := time.Now()
	for _, nc := range conns {
		_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := nc.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("silent connection: read %d, %v; want it closed", n, err)
		}
	}
	t.Logf("silent connections closed after %v", time.Since(start).Round(time.Millisecond))
	waitFor(t, 2*time.Second, "counters", func() bool {
		st := b.Stats()
		return st.Overflows == 2 && st.HandshakeErrors == lvMaxPending
	})
	rb.none(t, 0)

	if l2, err := NewLiveness(cfg); err == nil {
		l2.Close()
		t.Fatal("a second endpoint bound the same address and port")
	} else if !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("second endpoint: %v, want EADDRINUSE", err)
	}
}

// lvFake plays the peer by hand, with the package's handshake code.
type lvFake struct {
	kl       []byte
	id, peer string
	local    netip.Addr
	target   netip.AddrPort
}

func (f *lvFake) params(inst uint64) *lvParams {
	return &lvParams{kl: f.kl, self: f.id, peer: f.peer, inst: inst}
}

func (f *lvFake) dialRaw() (net.Conn, error) {
	d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(f.local, 0)), Timeout: 2 * time.Second}
	return d.Dial("tcp4", f.target.String())
}

// dial connects and authenticates as instance inst.
func (f *lvFake) dial(t *testing.T, inst uint64) *lconn {
	t.Helper()
	nc, err := f.dialRaw()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	c := &lconn{nc: nc, dialed: true}
	_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
	if err := c.initiate(f.params(inst)); err != nil {
		t.Fatalf("fake handshake: %v", err)
	}
	return c
}

// lvExpectMsg reads the next message, which must be typ.
func lvExpectMsg(t *testing.T, c *lconn, typ byte) {
	t.Helper()
	var buf [lvHdrLen + lvMaxBody]byte
	_ = c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := c.readSealed(&buf)
	if err != nil {
		t.Fatalf("reading message %d: %v", typ, err)
	}
	if got != typ {
		t.Fatalf("message %d, want %d", got, typ)
	}
}

// lvExpectClosed checks that the other side closed c (EOF or reset).
func lvExpectClosed(t *testing.T, c *lconn) {
	t.Helper()
	var buf [lvHdrLen + lvMaxBody]byte
	_ = c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	typ, err := c.readSealed(&buf)
	if err == nil {
		t.Fatalf("message %d, want the connection closed", typ)
	}
	if !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read: %v, want EOF", err)
	}
}

// lvSilentClose destroys a socket without FIN or RST (TCP_REPAIR), as if its
// host had vanished. Needs CAP_NET_ADMIN.
func lvSilentClose(c net.Conn) error {
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_TCP, unix.TCP_REPAIR, 1)
	}); err != nil {
		return err
	}
	if serr != nil {
		return serr
	}
	return c.Close()
}

// TestLivenessArbiter drives an arbiter endpoint with a hand-played peer:
// accept, duplicate (probe answered), duplicate (probe unanswered), a
// restarted peer over a half-open connection, a connection that vanished on
// the peer's side only (probe → RST → silent switch), FIN → Lost, bye →
// Bye.
func TestLivenessArbiter(t *testing.T) {
	port := lvFreeTCPPort(t, "127.0.0.1", "127.0.0.2")
	rb := newLvRecorder()
	cfg := lvConfig("lb1", "lb2", lvLo2, lvLo1, port, testKey, rb)
	cfg.ProbeTimeout = 100 * time.Millisecond
	b := mustLiveness(t, cfg)
	f := &lvFake{kl: deriveKey(testKey, lvKeyLabel+lvTestDomain), id: "lb2", peer: "lb1",
		local: lvLo1, target: netip.AddrPortFrom(lvLo2, uint16(port))}

	c1 := f.dial(t, 1)
	lvExpectMsg(t, c1, lvAccept)
	if e := rb.expect(t, LivenessConnected, 2*time.Second); e.ev.Instance != 1 {
		t.Fatalf("instance %d", e.ev.Instance)
	}

	// A duplicate while c1 is alive: PROBE on c1, answered, c2 closed.
	c2 := f.dial(t, 1)
	lvExpectMsg(t, c1, lvProbe)
	if err := c1.send(lvProbeAck); err != nil {
		t.Fatal(err)
	}
	lvExpectClosed(t, c2)
	// Unanswered probe: the new connection is closed after ProbeTimeout.
	c3 := f.dial(t, 1)
	lvExpectMsg(t, c1, lvProbe)
	lvExpectClosed(t, c3)
	rb.none(t, 50*time.Millisecond)

	// The peer restarted (instance 2) while c1 is still open here.
	c4 := f.dial(t, 2)
	lvExpectMsg(t, c4, lvAccept)
	e := rb.expect(t, LivenessLost, 2*time.Second)
	if !errors.Is(e.ev.Err, ErrPeerRestarted) || e.ev.Instance != 1 {
		t.Fatalf("Lost %v, want ErrPeerRestarted for instance 1", e.ev)
	}
	if e := rb.expect(t, LivenessConnected, 2*time.Second); e.ev.Instance != 2 {
		t.Fatalf("Connected %v", e.ev)
	}
	lvExpectClosed(t, c1)

	// c4 vanishes on the peer's side only; the same instance reconnects:
	// the probe meets an RST and c5 takes over, with no event.
	c5 := c4
	if err := lvSilentClose(c4.nc); err != nil {
		t.Logf("TCP_REPAIR not permitted (%v): skipping the half-open case", err)
	} else {
		c5 = f.dial(t, 2)
		lvExpectMsg(t, c5, lvAccept)
		rb.none(t, 50*time.Millisecond)
		if !b.Up() {
			t.Fatal("down after a silent switch")
		}
	}

	// FIN on the established connection: Lost.
	c5.nc.Close()
	if e := rb.expect(t, LivenessLost, 2*time.Second); !errors.Is(e.ev.Err, io.EOF) {
		t.Fatalf("Lost %v, want EOF", e.ev)
	}
	// Bye on an established connection: Bye, then b closes it.
	c6 := f.dial(t, 3)
	lvExpectMsg(t, c6, lvAccept)
	rb.expect(t, LivenessConnected, 2*time.Second)
	if err := c6.sendBye(); err != nil {
		t.Fatal(err)
	}
	rb.expect(t, LivenessBye, 2*time.Second)
	lvExpectClosed(t, c6)
	rb.none(t, 50*time.Millisecond)
	st := b.Stats()
	t.Logf("stats %+v", st)
	if st.Probes < 2 || st.Duplicates != 2 {
		t.Errorf("probes %d duplicates %d", st.Probes, st.Duplicates)
	}
	b.Close()
	checkNoLivenessGoroutines(t)
}

// TestLivenessNonArbiter drives a non-arbiter endpoint with a hand-played
// arbiter: nothing counts before ACCEPT, PROBE is answered, an ACCEPT on a
// second connection of the same instance switches silently, one from a new
// instance reports Lost (ErrPeerRestarted) and Connected.
func TestLivenessNonArbiter(t *testing.T) {
	port := lvFreeTCPPort(t, "127.0.0.1", "127.0.0.2")
	rb := newLvRecorder()
	b := mustLiveness(t, lvConfig("lb2", "lb1", lvLo2, lvLo1, port, testKey, rb))
	f := &lvFake{kl: deriveKey(testKey, lvKeyLabel+lvTestDomain), id: "lb1", peer: "lb2",
		local: lvLo1, target: netip.AddrPortFrom(lvLo2, uint16(port))}

	// Authenticated but never accepted, then closed: no event.
	c0 := f.dial(t, 7)
	rb.none(t, 50*time.Millisecond)
	c0.nc.Close()
	rb.none(t, 50*time.Millisecond)

	c1 := f.dial(t, 7)
	if err := c1.send(lvAccept); err != nil {
		t.Fatal(err)
	}
	rb.expect(t, LivenessConnected, 2*time.Second)
	if err := c1.send(lvProbe); err != nil {
		t.Fatal(err)
	}
	lvExpectMsg(t, c1, lvProbeAck)

	c2 := f.dial(t, 7)
	if err := c2.send(lvAccept); err != nil {
		t.Fatal(err)
	}
	lvExpectClosed(t, c1) // b dropped the old one, silently
	rb.none(t, 50*time.Millisecond)

	c3 := f.dial(t, 8)
	if err := c3.send(lvAccept); err != nil {
		t.Fatal(err)
	}
	if e := rb.expect(t, LivenessLost, 2*time.Second); !errors.Is(e.ev.Err, ErrPeerRestarted) || e.ev.Instance != 7 {
		t.Fatalf("Lost %v", e.ev)
	}
	rb.expect(t, LivenessConnected, 2*time.Second)
	lvExpectClosed(t, c2)

	// A forged message (bad MAC) on the established connection: Down, not
	// Lost.
	if _, err := c3.nc.Write(append([]byte{lvBye, MACLen}, make([]byte, MACLen)...)); err != nil {
		t.Fatal(err)
	}
	if e := rb.expect(t, LivenessDown, 2*time.Second); !errors.Is(e.ev.Err, errLvProto) {
		t.Fatalf("Down %v", e.ev)
	}
	b.Close()
	checkNoLivenessGoroutines(t)
}

// TestLivenessByeUnconfirmed: a peer that never closes after our bye.
func TestLivenessByeUnconfirmed(t *testing.T) {
	port := lvFreeTCPPort(t, "127.0.0.1", "127.0.0.2")
	cfg := lvConfig("lb2", "lb1", lvLo2, lvLo1, port, testKey, newLvRecorder())
	cfg.ByeTimeout = 50 * time.Millisecond
	b := mustLiveness(t, cfg)
	f := &lvFake{kl: deriveKey(testKey, lvKeyLabel+lvTestDomain), id: "lb1", peer: "lb2",
		local: lvLo1, target: netip.AddrPortFrom(lvLo2, uint16(port))}
	c := f.dial(t, 5)
	if err := c.send(lvAccept); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, "up", b.Up)
	if err := b.Bye(); !errors.Is(err, ErrByeUnconfirmed) {
		t.Fatalf("Bye: %v, want ErrByeUnconfirmed", err)
	}
	lvExpectMsg(t, c, lvBye)
	checkNoLivenessGoroutines(t)
}

// lvFuzzConn is a net.Conn reading from a buffer and discarding writes.
type lvFuzzConn struct{ r *bytes.Reader }

func newLvFuzzConn(b []byte) lvFuzzConn               { return lvFuzzConn{bytes.NewReader(b)} }
func (c lvFuzzConn) Read(b []byte) (int, error)       { return c.r.Read(b) }
func (c lvFuzzConn) Write(b []byte) (int, error)      { return len(b), nil }
func (c lvFuzzConn) Close() error                     { return nil }
func (c lvFuzzConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c lvFuzzConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c lvFuzzConn) SetDeadline(time.Time) error      { return nil }
func (c lvFuzzConn) SetReadDeadline(time.Time) error  { return nil }
func (c lvFuzzConn) SetWriteDeadline(time.Time) error { return nil }

// FuzzLivenessHandshake feeds arbitrary bytes to both sides of the
// handshake and to the post-handshake reader: no panic, no success without
// the key.
func FuzzLivenessHandshake(f *testing.F) {
	kl := deriveKey(testKey, lvKeyLabel+lvTestDomain)
	// Seeds: a real hello, and a real challenge + accept from a pipe.
	var hello bytes.Buffer
	{
		a, b := net.Pipe()
		go func() {
			c := &lconn{nc: a, dialed: true}
			_ = c.initiate(&lvParams{kl: kl, self: "lb1", peer: "lb2", inst: 1})
			a.Close()
		}()
		var buf [lvHdrLen + lvMaxBody]byte
		_, raw, err := readLvMsg(b, &buf)
		if err != nil {
			f.Fatal(err)
		}
		hello.Write(raw)
		b.Close()
	}
	f.Add(hello.Bytes())
	f.Add(append(hello.Bytes(), lvProof, MACLen))
	f.Add([]byte{lvChallenge, 10, 1, 2, 3})
	f.Add([]byte{lvAccept, MACLen})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, in []byte) {
		p := &lvParams{kl: kl, self: "lb2", peer: "lb1", inst: 9}
		if err := (&lconn{nc: newLvFuzzConn(in)}).respond(p); err == nil {
			t.Fatal("responder handshake succeeded on fuzzed input")
		}
		p = &lvParams{kl: kl, self: "lb1", peer: "lb2", inst: 9}
		if err := (&lconn{nc: newLvFuzzConn(in), dialed: true}).initiate(p); err == nil {
			t.Fatal("initiator handshake succeeded on fuzzed input")
		}
		c := &lconn{nc: newLvFuzzConn(in), sess: newLvSession(kl, false)}
		var buf [lvHdrLen + lvMaxBody]byte
		for range 4 {
			if _, err := c.readSealed(&buf); err == nil {
				t.Fatal("forged message accepted")
			}
		}
	})
}

// ---------------------------------------------------------------------------
// Network-namespace scenarios: node A's endpoint runs in a separate process
// (this test binary, re-executed inside A's namespace), node B's in the test
// process inside B's namespace.

const lvHelperEnv = "HADIRECTOR_LIVENESS_HELPER"

// TestLivenessHelperProcess is not a test: the scenarios run it as node A's
// daemon stand-in, in a child process. Modes: "run" (connect, then wait to
// be killed), "packets" (connect, open two AF_PACKET sockets, wait to be
// killed), "bye" (connect, Bye, exit).
func TestLivenessHelperProcess(t *testing.T) {
	mode := os.Getenv(lvHelperEnv)
	if mode == "" {
		t.Skip("helper process of the liveness scenarios (they start it)")
	}
	os.Exit(lvHelperMain(mode))
}

func lvHelperMain(mode string) int {
	key, err := hex.DecodeString(os.Getenv("LV_KEY"))
	port, err2 := strconv.Atoi(os.Getenv("LV_PORT"))
	local, err3 := netip.ParseAddr(os.Getenv("LV_LOCAL"))
	peer, err4 := netip.ParseAddr(os.Getenv("LV_PEERADDR"))
	if err := errors.Join(err, err2, err3, err4); err != nil {
		fmt.Printf("error %v\n", err)
		return 2
	}
	connected := make(chan struct{}, 1)
	cfg := LivenessConfig{
		NodeID: os.Getenv("LV_NODE"), PeerID: os.Getenv("LV_PEER"), Local: local, Peer: peer, Port: port,
		Key: key, Domain: lvTestDomain,
		OnPeer: func(e LivenessEvent) {
			fmt.Printf("event %s %d\n", e.Kind, e.At.UnixNano())
			if e.Kind == LivenessConnected {
				select {
				case connected <- struct{}{}:
				default:
				}
			}
		},
	}
	fmt.Printf("start %d\n", time.Now().UnixNano())
	l, err := NewLiveness(cfg)
	if err != nil {
		fmt.Printf("error %v\n", err)
		return 2
	}
	fmt.Printf("ready %d\n", time.Now().UnixNano())
	switch mode {
	case "bye":
		select {
		case <-connected:
		case <-time.After(10 * time.Second):
			fmt.Println("error never connected")
			return 3
		}
		fmt.Printf("bye %v\n", l.Bye())
		return 0
	case "packets":
		// Like the daemon, hold AF_PACKET sockets, here opened after the
		// connection (so on higher descriptors than its own): their
		// release at exit waits for an RCU grace period each.
		select {
		case <-connected:
		case <-time.After(10 * time.Second):
			fmt.Println("error never connected")
			return 3
		}
		for range 2 {
			if _, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ARP))); err != nil {
				fmt.Printf("error packet socket: %v\n", err)
				return 4
			}
		}
		fmt.Println("packets open")
		time.Sleep(time.Hour) // until killed
		return 0
	default:
		time.Sleep(time.Hour) // until killed
		return 0
	}
}

type lvLab struct {
	lab                 *netlab.Lab
	na, nb, nc          *netlab.Node
	addrA, addrB, addrC netip.Addr
}

func newLvLab(tb testing.TB) *lvLab {
	tb.Helper()
	lab := netlab.NewForTest(tb, "hbl")
	x := &lvLab{lab: lab,
		addrA: netip.MustParseAddr("10.66.0.1"), addrB: netip.MustParseAddr("10.66.0.2"), addrC: netip.MustParseAddr("10.66.0.3")}
	br, err := lab.AddBridge("br0")
	if err != nil {
		tb.Fatal(err)
	}
	for _, n := range []struct {
		node **netlab.Node
		name string
		addr netip.Addr
	}{{&x.na, "lb1", x.addrA}, {&x.nb, "lb2", x.addrB}, {&x.nc, "intruder", x.addrC}} {
		if *n.node, err = lab.AddNode(n.name); err != nil {
			tb.Fatal(err)
		}
		v6 := "fd66::" + strings.TrimPrefix(n.addr.String(), "10.66.0.") + "/64"
		if _, err := lab.Connect(*n.node, br, "eth0", n.addr.String()+"/24", v6); err != nil {
			tb.Fatal(err)
		}
	}
	return x
}

// startB creates B's endpoint inside B's namespace; mods adjust its
// config.
func (x *lvLab) startB(tb testing.TB, idB, idA string, r *lvRecorder, mods ...func(*LivenessConfig)) *Liveness {
	tb.Helper()
	return lvStartIn(tb, x.nb, lvConfig(idB, idA, x.addrB, x.addrA, 0, testKey, r), mods...)
}

// lvStartIn creates an endpoint inside node n's namespace.
func lvStartIn(tb testing.TB, n *netlab.Node, cfg LivenessConfig, mods ...func(*LivenessConfig)) *Liveness {
	tb.Helper()
	for _, m := range mods {
		m(&cfg)
	}
	var l *Liveness
	err := n.Do(func() (err error) {
		l, err = NewLiveness(cfg)
		return err
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { l.Close() })
	return l
}

type lvHelper struct {
	p       *netlab.Process
	started time.Time
	lines   chan string
}

// startA starts A's endpoint in a child process inside A's namespace.
func (x *lvLab) startA(tb testing.TB, ctx context.Context, mode, idA, idB string, key []byte) *lvHelper {
	tb.Helper()
	pr, pw, err := os.Pipe()
	if err != nil {
		tb.Fatal(err)
	}
	cmd := x.na.Command(ctx, os.Args[0], "-test.run=^TestLivenessHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), lvHelperEnv+"="+mode, "LV_NODE="+idA, "LV_PEER="+idB,
		"LV_LOCAL="+x.addrA.String(), "LV_PEERADDR="+x.addrB.String(),
		"LV_PORT="+strconv.Itoa(DefaultLivenessPort), "LV_KEY="+hex.EncodeToString(key))
	cmd.Stdout, cmd.Stderr = pw, os.Stderr
	h := &lvHelper{started: time.Now(), lines: make(chan string, 64)}
	h.p, err = x.na.StartCmd(cmd)
	pw.Close()
	if err != nil {
		pr.Close()
		tb.Fatal(err)
	}
	go func() {
		defer pr.Close()
		s := bufio.NewScanner(pr)
		for s.Scan() {
			h.lines <- s.Text()
		}
		close(h.lines)
	}()
	tb.Cleanup(func() { _ = h.p.Stop(time.Second) })
	return h
}

// line waits for the helper's next output line starting with prefix
// (other lines are skipped) and returns the rest.
func (h *lvHelper) line(tb testing.TB, prefix string, timeout time.Duration) string {
	tb.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case s, ok := <-h.lines:
			if !ok {
				tb.Fatalf("helper exited before printing %q (%v)", prefix, h.p.Wait())
			}
			if strings.HasPrefix(s, "error") {
				tb.Fatalf("helper: %s", s)
			}
			if rest, ok := strings.CutPrefix(s, prefix+" "); ok {
				return rest
			}
		case <-deadline:
			tb.Fatalf("helper printed no %q within %v", prefix, timeout)
		}
	}
}

func (h *lvHelper) stamp(tb testing.TB, prefix string) time.Time {
	tb.Helper()
	ns, err := strconv.ParseInt(h.line(tb, prefix, 10*time.Second), 10, 64)
	if err != nil {
		tb.Fatal(err)
	}
	return time.Unix(0, ns)
}

func (h *lvHelper) kill(tb testing.TB) time.Time {
	tb.Helper()
	t0 := time.Now()
	if err := h.p.Signal(syscall.SIGKILL); err != nil {
		tb.Fatal(err)
	}
	return t0
}

func (h *lvHelper) waitExit(tb testing.TB) {
	tb.Helper()
	select {
	case <-h.p.Done():
	case <-time.After(10 * time.Second):
		tb.Fatal("helper did not exit")
	}
}

// lvCycle is one start → Connected → SIGKILL → Lost cycle of A, seen by B.
type lvCycle struct {
	startToConn time.Duration // A's process started → B's Connected
	newToConn   time.Duration // A's NewLiveness called → B's Connected
	killToLost  time.Duration // kill(2) → B's OnPeer(Lost)
	killToRead  time.Duration // kill(2) → B's read returned (Event.At)
	killToExit  time.Duration // kill(2) → A's process reaped (as this process saw it)
}

func (x *lvLab) cycle(tb testing.TB, ctx context.Context, r *lvRecorder, idA, idB string) lvCycle {
	return x.cycleMode(tb, ctx, r, "run", idA, idB)
}

// cycleMode is cycle with A's helper in mode "run" or "packets".
func (x *lvLab) cycleMode(tb testing.TB, ctx context.Context, r *lvRecorder, mode, idA, idB string) lvCycle {
	tb.Helper()
	h := x.startA(tb, ctx, mode, idA, idB, testKey)
	c := r.expect(tb, LivenessConnected, 10*time.Second)
	newAt := h.stamp(tb, "start")
	h.line(tb, "event connected", 10*time.Second) // A knows too: nothing in flight
	if mode == "packets" {
		h.line(tb, "packets", 10*time.Second)
	}
	t0 := h.kill(tb)
	e := r.expect(tb, LivenessLost, 5*time.Second)
	if !errors.Is(e.ev.Err, io.EOF) && !errors.Is(e.ev.Err, syscall.ECONNRESET) {
		tb.Errorf("Lost error %v", e.ev.Err)
	}
	h.waitExit(tb)
	return lvCycle{
		startToConn: c.got.Sub(h.started), newToConn: c.got.Sub(newAt),
		killToLost: e.got.Sub(t0), killToRead: e.ev.At.Sub(t0), killToExit: time.Since(t0),
	}
}

type lvSummary struct{ min, median, max time.Duration }

func lvSummarize(ds []time.Duration) lvSummary {
	s := slices.Clone(ds)
	slices.Sort(s)
	return lvSummary{s[0], s[len(s)/2], s[len(s)-1]}
}

func (s lvSummary) String() string {
	return fmt.Sprintf("min %v  median %v  max %v", s.min.Round(time.Microsecond), s.median.Round(time.Microsecond), s.max.Round(time.Microsecond))
}

// lvRuns is how many kill cycles each role runs (LIVENESS_RUNS overrides).
func lvRuns() int {
	if n, err := strconv.Atoi(os.Getenv("LIVENESS_RUNS")); err == nil && n > 0 {
		return n
	}
	return 20
}

// TestLivenessNetns: two directors on a bridge, A's endpoint in its own
// process. SIGKILL of A → Lost on B (timed, for both arbiter roles); a new
// A → Connected (timed); a graceful stop → Bye; a wrong key → nothing but
// counted failures; a third node → refused; a cut link (host death
// stand-in) → no Lost.
func TestLivenessNetns(t *testing.T) {
	x := newLvLab(t)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()

	for _, ids := range []struct{ a, b, name string }{
		{"lb1", "lb2", "A-arbiter"},
		{"lb3", "lb2", "B-arbiter"},
	} {
		t.Run("kill/"+ids.name, func(t *testing.T) {
			r := newLvRecorder()
			b := x.startB(t, ids.b, ids.a, r)
			n := lvRuns()
			var conn, newConn, lost, read []time.Duration
			for range n {
				c := x.cycle(t, ctx, r, ids.a, ids.b)
				conn, newConn = append(conn, c.startToConn), append(newConn, c.newToConn)
				lost, read = append(lost, c.killToLost), append(read, c.killToRead)
			}
			t.Logf("kill(SIGKILL) → B's Lost event (n=%d):   %v", n, lvSummarize(lost))
			t.Logf("kill(SIGKILL) → B's read saw EOF (n=%d): %v", n, lvSummarize(read))
			t.Logf("A's exec → B's Connected (n=%d):         %v", n, lvSummarize(conn))
			t.Logf("A's NewLiveness → B's Connected (n=%d):  %v", n, lvSummarize(newConn))
			st := b.Stats()
			t.Logf("B stats: %+v", st)
			if st.Connects != uint64(n) || st.Losts != uint64(n) || st.Byes != 0 || st.Downs != 0 {
				t.Errorf("B stats %+v", st)
			}
			b.Close()
			checkNoLivenessGoroutines(t)
		})
	}

	t.Run("graceful", func(t *testing.T) {
		r := newLvRecorder()
		b := x.startB(t, "lb2", "lb1", r)
		h := x.startA(t, ctx, "bye", "lb1", "lb2", testKey)
		r.expect(t, LivenessConnected, 10*time.Second)
		if res := h.line(t, "bye", 10*time.Second); res != "<nil>" {
			t.Errorf("A's Bye: %s", res)
		}
		r.expect(t, LivenessBye, 2*time.Second)
		h.waitExit(t)
		if err := h.p.Wait(); err != nil {
			t.Errorf("helper: %v", err)
		}
		r.none(t, 200*time.Millisecond) // the process exit is not a Lost
		b.Close()
	})

	t.Run("wrong-key", func(t *testing.T) {
		r := newLvRecorder()
		b := x.startB(t, "lb2", "lb1", r)
		h := x.startA(t, ctx, "run", "lb1", "lb2", lvOtherKey)
		h.stamp(t, "ready")
		waitFor(t, 5*time.Second, "auth failures on B", func() bool { return b.Stats().AuthFailures >= 2 })
		h.kill(t)
		h.waitExit(t)
		r.none(t, 200*time.Millisecond)
		st := b.Stats()
		t.Logf("B stats: %+v", st)
		if st.Handshakes != 0 || st.Connects != 0 || st.Losts != 0 {
			t.Errorf("B stats %+v", st)
		}
		b.Close()
	})

	t.Run("third-node", func(t *testing.T) {
		r := newLvRecorder()
		b := x.startB(t, "lb2", "lb1", r)
		var nc net.Conn
		err := x.nc.Do(func() (err error) {
			nc, err = net.DialTimeout("tcp4", netip.AddrPortFrom(x.addrB, DefaultLivenessPort).String(), 2*time.Second)
			return err
		})
		if err == nil { // else reset even before connect(2) returned
			_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
			err = (&lconn{nc: nc, dialed: true}).initiate(&lvParams{
				kl: deriveKey(testKey, lvKeyLabel+lvTestDomain), self: "lb1", peer: "lb2", inst: 1})
			nc.Close()
		}
		if err == nil || errors.Is(err, errLvAuth) {
			t.Fatalf("handshake from the third node: %v, want the connection reset", err)
		}
		t.Logf("third node, with the right key and id: %v", err)
		waitFor(t, 2*time.Second, "refused", func() bool { return b.Stats().Refused >= 1 })
		r.none(t, 100*time.Millisecond)
		b.Close()
	})

	t.Run("ipv6", func(t *testing.T) {
		lla, llb := linkLocal(t, x.na, "eth0"), linkLocal(t, x.nb, "eth0")
		for _, p := range [][2]netip.Addr{
			{netip.MustParseAddr("fd66::1"), netip.MustParseAddr("fd66::2")},
			{lla.WithZone("eth0"), llb}, // the peer takes the local zone
		} {
			ra, rb := newLvRecorder(), newLvRecorder()
			b := lvStartIn(t, x.nb, lvConfig("lb2", "lb1", p[1].WithZone(p[0].Zone()), p[0].WithZone(""), 0, testKey, rb))
			a := lvStartIn(t, x.na, lvConfig("lb1", "lb2", p[0], p[1], 0, testKey, ra))
			ra.expect(t, LivenessConnected, 5*time.Second)
			rb.expect(t, LivenessConnected, 5*time.Second)
			a.Close()
			e := rb.expect(t, LivenessLost, 2*time.Second)
			t.Logf("%v <-> %v: Close → %v", a.Addr(), b.Addr(), e.ev)
			b.Close()
		}
	})
	t.Run("link-cut", func(t *testing.T) {
		r := newLvRecorder()
		b := x.startB(t, "lb2", "lb1", r)
		h := x.startA(t, ctx, "run", "lb1", "lb2", testKey)
		r.expect(t, LivenessConnected, 10*time.Second)
		h.line(t, "event connected", 10*time.Second)
		nl := x.na.Netlink()
		link, err := nl.LinkByName("eth0")
		if err != nil {
			t.Fatal(err)
		}
		if err := nl.LinkSetDown(link); err != nil {
			t.Fatal(err)
		}
		r.none(t, 300*time.Millisecond)
		// The process dies while its host is cut off: its FIN cannot
		// reach B, exactly as when the whole host dies.
		h.kill(t)
		h.waitExit(t)
		r.none(t, 500*time.Millisecond)
		if !b.Up() {
			t.Error("B down without any evidence")
		}
		t.Log("link down, A killed: no Lost on B, which stays Up (half-open): host death is the VRRP timers' job")
		// Informational: when the link returns while A's kernel still
		// retransmits the FIN, the Lost arrives late.
		t0 := time.Now()
		if err := nl.LinkSetUp(link); err != nil {
			t.Fatal(err)
		}
		select {
		case e := <-r.ch:
			t.Logf("after the link came back: %v, %v later", e.ev, e.got.Sub(t0).Round(time.Millisecond))
		case <-time.After(3 * time.Second):
			t.Log("after the link came back: no event within 3s")
		}
		b.Close()
	})

	t.Run("keepalive", func(t *testing.T) {
		r := newLvRecorder()
		b := x.startB(t, "lb2", "lb1", r, func(c *LivenessConfig) { c.Keepalive = time.Second })
		a := lvStartIn(t, x.na, lvConfig("lb1", "lb2", x.addrA, x.addrB, 0, testKey, nil))
		r.expect(t, LivenessConnected, 5*time.Second)
		nl := x.na.Netlink()
		link, err := nl.LinkByName("eth0")
		if err != nil {
			t.Fatal(err)
		}
		if err := nl.LinkSetDown(link); err != nil {
			t.Fatal(err)
		}
		defer func() { _ = nl.LinkSetUp(link) }()
		t0 := time.Now()
		e := r.expect(t, LivenessDown, 10*time.Second)
		if !errors.Is(e.ev.Err, syscall.ETIMEDOUT) {
			t.Errorf("Down %v, want ETIMEDOUT", e.ev)
		}
		t.Logf("peer unreachable, keepalive 1s: %v after %v (Down, not Lost)", e.ev, e.got.Sub(t0).Round(time.Millisecond))
		a.Close()
		b.Close()
	})

	checkNoLivenessGoroutines(t)
}

// BenchmarkLivenessKillToLost: SIGKILL of A's process → B's Lost event, and
// a new A process → B's Connected. ns/op is a whole cycle (mostly process
// start-up); the custom metrics are the figures that matter. Run with
// -benchtime=30x for more samples.
func BenchmarkLivenessKillToLost(b *testing.B) {
	x := newLvLab(b)
	ctx, cancel := context.WithTimeout(b.Context(), 5*time.Minute)
	defer cancel()
	r := newLvRecorder()
	l := x.startB(b, "lb2", "lb1", r)
	defer l.Close()
	for _, mode := range []string{"run", "packets"} {
		// packets: the killed process holds two AF_PACKET sockets opened
		// after the connection, as a daemon may; without the pin
		// (fdpin.go) its FIN waited for their release, ~8 ms each.
		b.Run(mode, func(b *testing.B) {
			var lost, conn, exit []time.Duration
			for b.Loop() {
				c := x.cycleMode(b, ctx, r, mode, "lb1", "lb2")
				lost, conn, exit = append(lost, c.killToLost), append(conn, c.newToConn), append(exit, c.killToExit)
			}
			s, sc, se := lvSummarize(lost), lvSummarize(conn), lvSummarize(exit)
			b.ReportMetric(float64(s.min.Microseconds()), "kill→lost-µs-min")
			b.ReportMetric(float64(s.median.Microseconds()), "kill→lost-µs-median")
			b.ReportMetric(float64(s.max.Microseconds()), "kill→lost-µs-max")
			b.ReportMetric(float64(se.median.Microseconds()), "kill→exit-µs-median")
			b.ReportMetric(float64(sc.median.Microseconds()), "new→connected-µs-median")
		})
	}
}
