package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hadirector/hadirector/integration/netlab"
)

// The topology of every run (as in the baseline): a bridge, directors d1
// (priority 150) and d2 (priority 100) and a client on it, VIP
// 10.77.0.250/24; for the "+udp" variant also a direct veth d1:eth1 --
// d2:eth1 carrying hadirector's UDP heartbeat link.

const (
	labPrefix = "hfb"
	vrid      = 51
	d1Addr    = "10.77.0.11/24"
	d2Addr    = "10.77.0.12/24"
	clAddr    = "10.77.0.100/24"
	vipCIDR   = "10.77.0.250/24"
	d1HB      = "10.255.0.1/30"
	d2HB      = "10.255.0.2/30"
	d1Prio    = 150
	d2Prio    = 100
	hbIntvl   = 2 * time.Millisecond
)

var (
	vipAddr = netip.MustParsePrefix(vipCIDR).Addr()
	vip4    = vipAddr.As4()
	d1IP4   = netip.MustParsePrefix(d1Addr).Addr().As4()
	d2IP4   = netip.MustParsePrefix(d2Addr).Addr().As4()
)

// impl is one implementation under test.
type impl struct {
	name       string
	keepalived bool
	udp        bool // hadirector with the UDP heartbeat link
}

var allImpls = map[string]impl{
	"hadirector":     {name: "hadirector"},
	"keepalived":     {name: "keepalived", keepalived: true},
	"hadirector+udp": {name: "hadirector+udp", udp: true},
}

// masterDown is RFC 5798's Master_Down_Interval of a backup of priority p.
func masterDown(adv time.Duration, p int) time.Duration {
	return 3*adv + time.Duration(256-p)*adv/256
}

// skew is RFC 5798's Skew_Time of priority p.
func skew(adv time.Duration, p int) time.Duration { return time.Duration(256-p) * adv / 256 }

// logTail stamps every line a director writes (stdout and stderr) as it
// arrives, keeps it, and writes it stamped to a file.
type logTail struct {
	mu    sync.Mutex
	lines []logLine
	done  chan struct{}
}

type logLine struct {
	at   time.Time
	text string
}

func newLogTail(path string) (*os.File, *logTail, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	f, err := os.Create(path)
	if err != nil {
		r.Close()
		w.Close()
		return nil, nil, err
	}
	t := &logTail{done: make(chan struct{})}
	go func() {
		defer close(t.done)
		defer f.Close()
		defer r.Close()
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			now := time.Now()
			t.mu.Lock()
			t.lines = append(t.lines, logLine{now, sc.Text()})
			t.mu.Unlock()
			fmt.Fprintf(f, "%s %s\n", now.Format("15:04:05.000000"), sc.Text())
		}
	}()
	return w, t, nil
}

// find returns the first line after after that matches.
func (t *logTail) find(after time.Time, match func(string) bool) (time.Time, string, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, l := range t.lines {
		if l.at.After(after) && match(l.text) {
			return l.at, l.text, true
		}
	}
	return time.Time{}, "", false
}

func (t *logTail) text() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var b strings.Builder
	for _, l := range t.lines {
		b.WriteString(l.text)
		b.WriteByte('\n')
	}
	return b.String()
}

// director is one running daemon (keepalived: the parent; its VRRP child
// is found from /proc).
type director struct {
	name       string
	node       *netlab.Node
	proc       *netlab.Process
	log        *logTail
	keepalived bool

	mu     sync.Mutex
	exitAt time.Time
}

func (d *director) exited() (time.Time, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.exitAt, !d.exitAt.IsZero()
}

// isMaster / isBackup / isTransition recognise state lines in the logs.
func (d *director) isMaster(s string) bool {
	if d.keepalived {
		return strings.Contains(s, "Entering MASTER STATE")
	}
	return strings.Contains(s, `msg="VRRP transition"`) && strings.Contains(s, " to=MASTER")
}

func (d *director) isBackup(s string) bool {
	if d.keepalived {
		return strings.Contains(s, "Entering BACKUP STATE")
	}
	return strings.Contains(s, `msg="VRRP transition"`) && strings.Contains(s, " to=BACKUP")
}

func (d *director) isTransition(s string) bool {
	if d.keepalived {
		return strings.Contains(s, "Entering ")
	}
	return strings.Contains(s, `msg="VRRP transition"`)
}

// pids is the process ids that make up the director: [daemon] or
// [keepalived parent, VRRP child].
func (d *director) pids() []int {
	pid := d.proc.Pid()
	if !d.keepalived {
		return []int{pid}
	}
	if c := childOf(pid); c > 0 {
		return []int{pid, c}
	}
	return []int{pid}
}

func childOf(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err == nil {
		for _, f := range strings.Fields(string(b)) {
			if c, err := strconv.Atoi(f); err == nil {
				return c
			}
		}
	}
	// Fallback: scan /proc for PPid.
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		c, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c))
		if err != nil {
			continue
		}
		s := string(st)
		if i := strings.LastIndexByte(s, ')'); i > 0 {
			f := strings.Fields(s[i+1:])
			if len(f) > 2 && f[1] == strconv.Itoa(pid) {
				return c
			}
		}
	}
	return 0
}

// env is one lab with its directors.
type env struct {
	b    *bench
	impl impl
	adv  time.Duration
	dir  string

	lab        *netlab.Lab
	d1, d2, cl *netlab.Node
	clIface    *netlab.Iface
	d1MAC      [6]byte
	d2MAC      [6]byte
	dirs       [2]*director
}

func newEnv(b *bench, im impl, adv time.Duration, dir string, servers bool) (e *env, err error) {
	e = &env{b: b, impl: im, adv: adv, dir: dir}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	lab, err := netlab.New(labPrefix, netlab.WithStopGrace(500*time.Millisecond))
	if err != nil {
		return nil, err
	}
	e.lab = lab
	defer func() {
		if err != nil {
			e.close()
			e = nil
		}
	}()
	br, err := lab.AddBridge("br0")
	if err != nil {
		return nil, err
	}
	if e.d1, err = lab.AddNode("d1"); err != nil {
		return nil, err
	}
	if e.d2, err = lab.AddNode("d2"); err != nil {
		return nil, err
	}
	if e.cl, err = lab.AddNode("cl"); err != nil {
		return nil, err
	}
	i1, err := lab.Connect(e.d1, br, "eth0", d1Addr)
	if err != nil {
		return nil, err
	}
	i2, err := lab.Connect(e.d2, br, "eth0", d2Addr)
	if err != nil {
		return nil, err
	}
	if e.clIface, err = lab.Connect(e.cl, br, "eth0", clAddr); err != nil {
		return nil, err
	}
	e.d1MAC, e.d2MAC = macOf(i1.MAC()), macOf(i2.MAC())
	if im.udp {
		if _, _, err := lab.Link(e.d1, "eth1", []string{d1HB}, e.d2, "eth1", []string{d2HB}); err != nil {
			return nil, err
		}
	}
	if servers {
		for _, n := range []*netlab.Node{e.d1, e.d2} {
			if err := startServer(context.Background(), n, b.rt); err != nil {
				return nil, fmt.Errorf("server on %s: %w", n.Name(), err)
			}
		}
	}
	return e, nil
}

// close takes everything down: SIGKILL the directors first (a graceful
// stop of a master without a successor would wait out its handover bound),
// then the lab.
func (e *env) close() error {
	for _, d := range e.dirs {
		if d == nil || d.proc == nil {
			continue
		}
		for _, pid := range d.pids() {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		d.proc.Signal(syscall.SIGKILL)
		select {
		case <-d.proc.Done():
		case <-time.After(3 * time.Second):
		}
	}
	if e.lab == nil {
		return nil
	}
	err := e.lab.Close()
	if err != nil {
		err = e.lab.Close() // retries what failed
	}
	for _, d := range e.dirs {
		if d != nil {
			select {
			case <-d.log.done:
			case <-time.After(time.Second):
			}
		}
	}
	return err
}

func (e *env) hadirectorConfig(key string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "[cluster]\nname = \"bench\"\n\n")
	for _, n := range []struct {
		name     string
		prio     int
		eth0, hb string
	}{{"d1", d1Prio, d1Addr, d1HB}, {"d2", d2Prio, d2Addr, d2HB}} {
		fmt.Fprintf(&b, "[[node]]\nname = %q\npriority = %d\n[[node.interface]]\nname = \"eth0\"\naddresses = [%q]\n", n.name, n.prio, n.eth0)
		if e.impl.udp {
			fmt.Fprintf(&b, "[[node.interface]]\nname = \"eth1\"\naddresses = [%q]\n", n.hb)
		}
		b.WriteString("\n")
	}
	if e.impl.udp {
		fmt.Fprintf(&b, "[[link]]\nname = \"hb\"\ntype = \"udp\"\ninterface = \"eth1\"\ninterval = %q\nkey_file = %q\n\n", hbIntvl.String(), key)
	}
	fmt.Fprintf(&b, "[[vrrp_instance]]\nname = \"vi\"\nvrid = %d\ninterface = \"eth0\"\nvips = [%q]\nadvert_interval = %q\n", vrid, vipCIDR, e.adv.String())
	if e.impl.udp {
		b.WriteString("links = [\"hb\"]\n")
	}
	return b.String()
}

func keepalivedConfig(name, state string, prio int, adv time.Duration) string {
	return fmt.Sprintf(`global_defs {
    router_id %s
}

vrrp_instance VI_1 {
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
`, name, state, vrid, prio, strconv.FormatFloat(adv.Seconds(), 'f', -1, 64), vipCIDR)
}

// startDirectors starts d1, then d2 (as the baseline did).
func (e *env) startDirectors(ctx context.Context) error {
	var cfgPath, key string
	if !e.impl.keepalived {
		key = filepath.Join(e.dir, "hb.key")
		k := make([]byte, 32)
		rand.Read(k)
		if err := os.WriteFile(key, k, 0o600); err != nil {
			return err
		}
		cfgPath = filepath.Join(e.dir, "cluster.toml")
		if err := os.WriteFile(cfgPath, []byte(e.hadirectorConfig(key)), 0o644); err != nil {
			return err
		}
	}
	for i, n := range []*netlab.Node{e.d1, e.d2} {
		name := n.Name()
		w, tail, err := newLogTail(filepath.Join(e.dir, name+".log"))
		if err != nil {
			return err
		}
		var args []string
		prog := ""
		if e.impl.keepalived {
			state, prio := "MASTER", d1Prio
			if i == 1 {
				state, prio = "BACKUP", d2Prio
			}
			conf := filepath.Join(e.dir, name+"-keepalived.conf")
			if err := os.WriteFile(conf, []byte(keepalivedConfig(name, state, prio, e.adv)), 0o644); err != nil {
				w.Close()
				return err
			}
			// ip netns exec gives keepalived a /sys matching its namespace.
			prog = "ip"
			args = []string{"netns", "exec", n.Netns(), e.b.keepalived, "-n", "-l", "-D", "-G", "-P", "-R",
				"-p", filepath.Join(e.dir, name+"-keepalived.pid"), "-r", filepath.Join(e.dir, name+"-vrrp.pid"), "-f", conf}
		} else {
			prog = e.b.hadirector
			args = []string{"run", "--config", cfgPath, "--node", name, "--socket", filepath.Join(e.dir, name+".sock")}
		}
		c := n.Command(ctx, prog, args...)
		c.Stdout, c.Stderr = w, w
		p, err := n.StartCmd(c)
		w.Close()
		if err != nil {
			return err
		}
		d := &director{name: name, node: n, proc: p, log: tail, keepalived: e.impl.keepalived}
		go func() {
			<-p.Done()
			d.mu.Lock()
			d.exitAt = time.Now()
			d.mu.Unlock()
		}()
		e.dirs[i] = d
	}
	return nil
}

// hasVIP says whether node's eth0 carries the VIP.
func hasVIP(n *netlab.Node) (bool, error) {
	link, err := n.Netlink().LinkByName("eth0")
	if err != nil {
		return false, err
	}
	addrs, err := n.Netlink().AddrList(link, syscall.AF_INET)
	if err != nil {
		return false, err
	}
	for _, a := range addrs {
		if ap, ok := netip.AddrFromSlice(a.IP); ok && ap.Unmap() == vipAddr {
			return true, nil
		}
	}
	return false, nil
}

// lastState is the state the director's log last reported, and when.
func (d *director) lastState() (string, time.Time) {
	d.log.mu.Lock()
	defer d.log.mu.Unlock()
	for i := len(d.log.lines) - 1; i >= 0; i-- {
		l := d.log.lines[i]
		if !d.isTransition(l.text) {
			continue
		}
		if d.keepalived {
			if _, rest, ok := strings.Cut(l.text, "Entering "); ok {
				st, _, _ := strings.Cut(rest, " ")
				return st, l.at
			}
			continue
		}
		if _, rest, ok := strings.Cut(l.text, " to="); ok {
			st, _, _ := strings.Cut(rest, " ")
			return st, l.at
		}
	}
	return "", time.Time{}
}

// waitSettled waits until d1 is MASTER holding the VIP and d2 BACKUP not
// holding it, then settle more with no transition on either side (a
// start-up transient, e.g. both briefly MASTER because d2's daemon came up
// first, is waited out and noted). It returns when it settled, and a note
// on start-up transients.
func (e *env) waitSettled(ctx context.Context, settle time.Duration) (time.Time, string, error) {
	d1, d2 := e.dirs[0], e.dirs[1]
	start := time.Now()
	limit := 5*masterDown(e.adv, d2Prio) + 10*time.Second + 3*settle
	for {
		if err := ctx.Err(); err != nil {
			return time.Time{}, "", err
		}
		for _, d := range e.dirs {
			if _, gone := d.exited(); gone {
				return time.Time{}, "", fmt.Errorf("%s exited during start-up: %v\n%s", d.name, d.proc.Wait(), lastLines(d.log.text(), 15))
			}
		}
		s1, at1 := d1.lastState()
		s2, at2 := d2.lastState()
		if s1 == "MASTER" && s2 == "BACKUP" {
			v1, err1 := hasVIP(e.d1)
			v2, err2 := hasVIP(e.d2)
			if err := errors.Join(err1, err2); err != nil {
				return time.Time{}, "", err
			}
			if v1 && !v2 {
				last := at1
				if at2.After(last) {
					last = at2
				}
				if err := sleepCtx(ctx, time.Until(last.Add(settle))); err != nil {
					return time.Time{}, "", err
				}
				_, _, moved1 := d1.log.find(last, d1.isTransition)
				_, _, moved2 := d2.log.find(last, d2.isTransition)
				v1, _ = hasVIP(e.d1)
				v2, _ = hasVIP(e.d2)
				if !moved1 && !moved2 && v1 && !v2 {
					note := ""
					if at, _, ok := d2.log.find(time.Time{}, d2.isMaster); ok {
						note = fmt.Sprintf("start-up transient: d2 was MASTER at +%s after start", at.Sub(start).Round(time.Millisecond))
					}
					for _, d := range e.dirs {
						if _, gone := d.exited(); gone {
							return time.Time{}, "", fmt.Errorf("%s exited while settling", d.name)
						}
					}
					if e.impl.keepalived {
						for _, d := range e.dirs {
							if len(d.pids()) != 2 {
								return time.Time{}, "", fmt.Errorf("%s: keepalived VRRP child not found", d.name)
							}
						}
					}
					return time.Now(), note, nil
				}
				continue
			}
		}
		if time.Since(start) > limit {
			return time.Time{}, "", fmt.Errorf("no settled d1 MASTER / d2 BACKUP within %s (d1 %s, d2 %s)\nd1:\n%s\nd2:\n%s", limit.Round(time.Millisecond), s1, s2,
				lastLines(d1.log.text(), 10), lastLines(d2.log.text(), 10))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "    " + strings.Join(lines, "\n    ")
}

// askVIP connects from the client to VIP:port once and returns the name
// that answered.
func askVIP(ctx context.Context, cl *netlab.Node) (string, error) {
	c, err := cl.DialContext(ctx, "tcp4", netip.AddrPortFrom(vipAddr, probePort).String())
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(time.Second))
	b, err := io.ReadAll(io.LimitReader(c, 64))
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}
