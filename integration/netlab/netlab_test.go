package netlab

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

// Prefixes used by this file. Ordinary tests share prefixTest, so that
// NewForTest sweeps what crashed earlier runs left. The tests that create
// dead-owner labs on purpose use prefixes unique to this test process:
// a concurrent run of the same tests (another engineer, another -count
// loop) sweeping with a shared prefix would remove those labs before this
// run looked at them.
var (
	prefixTest  = "nlt"
	prefixChild = processPrefix("c") // child processes of TestCleanupOnFailure
	prefixSweep = processPrefix("s") // TestSweep
)

func processPrefix(letter string) string {
	if p := os.Getenv(childPrefixEnv); p != "" && letter == "c" {
		return p // a child uses its parent's prefix
	}
	return letter + strconv.FormatInt(int64(os.Getpid()), 36)
}

const (
	childEnv       = "NETLAB_TEST_CHILD_MODE"
	childPrefixEnv = "NETLAB_TEST_CHILD_PREFIX"
)

// TestMain fails the run if this process leaked anything: a state file
// recording this process as owner (a lab not closed), or anything under the
// per-process prefixes.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 && os.Getenv(childEnv) == "" && privileged() {
		if left := leftovers(); len(left) > 0 {
			fmt.Fprintf(os.Stderr, "netlab: leaked after the tests: %s\n", strings.Join(left, " "))
			code = 1
		}
	}
	os.Exit(code)
}

func leftovers() []string {
	var out []string
	for _, dir := range []string{NetnsDir, StateDir} {
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			name := strings.TrimPrefix(e.Name(), ".")
			if strings.HasPrefix(name, prefixChild) || strings.HasPrefix(name, prefixSweep) {
				out = append(out, filepath.Join(dir, e.Name()))
				continue
			}
			if dir == StateDir && strings.HasSuffix(name, ".json") {
				b, _ := os.ReadFile(filepath.Join(dir, e.Name()))
				var rec ownerRecord
				if json.Unmarshal(b, &rec) == nil && rec.PID == os.Getpid() {
					out = append(out, filepath.Join(dir, e.Name()))
				}
			}
		}
	}
	return out
}

func listNetns(t testing.TB) []string {
	t.Helper()
	ents, err := os.ReadDir(NetnsDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func labFiles(lab string) []string {
	var out []string
	ents, _ := os.ReadDir(NetnsDir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), lab+"-") {
			out = append(out, filepath.Join(NetnsDir, e.Name()))
		}
	}
	if _, err := os.Stat(filepath.Join(StateDir, lab+".json")); err == nil {
		out = append(out, filepath.Join(StateDir, lab+".json"))
	}
	return out
}

func rootLinkNames(t testing.TB) []string {
	t.Helper()
	links, err := netlink.LinkList()
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		t.Fatal(err)
	}
	var names []string
	for _, l := range links {
		names = append(names, l.Attrs().Name)
	}
	return names
}

// processGone reports whether pid has exited (a zombie counts as gone: on
// this host nothing may reap orphans).
func processGone(pid int) bool {
	_, state, err := procStat(pid)
	return err != nil || state == 'Z' || state == 'X'
}

func waitGone(t testing.TB, pid int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !processGone(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("process %d still alive after %v", pid, within)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type lanLab struct {
	lab   *Lab
	lan   *Bridge
	nodes []*Node // client, lb1, lb2, rs1, rs2 = 10.0.0.1-5, fd00::1-5
}

func buildLAN(t testing.TB, lab *Lab) lanLab {
	t.Helper()
	lan, err := lab.AddBridge("lan")
	if err != nil {
		t.Fatal(err)
	}
	ll := lanLab{lab: lab, lan: lan}
	for i, name := range []string{"client", "lb1", "lb2", "rs1", "rs2"} {
		n, err := lab.AddNode(name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := lab.Connect(n, lan, "eth0", fmt.Sprintf("10.0.0.%d/24", i+1), fmt.Sprintf("fd00::%d/64", i+1)); err != nil {
			t.Fatal(err)
		}
		ll.nodes = append(ll.nodes, n)
	}
	return ll
}

// serveWhoami makes n answer every TCP connection on port with
// "<node> <remote address>\n". It returns a counter of accepted connections.
func serveWhoami(t testing.TB, n *Node, port int) *atomic.Int64 {
	t.Helper()
	ln, err := n.Listen("tcp", fmt.Sprintf(":%d", port))
	if err != nil {
		t.Fatal(err)
	}
	var count atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			count.Add(1)
			fmt.Fprintf(c, "%s %s\n", n.Name(), c.RemoteAddr())
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return &count
}

func whoami(ctx context.Context, from *Node, to netip.AddrPort) (node string, remote netip.Addr, err error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	c, err := from.DialContext(ctx, "tcp", to.String())
	if err != nil {
		return "", netip.Addr{}, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", netip.Addr{}, err
	}
	f := strings.Fields(line)
	if len(f) != 2 {
		return "", netip.Addr{}, fmt.Errorf("bad reply %q", line)
	}
	ap, err := netip.ParseAddrPort(f[1])
	return f[0], ap.Addr().Unmap(), err
}

func TestTopologyConnectivityAndIsolation(t *testing.T) {
	rootBefore := rootLinkNames(t)
	lab := NewForTest(t, prefixTest)
	ll := buildLAN(t, lab)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	for _, ns := range lab.Namespaces() {
		if !slices.Contains(listNetns(t), ns) {
			t.Errorf("namespace %s not visible in %s", ns, NetnsDir)
		}
	}
	// Nothing may appear in the root namespace.
	var ours []string
	for _, n := range ll.nodes {
		for _, i := range n.Ifaces() {
			ours = append(ours, i.Name(), i.Port())
		}
	}
	ours = append(ours, ll.lan.Name())
	for _, name := range rootLinkNames(t) {
		if !slices.Contains(rootBefore, name) && slices.Contains(ours, name) {
			t.Errorf("link %s appeared in the root namespace", name)
		}
	}

	// Full mesh over IPv4 and IPv6: every node dials every other one; the
	// server must be the intended node and must see the dialer's lab
	// address, i.e. the traffic went over the lab bridge.
	const port = 7000
	counts := map[*Node]*atomic.Int64{}
	for _, n := range ll.nodes {
		counts[n] = serveWhoami(t, n, port)
	}
	start := time.Now()
	for _, from := range ll.nodes {
		for _, to := range ll.nodes {
			if from == to {
				continue
			}
			for _, pair := range [][2]netip.Addr{{to.IP4(), from.IP4()}, {to.IP6(), from.IP6()}} {
				name, remote, err := whoami(ctx, from, netip.AddrPortFrom(pair[0], port))
				if err != nil {
					t.Errorf("%s -> %s (%s): %v", from, to, pair[0], err)
					continue
				}
				if name != to.Name() || remote != pair[1] {
					t.Errorf("%s -> %s (%s): answered by %s seeing %s, want %s seeing %s", from, to, pair[0], name, remote, to, pair[1])
				}
			}
		}
	}
	t.Logf("40 TCP round trips across the bridge in %v", time.Since(start))

	// Isolation: the host's addresses are unreachable from a node, and the
	// host's 127.0.0.1 is not the node's.
	hostLn, err := net.Listen("tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer hostLn.Close()
	var hostAccepted atomic.Int64
	go func() {
		for {
			c, err := hostLn.Accept()
			if err != nil {
				return
			}
			hostAccepted.Add(1)
			c.Close()
		}
	}()
	hostPort := uint16(hostLn.Addr().(*net.TCPAddr).Port)
	targets := []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1")}
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		t.Fatal(err)
	}
	labNets := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24"), netip.MustParsePrefix("fd00::/64")}
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok || ip.IsLoopback() || ip.IsLinkLocalUnicast() {
			continue
		}
		ip = ip.Unmap()
		if labNets[0].Contains(ip) || labNets[1].Contains(ip) {
			continue // same address exists in the lab; not a host address from there
		}
		targets = append(targets, ip)
	}
	for _, ip := range targets {
		dctx, dcancel := context.WithTimeout(ctx, 500*time.Millisecond)
		c, err := ll.nodes[0].DialContext(dctx, "tcp", netip.AddrPortFrom(ip, hostPort).String())
		dcancel()
		if err == nil {
			c.Close()
			t.Errorf("client reached host address %s:%d", ip, hostPort)
		} else {
			t.Logf("client -> host %s: %v (as expected)", ip, err)
		}
	}
	if n := hostAccepted.Load(); n != 0 {
		t.Errorf("host listener accepted %d connections from the lab", n)
	}
	// And the host cannot reach a lab listener.
	rs1 := ll.nodes[3]
	before := counts[rs1].Load()
	for _, ip := range []netip.Addr{rs1.IP4(), rs1.IP6()} {
		c, err := net.DialTimeout("tcp", netip.AddrPortFrom(ip, port).String(), 300*time.Millisecond)
		if err != nil {
			t.Logf("host -> %s: %v (as expected)", ip, err)
			continue
		}
		// Something outside (e.g. a transparent proxy on the host's
		// network) may accept; it just must not be rs1.
		_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		line, _ := bufio.NewReader(c).ReadString('\n')
		c.Close()
		if strings.HasPrefix(line, "rs1 ") {
			t.Errorf("host reached rs1's listener at %s", ip)
		} else {
			t.Logf("host -> %s: connected to something outside the lab (not rs1)", ip)
		}
	}
	if counts[rs1].Load() != before {
		t.Errorf("rs1 accepted a connection from the host")
	}
}

func TestLinkRouteSysctl(t *testing.T) {
	lab := NewForTest(t, prefixTest)
	a, err := lab.AddNode("a")
	if err != nil {
		t.Fatal(err)
	}
	r, err := lab.AddNode("r")
	if err != nil {
		t.Fatal(err)
	}
	b, err := lab.AddNode("b")
	if err != nil {
		t.Fatal(err)
	}
	ia, ir, err := lab.Link(a, "to-r", []string{"192.168.1.1/30", "fd01::1/64"}, r, "to-a", []string{"192.168.1.2/30", "fd01::2/64"})
	if err != nil {
		t.Fatal(err)
	}
	if ia.Peer() != ir || ir.Peer() != ia || ia.Bridge() != nil {
		t.Errorf("Link ends not wired: %v %v", ia.Peer(), ir.Peer())
	}
	if _, _, err := lab.Link(r, "to-b", []string{"192.168.2.1/30", "fd02::1/64"}, b, "to-r", []string{"192.168.2.2/30", "fd02::2/64"}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := lab.Link(r, "to-b", nil, b, "x", nil); err == nil {
		t.Error("duplicate interface name accepted")
	}
	for _, rt := range [][3]string{
		{"default", "192.168.1.2", ""}, {"default", "fd01::2", ""},
	} {
		if err := a.AddRoute(rt[0], rt[1], rt[2]); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.AddRoute("192.168.1.0/30", "192.168.2.1", ""); err != nil {
		t.Fatal(err)
	}
	if err := b.AddRoute("fd01::/64", "fd02::1", ""); err != nil {
		t.Fatal(err)
	}
	if err := b.AddRoute("198.51.100.0/24", "", "to-r"); err != nil { // on-link route
		t.Fatal(err)
	}
	if err := b.AddRoute("default", "", ""); err == nil {
		t.Error("default route without gateway accepted")
	}

	hostFwd, err := readSysctl("net.ipv4.ip_forward")
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range [][2]string{{"net.ipv4.ip_forward", "1"}, {"net/ipv6/conf/all/forwarding", "1"}} {
		if err := r.Sysctl(kv[0], kv[1]); err != nil {
			t.Fatal(err)
		}
		if v, err := r.ReadSysctl(kv[0]); err != nil || v != "1" {
			t.Fatalf("ReadSysctl(%s) = %q, %v", kv[0], v, err)
		}
	}
	if v, _ := a.ReadSysctl("net.ipv4.ip_forward"); v != "0" {
		t.Errorf("node a ip_forward = %q, want 0 (sysctls must be per namespace)", v)
	}
	if v, _ := readSysctl("net.ipv4.ip_forward"); v != hostFwd {
		t.Errorf("host ip_forward changed from %s to %s", hostFwd, v)
	}
	if v, _ := a.ReadSysctl("net.ipv6.conf.to-r.accept_dad"); v != "0" {
		t.Errorf("accept_dad on a:to-r = %q, want 0", v)
	}

	serveWhoami(t, b, 80)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	for _, dst := range []string{"192.168.2.2:80", "[fd02::2]:80"} {
		if err := a.WaitTCP(ctx, dst); err != nil {
			t.Fatal(err)
		}
		name, remote, err := whoami(ctx, a, netip.MustParseAddrPort(dst))
		if err != nil || name != "b" || (remote != ia.IP4() && remote != ia.IP6()) {
			t.Errorf("a -> %s via r: %s %s %v", dst, name, remote, err)
		}
	}
	if _, err := a.DialContext(ctx, "tcp", "localhost:80"); err == nil {
		t.Error("DialContext accepted a host name")
	}
}

func TestWaitTCP(t *testing.T) {
	lab := NewForTest(t, prefixTest)
	ll := buildLAN(t, lab)
	client, rs2 := ll.nodes[0], ll.nodes[4]
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()

	short, scancel := context.WithTimeout(ctx, 200*time.Millisecond)
	err := client.WaitTCP(short, "10.0.0.5:8080")
	scancel()
	if err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("WaitTCP with nothing listening: %v, want deadline error mentioning connection refused", err)
	}
	go func() {
		time.Sleep(150 * time.Millisecond)
		ln, err := rs2.Listen("tcp", "10.0.0.5:8080")
		if err != nil {
			t.Error(err)
			return
		}
		t.Cleanup(func() { ln.Close() })
	}()
	start := time.Now()
	if err := client.WaitTCP(ctx, "10.0.0.5:8080"); err != nil {
		t.Fatal(err)
	}
	t.Logf("WaitTCP succeeded after %v", time.Since(start))
}

func threadNetns(t testing.TB) nsID {
	t.Helper()
	id, err := nsIDOfPath("/proc/thread-self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestDo(t *testing.T) {
	lab := NewForTest(t, prefixTest)
	n, err := lab.AddNode("n")
	if err != nil {
		t.Fatal(err)
	}
	runtime.LockOSThread() // so the checks below look at the same thread Do used
	defer runtime.UnlockOSThread()
	orig := threadNetns(t)

	var inside nsID
	if err := n.Do(func() error { inside = threadNetns(t); return nil }); err != nil {
		t.Fatal(err)
	}
	if inside != n.ns.id {
		t.Errorf("Do ran in %v, want the node's namespace %v", inside, n.ns.id)
	}
	if got := threadNetns(t); got != orig {
		t.Fatalf("thread left in %v after Do, want %v", got, orig)
	}

	// A panicking fn: the thread is restored before the panic propagates.
	func() {
		defer func() {
			if r := recover(); r != "boom" {
				t.Errorf("recovered %v, want boom", r)
			}
		}()
		_ = n.Do(func() error { panic("boom") })
	}()
	if got := threadNetns(t); got != orig {
		t.Fatalf("thread left in %v after a panic in Do", got)
	}

	// Errors pass through; sockets made inside stay in the namespace.
	want := errors.New("x")
	var ln net.Listener
	if err := n.Do(func() (err error) {
		ln, err = net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		return want
	}); err != want {
		t.Errorf("Do returned %v, want %v", err, want)
	}
	defer ln.Close()
	if c, err := net.DialTimeout("tcp", ln.Addr().String(), 300*time.Millisecond); err == nil {
		c.Close()
		t.Error("host reached a listener made inside Do on the node's 127.0.0.1")
	}
	if err := n.WaitTCP(t.Context(), ln.Addr().String()); err != nil {
		t.Error(err)
	}

	// t.FailNow inside Do (runtime.Goexit) restores the thread as well.
	okAfter := make(chan nsID, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		defer func() {
			okAfter <- threadNetns(t)
			runtime.UnlockOSThread()
		}()
		_ = n.Do(func() error { runtime.Goexit(); return nil })
	}()
	<-done
	if got := <-okAfter; got != orig {
		t.Errorf("thread left in %v after Goexit in Do", got)
	}

	if err := lab.Close(); err != nil {
		t.Fatal(err)
	}
	if err := n.Do(func() error { return nil }); !errors.Is(err, ErrClosed) {
		t.Errorf("Do after Close: %v, want ErrClosed", err)
	}
}

func TestProcesses(t *testing.T) {
	const grace = 300 * time.Millisecond
	lab := NewForTest(t, prefixTest, WithStopGrace(grace))
	ll := buildLAN(t, lab)
	client := ll.nodes[0]
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()

	// A child runs in the node's namespace and sees only the node's links.
	out, err := client.CombinedOutput(ctx, "ip", "-o", "addr", "show")
	if err != nil {
		t.Fatalf("ip addr: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "10.0.0.1/24") || !strings.Contains(string(out), "fd00::1/64") {
		t.Errorf("ip addr in client lacks the lab addresses:\n%s", out)
	}
	if regexp.MustCompile(`192\.0\.2\.|ifb0`).Match(out) {
		t.Errorf("ip addr in client shows host interfaces:\n%s", out)
	}

	direct := client.Command(ctx, "true")
	if err := direct.Run(); !errors.Is(err, ErrUseStartCmd) {
		t.Errorf("running a Command directly: %v, want ErrUseStartCmd", err)
	}

	p, err := client.Start(ctx, "sleep", "300")
	if err != nil {
		t.Fatal(err)
	}
	if id, err := nsIDOfPath(fmt.Sprintf("/proc/%d/ns/net", p.Pid())); err != nil || id != client.ns.id {
		t.Errorf("sleep runs in netns %v (%v), want %v", id, err, client.ns.id)
	}
	if id, _ := nsIDOfPath("/proc/thread-self/ns/net"); id == client.ns.id {
		t.Error("calling thread left in the node's namespace")
	}

	// Context cancellation: SIGTERM.
	pctx, pcancel := context.WithCancel(ctx)
	q, err := client.Start(pctx, "sleep", "300")
	if err != nil {
		t.Fatal(err)
	}
	pcancel()
	select {
	case <-q.Done():
		var ee *exec.ExitError
		if err := q.Wait(); !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGTERM {
			t.Errorf("canceled process: %v, want killed by SIGTERM", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("canceled process did not exit")
	}

	// One that ignores SIGTERM, and one that escaped the process group.
	stubborn, err := client.Start(ctx, "sh", "-c", `trap "" TERM; sleep 300`)
	if err != nil {
		t.Fatal(err)
	}
	out, err = client.CombinedOutput(ctx, "sh", "-c", `setsid sleep 300 >/dev/null 2>&1 </dev/null & echo $!`)
	if err != nil {
		t.Fatal(err)
	}
	escaped, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatalf("escaped pid: %q", out)
	}
	if processGone(escaped) {
		t.Fatal("escaped sleep is not running")
	}
	time.Sleep(50 * time.Millisecond) // let sh install its trap

	start := time.Now()
	if err := lab.Close(); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	if took < grace {
		t.Errorf("Close took %v, want at least the grace %v for the TERM-ignoring process", took, grace)
	}
	t.Logf("Close with a TERM-ignoring process took %v (grace %v)", took, grace)
	for _, pr := range []*Process{p, stubborn} {
		select {
		case <-pr.Done():
		default:
			t.Errorf("process %d not reaped after Close", pr.Pid())
		}
	}
	var ee *exec.ExitError
	if err := stubborn.Wait(); !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Errorf("stubborn process: %v, want killed by SIGKILL", err)
	}
	waitGone(t, escaped, 2*time.Second)
	if _, err := client.Start(ctx, "true"); !errors.Is(err, ErrClosed) {
		t.Errorf("Start after Close: %v, want ErrClosed", err)
	}
}

func TestCloseRemovesEverything(t *testing.T) {
	if !privileged() {
		t.Skip(SkipMessage)
	}
	before := listNetns(t)
	lab, err := New(prefixTest)
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			lab.Close()
		}
	}()
	ll := buildLAN(t, lab)
	if _, err := ll.nodes[1].Start(t.Context(), "sleep", "300"); err != nil {
		t.Fatal(err)
	}
	made := labFiles(lab.Name())
	if len(made) != 7 { // 5 nodes + 1 bridge + state file
		t.Fatalf("lab files: %v, want 7", made)
	}
	if _, err := lab.AddNode("client"); err == nil {
		t.Error("duplicate node accepted")
	}
	if err := lab.Close(); err != nil {
		t.Fatal(err)
	}
	closed = true
	for _, f := range made {
		if _, err := os.Lstat(f); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still exists after Close (%v)", f, err)
		}
	}
	after := listNetns(t)
	for _, n := range after {
		if strings.HasPrefix(n, lab.Name()) {
			t.Errorf("%s left in %s", n, NetnsDir)
		}
		if !slices.Contains(before, n) && !strings.HasPrefix(n, prefixTest) {
			t.Logf("note: %s appeared meanwhile (someone else's)", n)
		}
	}
	if len(lab.Namespaces()) != 0 {
		t.Errorf("Namespaces() after Close: %v", lab.Namespaces())
	}
	if err := lab.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := lab.AddNode("x"); !errors.Is(err, ErrClosed) {
		t.Errorf("AddNode after Close: %v", err)
	}
}

// TestChildHelper is the body of the child processes run by
// TestCleanupOnFailure; on its own it skips.
func TestChildHelper(t *testing.T) {
	mode := os.Getenv(childEnv)
	if mode == "" {
		t.Skip("helper for TestCleanupOnFailure")
	}
	lab := NewForTest(t, prefixChild)
	br, err := lab.AddBridge("lan")
	if err != nil {
		t.Fatal(err)
	}
	a, err := lab.AddNode("a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lab.Connect(a, br, "eth0", "10.0.0.1/24"); err != nil {
		t.Fatal(err)
	}
	p, err := a.Start(context.Background(), "sleep", "300")
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("NETLAB_LAB=%s NETLAB_PID=%d\n", lab.Name(), p.Pid())
	switch mode {
	case "fatal":
		t.Fatal("deliberate failure")
	case "panic":
		panic("deliberate panic in the test goroutine")
	case "gopanic":
		go func() { panic("deliberate panic in another goroutine") }()
		time.Sleep(time.Minute)
	}
}

var childRE = regexp.MustCompile(`NETLAB_LAB=(\S+) NETLAB_PID=(\d+)`)

func runChild(t *testing.T, mode string) (lab string, pid int, out string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestChildHelper$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), childEnv+"="+mode, childPrefixEnv+"="+prefixChild)
	b, err := cmd.CombinedOutput()
	out = string(b)
	if err == nil {
		t.Fatalf("child (%s) succeeded, want failure:\n%s", mode, out)
	}
	m := childRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("child (%s) did not report its lab:\n%s", mode, out)
	}
	pid, _ = strconv.Atoi(m[2])
	return m[1], pid, out
}

// TestCleanupOnFailure runs this test binary as a child whose test fails
// (t.Fatal), panics in the test goroutine, or panics in another goroutine,
// and checks from outside what it left behind.
func TestCleanupOnFailure(t *testing.T) {
	if !privileged() {
		t.Skip(SkipMessage)
	}
	for _, mode := range []string{"fatal", "panic"} {
		t.Run(mode, func(t *testing.T) {
			lab, pid, out := runChild(t, mode)
			if !strings.Contains(out, "deliberate") {
				t.Errorf("child output lacks the deliberate failure:\n%s", out)
			}
			if left := labFiles(lab); len(left) > 0 {
				t.Errorf("child %s left %v", mode, left)
			}
			waitGone(t, pid, 2*time.Second)
		})
	}
	t.Run("gopanic", func(t *testing.T) {
		// Cleanup cannot run: the process dies at once. The lab's process
		// dies through PDEATHSIG; the namespaces stay until Sweep.
		lab, pid, out := runChild(t, "gopanic")
		if !strings.Contains(out, "deliberate panic in another goroutine") {
			t.Errorf("unexpected child output:\n%s", out)
		}
		waitGone(t, pid, 2*time.Second)
		left := labFiles(lab)
		t.Logf("leftovers of the crashed child: %v", left)
		if len(left) != 3 { // netns a, netns br-lan, state file
			t.Fatalf("want 3 leftovers after a crash, got %v", left)
		}
		removed, err := Sweep(prefixChild)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("Sweep removed %v", removed)
		for _, ns := range []string{lab + "-a", lab + "-br-lan"} {
			if !slices.Contains(removed, ns) {
				t.Errorf("Sweep did not report %s", ns)
			}
		}
		if left := labFiles(lab); len(left) > 0 {
			t.Errorf("after Sweep still: %v", left)
		}
	})
}

func TestSweep(t *testing.T) {
	live := NewForTest(t, prefixSweep)
	ln, err := live.AddNode("n")
	if err != nil {
		t.Fatal(err)
	}

	// A lab whose owner is recorded as a process that has exited.
	dead, err := New(prefixSweep)
	if err != nil {
		t.Fatal(err)
	}
	defer dead.Close()
	dn, err := dead.AddNode("n")
	if err != nil {
		t.Fatal(err)
	}
	p, err := dn.Start(t.Context(), "sleep", "300")
	if err != nil {
		t.Fatal(err)
	}
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	rec, err := selfOwner()
	if err != nil {
		t.Fatal(err)
	}
	rec.PID = gone.Process.Pid
	rewriteState(t, dead.StatePath(), rec)

	removed, err := Sweep(prefixSweep)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(removed, []string{dead.Name() + "-n"}) {
		t.Errorf("Sweep removed %v, want only %s-n", removed, dead.Name())
	}
	if left := labFiles(dead.Name()); len(left) > 0 {
		t.Errorf("dead owner's files remain: %v", left)
	}
	select {
	case <-p.Done():
	case <-time.After(5 * time.Second):
		t.Error("Sweep did not kill the process inside the dead lab's namespace")
	}
	if err := dead.Close(); err != nil {
		t.Errorf("Close after Sweep: %v", err)
	}

	// The live lab is untouched and still works.
	if got := labFiles(live.Name()); len(got) != 2 {
		t.Errorf("live lab files: %v, want namespace + state file", got)
	}
	if v, err := ln.ReadSysctl("net.ipv6.conf.default.accept_dad"); err != nil || v != "0" {
		t.Errorf("live node unusable after Sweep: %q %v", v, err)
	}
}

func rewriteState(t *testing.T, path string, rec ownerRecord) {
	t.Helper()
	b := fmt.Appendf(nil, `{"pid":%d,"start_time":%d,"pid_ns":%q,"boot_id":%q}`, rec.PID, rec.StartTime, rec.PidNS, rec.BootID)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestOwnerAlive(t *testing.T) {
	self, err := selfOwner()
	if err != nil {
		t.Fatal(err)
	}
	if !self.alive() {
		t.Error("own record not alive")
	}
	reused := self
	reused.StartTime++
	if reused.alive() {
		t.Error("record with another start time (pid reused) counted as alive")
	}
	rebooted := self
	rebooted.BootID = "00000000-0000-0000-0000-000000000000"
	if rebooted.alive() {
		t.Error("record from another boot counted as alive")
	}
	foreign := reused
	foreign.PidNS = "pid:[1]"
	if !foreign.alive() {
		t.Error("record from another pid namespace must count as alive")
	}
}

func TestValidation(t *testing.T) {
	for _, p := range []string{"", "Upper", "1abc", "toolongprefix", "a/b", "a b"} {
		if _, err := New(p); err == nil {
			t.Errorf("New(%q) accepted", p)
		}
	}
	if !privileged() {
		t.Skip(SkipMessage)
	}
	lab := NewForTest(t, prefixTest)
	if len(lab.Name()) != len(prefixTest)+idLen {
		t.Errorf("lab name %q", lab.Name())
	}
	if _, err := lab.AddNode("../x"); err == nil {
		t.Error("node name with / accepted")
	}
	if _, err := lab.AddBridge("sixteen-chars-xx"); err == nil {
		t.Error("16-character bridge name accepted")
	}
	n, _ := lab.AddNode("n")
	br, _ := lab.AddBridge("br")
	if _, err := lab.Connect(n, br, "eth0", "10.0.0.1"); err == nil {
		t.Error("address without prefix length accepted")
	}
	if _, err := lab.Connect(n, br, "eth0", "10.0.0.1/24"); err != nil {
		t.Fatal(err)
	}
	if _, err := lab.Connect(n, br, "eth0", "10.0.0.2/24"); err == nil {
		t.Error("duplicate interface accepted")
	}
	// A kernel-side failure (duplicate address) rolls the veth back, so
	// the name is free again.
	if _, err := lab.Connect(n, br, "eth1", "10.0.1.1/24", "10.0.1.1/24"); err == nil {
		t.Error("duplicate address accepted")
	}
	if n.Iface("eth1") != nil {
		t.Error("failed Connect recorded an interface")
	}
	if _, err := n.Netlink().LinkByName("eth1"); err == nil {
		t.Error("failed Connect left eth1 behind")
	}
	if _, err := lab.Connect(n, br, "eth1", "10.0.1.1/24"); err != nil {
		t.Errorf("Connect after a rolled-back one: %v", err)
	}
	if len(labFiles(lab.Name())) != 3 {
		t.Errorf("lab files: %v, want 2 namespaces + state file", labFiles(lab.Name()))
	}
}

// TestParallelLabs builds identical topologies (same node, bridge, interface
// names and addresses) concurrently: labs must not collide.
func TestParallelLabs(t *testing.T) {
	for i := range 4 {
		t.Run(strconv.Itoa(i), func(t *testing.T) {
			t.Parallel()
			lab := NewForTest(t, prefixTest)
			ll := buildLAN(t, lab)
			serveWhoami(t, ll.nodes[3], 80)
			name, remote, err := whoami(t.Context(), ll.nodes[0], netip.MustParseAddrPort("[fd00::4]:80"))
			if err != nil || name != "rs1" || remote != ll.nodes[0].IP6() {
				t.Errorf("client -> rs1: %s %s %v", name, remote, err)
			}
		})
	}
}
