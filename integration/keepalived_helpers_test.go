package integration

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hadirector/hadirector/integration/netlab"
	"github.com/hadirector/hadirector/internal/control"
)

// The interop topology: one bridge "front" with hadirector (hd), keepalived
// (ka) and a client. Both routers run VRID 66 for one VIP; hadirector's
// cluster file describes only its own node, keepalived is a foreign VRRPv3
// router on the segment.
const (
	interopVRID       = 66
	interopHDAddr     = "10.66.0.11"
	interopKAAddr     = "10.66.0.12"
	interopClientAddr = "10.66.0.100"
	interopPort       = 8080
)

var interopVIP = netip.MustParsePrefix("10.66.0.200/24")

// interopClusterFile is hadirector's cluster file: its own node only.
const interopClusterFile = `
[cluster]
name = "interop"

[[node]]
name = "hd"
priority = %d
[[node.interface]]
name = "eth0"
addresses = ["` + interopHDAddr + `/24"]

[[vrrp_instance]]
name = "front"
vrid = %d
interface = "eth0"
vips = ["%s"]
advert_interval = "%s"
`

// kaConfFile is keepalived's: one VRRPv3 instance, no authentication.
const kaConfFile = `
global_defs {
    router_id ka
    vrrp_version 3
}

vrrp_instance VI_66 {
    state %s
    interface eth0
    virtual_router_id %d
    priority %d
    advert_int %s
    version 3
    virtual_ipaddress {
        %s
    }
}
`

// Lines keepalived logs when it rejects a received advert: any of them in
// its log means it did not accept one of hadirector's.
var kaRejects = []string{
	"Invalid VRRPv3 checksum", "Invalid VRRPv2 checksum", "invalid TTL/HL", "wrong version",
	"vrrp packet too", "Invalid packet type", "unexpected ip number count", "ip_tot_len mismatch",
	"VIPs but received", "not present in MASTER advert", "not in range", "advertisement interval mismatch",
}

// interopShowLogs prints the daemons' logs and the capture even when a case
// passes (HADIRECTOR_INTEROP_LOGS=1); a failing case always prints them.
var interopShowLogs = os.Getenv("HADIRECTOR_INTEROP_LOGS") != ""

// The programs the interop cases run, resolved by requireInterop.
var keepalivedPath, ipPath string

// requireInterop skips unless the interop scenarios can run here: root for
// the namespaces, keepalived as the peer, ip(8) to give keepalived the
// namespace's own /sys.
func requireInterop(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip(netlab.SkipMessage)
	}
	var ok bool
	if keepalivedPath, ok = interopProgram("keepalived"); !ok {
		t.Skip("keepalived interop: keepalived is not installed (apt-get install keepalived; `scripts/test.sh deps` does)")
	}
	if ipPath, ok = interopProgram("ip"); !ok {
		t.Skip("keepalived interop: ip (iproute2) is not installed; it runs keepalived with the namespace's own /sys")
	}
}

// interopProgram looks name up in PATH, then in the sbin directories,
// which a root shell started with a user's PATH (`sudo env PATH=$PATH`)
// may lack.
func interopProgram(name string) (string, bool) {
	if p, err := exec.LookPath(name); err == nil {
		return p, true
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/local/sbin"} {
		if p, err := exec.LookPath(filepath.Join(dir, name)); err == nil {
			return p, true
		}
	}
	return "", false
}

// rfcMasterDown is RFC 5798's Master_Down_Interval of a backup of priority
// prio whose master advertises every adv: 3 × adv + (256 − prio) / 256 × adv.
func rfcMasterDown(prio int, adv time.Duration) time.Duration {
	return 3*adv + time.Duration(256-prio)*adv/256
}

// interopLog collects a process's output line by line, with arrival
// times, and wakes waiters on every line.
type interopLog struct {
	mu      sync.Mutex
	partial []byte
	lines   []interopLine
	changed chan struct{}
}

type interopLine struct {
	at   time.Time
	text string
}

func newInteropLog() *interopLog { return &interopLog{changed: make(chan struct{})} }

func (l *interopLog) Write(b []byte) (int, error) {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, b...)
	added := false
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		l.lines = append(l.lines, interopLine{at: now, text: string(l.partial[:i])})
		l.partial = l.partial[i+1:]
		added = true
	}
	if added {
		close(l.changed)
		l.changed = make(chan struct{})
	}
	return len(b), nil
}

// mark is the number of lines so far; find and wait look from a mark on.
func (l *interopLog) mark() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.lines)
}

// find returns the first line at or after index from that contains any of
// subs.
func (l *interopLog) find(from int, subs ...string) (interopLine, int, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := from; i < len(l.lines); i++ {
		for _, s := range subs {
			if strings.Contains(l.lines[i].text, s) {
				return l.lines[i], i, true
			}
		}
	}
	return interopLine{}, 0, false
}

// countFrom counts the lines at or after index from that contain sub.
func (l *interopLog) countFrom(from int, sub string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for i := from; i < len(l.lines); i++ {
		if strings.Contains(l.lines[i].text, sub) {
			n++
		}
	}
	return n
}

// wait waits for a line at or after index from that contains sub.
func (l *interopLog) wait(ctx context.Context, from int, sub string) (interopLine, bool) {
	for {
		l.mu.Lock()
		ch := l.changed
		l.mu.Unlock()
		if line, _, ok := l.find(from, sub); ok {
			return line, true
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return interopLine{}, false
		}
	}
}

// tail is the log for failure reports: the last n lines, or all when n is
// 0.
func (l *interopLog) tail(n int) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	lines := l.lines
	if n > 0 && len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	var b strings.Builder
	for _, ln := range lines {
		fmt.Fprintf(&b, "  %s | %s\n", ln.at.Format("15:04:05.000"), ln.text)
	}
	if len(l.partial) > 0 {
		fmt.Fprintf(&b, "  (partial) %s\n", l.partial)
	}
	return b.String()
}

// interopLab is one scenario's topology.
type interopLab struct {
	t              *testing.T
	lab            *netlab.Lab
	hd, ka, client *netlab.Node
	dir            string
	seq            int
	capture        *interopLog // tcpdump of VRRP and ARP on hd's eth0, shown on failure
}

// newInteropLab builds the front segment and starts a VRRP and ARP capture
// on hd's eth0 (when tcpdump is installed) whose output a failing test prints.
func newInteropLab(ctx context.Context, t *testing.T) *interopLab {
	t.Helper()
	lab := netlab.NewForTest(t, "hdka")
	front, err := lab.AddBridge("front")
	if err != nil {
		t.Fatal(err)
	}
	l := &interopLab{t: t, lab: lab, dir: t.TempDir()}
	for _, n := range []struct {
		node **netlab.Node
		name string
		addr string
	}{{&l.hd, "hd", interopHDAddr}, {&l.ka, "ka", interopKAAddr}, {&l.client, "client", interopClientAddr}} {
		if *n.node, err = lab.AddNode(n.name); err != nil {
			t.Fatal(err)
		}
		if _, err := lab.Connect(*n.node, front, "eth0", n.addr+"/24"); err != nil {
			t.Fatal(err)
		}
	}
	if tcpdump, ok := interopProgram("tcpdump"); ok {
		l.capture = newInteropLog()
		cmd := l.hd.Command(ctx, tcpdump, "-i", "eth0", "-nn", "-vv", "-l", "--immediate-mode", "-tttt", "proto", "112", "or", "arp")
		cmd.Stdout, cmd.Stderr = l.capture, l.capture
		if _, err := l.hd.StartCmd(cmd); err != nil {
			t.Fatal(err)
		}
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, ok := l.capture.wait(wctx, 0, "listening on")
		cancel()
		if !ok {
			t.Logf("tcpdump did not start listening:\n%s", l.capture.tail(0))
		}
	}
	t.Cleanup(func() {
		if (t.Failed() || interopShowLogs) && l.capture != nil {
			t.Logf("VRRP and ARP on hd's eth0 (tcpdump -i eth0 -nn -vv proto 112 or arp), last 80 lines:\n%s", l.capture.tail(80))
		}
	})
	l.serveWhoami(l.hd)
	l.serveWhoami(l.ka)
	return l
}

// hdDaemon is a running `hadirector run`.
type hdDaemon struct {
	proc   *netlab.Process
	socket string
	log    *interopLog
}

// startHD starts hadirector in hd's namespace with a one-node cluster file.
func (l *interopLab) startHD(ctx context.Context, prio int, adv time.Duration) *hdDaemon {
	t := l.t
	t.Helper()
	l.seq++
	cfg := filepath.Join(l.dir, fmt.Sprintf("hd%d.toml", l.seq))
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(interopClusterFile, prio, interopVRID, interopVIP, adv)), 0o644); err != nil {
		t.Fatal(err)
	}
	d := &hdDaemon{socket: filepath.Join(l.dir, fmt.Sprintf("hd%d.sock", l.seq)), log: newInteropLog()}
	cmd := l.hd.Command(ctx, hadirector, "run", "--config", cfg, "--node", "hd", "--socket", d.socket, "--log-format", "text")
	cmd.Stdout, cmd.Stderr = d.log, d.log
	var err error
	if d.proc, err = l.hd.StartCmd(cmd); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() || interopShowLogs {
			t.Logf("hadirector (priority %d, advert %v) log:\n%s", prio, adv, d.log.tail(0))
		}
	})
	return d
}

// kaDaemon is a running keepalived (parent and VRRP child in one process
// group).
type kaDaemon struct {
	proc *netlab.Process
	log  *interopLog
}

// startKA starts keepalived in ka's namespace: VRRP only (-P; the host has
// no IPVS), in the foreground (-n), logging to the console only (-l -D -G),
// no respawn (-R), pid files in the test's directory. It runs through
// `ip netns exec` so that it also sees the namespace's own /sys; netlab
// already put it in the namespace, so it cannot touch the root namespace's
// network, and it dies with the lab.
func (l *interopLab) startKA(ctx context.Context, prio int, adv time.Duration, state string) *kaDaemon {
	t := l.t
	t.Helper()
	l.seq++
	conf := filepath.Join(l.dir, fmt.Sprintf("ka%d.conf", l.seq))
	body := fmt.Sprintf(kaConfFile, state, interopVRID, prio, fmt.Sprintf("%g", adv.Seconds()), interopVIP)
	if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	d := &kaDaemon{log: newInteropLog()}
	cmd := l.ka.Command(ctx, ipPath, "netns", "exec", l.ka.Netns(),
		keepalivedPath, "-n", "-l", "-D", "-G", "-P", "-R", "-f", conf,
		"--pid="+filepath.Join(l.dir, fmt.Sprintf("ka%d.pid", l.seq)),
		"--vrrp_pid="+filepath.Join(l.dir, fmt.Sprintf("ka%d-vrrp.pid", l.seq)))
	cmd.Stdout, cmd.Stderr = d.log, d.log
	var err error
	if d.proc, err = l.ka.StartCmd(cmd); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() || interopShowLogs {
			t.Logf("keepalived (priority %d, advert %v, state %s) log:\n%s", prio, adv, state, d.log.tail(0))
		}
	})
	return d
}

// state is keepalived's state from its last "Entering … STATE" line.
func (d *kaDaemon) state() string {
	d.log.mu.Lock()
	defer d.log.mu.Unlock()
	for i := len(d.log.lines) - 1; i >= 0; i-- {
		for _, s := range []string{"MASTER", "BACKUP", "FAULT"} {
			if strings.Contains(d.log.lines[i].text, "Entering "+s+" STATE") {
				return s
			}
		}
	}
	return "INIT"
}

// enteredAfter waits for keepalived to log entering state at or after line
// mark and returns when that line arrived.
func (d *kaDaemon) enteredAfter(ctx context.Context, t *testing.T, mark int, state string) time.Time {
	t.Helper()
	line, ok := d.log.wait(ctx, mark, "Entering "+state+" STATE")
	if !ok {
		t.Fatalf("keepalived did not enter %s (now %s): %v", state, d.state(), ctx.Err())
	}
	return line.at
}

// checkAccepted fails if keepalived logged rejecting an advert.
func (d *kaDaemon) checkAccepted(t *testing.T) {
	t.Helper()
	if line, _, bad := d.log.find(0, kaRejects...); bad {
		t.Errorf("keepalived rejected an advert: %s", line.text)
	}
}

// term stops a daemon the documented graceful way: SIGTERM to the main
// process only (keepalived's parent stops its VRRP child itself).
func (l *interopLab) term(p *netlab.Process) {
	t := l.t
	t.Helper()
	if err := p.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
}

// kill SIGKILLs the daemon's whole process group (keepalived: parent and
// VRRP child at once, as a crash of the node's software would).
func (l *interopLab) kill(p *netlab.Process) {
	t := l.t
	t.Helper()
	if err := p.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
}

// waitExit waits for p to exit and returns its exit error.
func (l *interopLab) waitExit(ctx context.Context, name string, p *netlab.Process) error {
	t := l.t
	t.Helper()
	select {
	case <-p.Done():
		return p.Wait()
	case <-ctx.Done():
		t.Fatalf("%s did not exit: %v", name, ctx.Err())
		return nil
	}
}

// waitState waits until hadirector's instance is in state and returns that
// status.
func (d *hdDaemon) waitState(ctx context.Context, t *testing.T, state string) *control.Status {
	t.Helper()
	for {
		st := statusOf(ctx, t, d.socket)
		if len(st.Instances) == 1 && st.Instances[0].State == state {
			return st
		}
		select {
		case <-ctx.Done():
			t.Fatalf("hadirector: state %+v, want %s", st.Instances, state)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// interopRoles is who should be master: "hd" or "ka".
type interopRoles struct {
	hd     *hdDaemon
	ka     *kaDaemon
	master string
}

// settle waits until the election has the expected outcome: the master in
// MASTER with the VIP, the other in BACKUP without it, and, when hadirector
// is backup, its status names keepalived's address as master. It returns
// hadirector's status at that point.
func (l *interopLab) settle(ctx context.Context, r interopRoles) *control.Status {
	t := l.t
	t.Helper()
	wantHD, wantKA := "BACKUP", "MASTER"
	if r.master == "hd" {
		wantHD, wantKA = "MASTER", "BACKUP"
	}
	for {
		st := statusOf(ctx, t, r.hd.socket)
		var hdState, hdMaster string
		if len(st.Instances) == 1 {
			hdState, hdMaster = st.Instances[0].State, st.Instances[0].Master
		}
		kaState := r.ka.state()
		onHD, onKA := hasAddr(t, l.hd, "eth0", interopVIP), hasAddr(t, l.ka, "eth0", interopVIP)
		ok := hdState == wantHD && kaState == wantKA && onHD == (r.master == "hd") && onKA == (r.master == "ka")
		if ok && r.master == "ka" && hdMaster != interopKAAddr {
			ok = false
		}
		if ok {
			return st
		}
		select {
		case <-ctx.Done():
			t.Fatalf("want %s master: hadirector %s (master %q, VIP %v), keepalived %s (VIP %v)",
				r.master, hdState, hdMaster, onHD, kaState, onKA)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// hold checks that the settled roles stay as they are for d: no transition
// on either side, the VIP where it was, hadirector's drop counters clean.
func (l *interopLab) hold(ctx context.Context, r interopRoles, d time.Duration) {
	t := l.t
	t.Helper()
	hdMark, kaMark := r.hd.log.mark(), r.ka.log.mark()
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		l.settleNow(ctx, r)
		select {
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	if line, _, moved := r.hd.log.find(hdMark, "VRRP transition"); moved {
		t.Errorf("hadirector changed state while %s should have stayed master: %s", r.master, line.text)
	}
	if line, _, moved := r.ka.log.find(kaMark, "Entering "); moved {
		t.Errorf("keepalived changed state while %s should have stayed master: %s", r.master, line.text)
	}
	l.checkDrops(statusOf(ctx, t, r.hd.socket))
}

// settleNow is settle without waiting: the roles must hold right now.
func (l *interopLab) settleNow(ctx context.Context, r interopRoles) {
	t := l.t
	t.Helper()
	st := statusOf(ctx, t, r.hd.socket)
	want := map[string]string{"hd": "BACKUP", "ka": "MASTER"}
	if r.master == "hd" {
		want = map[string]string{"hd": "MASTER", "ka": "BACKUP"}
	}
	if len(st.Instances) != 1 || st.Instances[0].State != want["hd"] {
		t.Fatalf("hadirector: %+v, want %s", st.Instances, want["hd"])
	}
	if r.master == "ka" && st.Instances[0].Master != interopKAAddr {
		t.Fatalf("hadirector sees master %q, want %s", st.Instances[0].Master, interopKAAddr)
	}
	if s := r.ka.state(); s != want["ka"] {
		t.Fatalf("keepalived: %s, want %s", s, want["ka"])
	}
	if onHD, onKA := hasAddr(t, l.hd, "eth0", interopVIP), hasAddr(t, l.ka, "eth0", interopVIP); onHD != (r.master == "hd") || onKA != (r.master == "ka") {
		t.Fatalf("VIP on hd %v, on ka %v; want it on %s only", onHD, onKA, r.master)
	}
}

// checkDrops fails on any received VRRP packet hadirector did not act on:
// with keepalived as the only other router, every advert on the segment is
// for VRID 66, well-formed and correctly checksummed. (status reports the
// engine's drops: codec and VRID. The socket's own counters, TTL not 255
// and looped-back adverts, are not in it; a bad TTL would show as a failed
// election instead.)
func (l *interopLab) checkDrops(st *control.Status) {
	t := l.t
	t.Helper()
	if len(st.Drops) > 0 {
		t.Errorf("hadirector dropped VRRP packets: %v", st.Drops)
	}
}

// waitVIP waits until the VIP is (want true) or is not on the node's eth0.
func (l *interopLab) waitVIP(ctx context.Context, n *netlab.Node, want bool) {
	t := l.t
	t.Helper()
	for hasAddr(t, n, "eth0", interopVIP) != want {
		select {
		case <-ctx.Done():
			t.Fatalf("VIP on %s: %v, want %v", n.Name(), !want, want)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// serveWhoami answers every TCP connection to port interopPort (on any of
// the node's addresses, the VIP included) with the node's name.
func (l *interopLab) serveWhoami(n *netlab.Node) {
	t := l.t
	t.Helper()
	ln, err := n.Listen("tcp", fmt.Sprintf(":%d", interopPort))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "%s\n", n.Name())
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close(); wg.Wait() })
}

// waitClientReaches waits until the client, connecting to the VIP, is
// answered by node want (the master's gratuitous ARP moved the client), and
// returns when that answer came.
func (l *interopLab) waitClientReaches(ctx context.Context, want string) time.Time {
	t := l.t
	t.Helper()
	addr := netip.AddrPortFrom(interopVIP.Addr(), interopPort).String()
	var got string
	var lastErr error
	for {
		actx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		c, err := l.client.DialContext(actx, "tcp", addr)
		if err == nil {
			_ = c.SetDeadline(time.Now().Add(500 * time.Millisecond))
			got, err = bufio.NewReader(c).ReadString('\n')
			got = strings.TrimSpace(got)
			c.Close()
		}
		cancel()
		lastErr = err
		if err == nil && got == want {
			return time.Now()
		}
		select {
		case <-ctx.Done():
			t.Fatalf("client: VIP answered by %q (err %v), want %s", got, lastErr, want)
			return time.Time{}
		case <-time.After(20 * time.Millisecond):
		}
	}
}
