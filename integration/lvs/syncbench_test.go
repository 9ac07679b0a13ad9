package lvs_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hadirector/hadirector/integration/lvs"
	"github.com/hadirector/hadirector/internal/connsync"
)

// TestBenchSync is issue 5's benchmark: how fast and how completely the
// kernel's IPVS connection sync copies the master's connections to the
// backup, with the kernel's default sync sysctls and with the profile
// hadirector recommends, at 1 000 and 10 000 connections.
//
//	HADIRECTOR_BENCH=1 HADIRECTOR_VM_MEM=2048 \
//	  HADIRECTOR_VM_ENV="HADIRECTOR_BENCH HADIRECTOR_BENCH_CONNS HADIRECTOR_BENCH_RATE" \
//	  integration/lvs/vmtest.sh -run TestBenchSync -timeout 20m
//
// Bed: DR, two real hadirector directors with [sync] (both sync roles on
// both, as in TestFailoverKeepsConnections), lb1 MASTER, lb2 BACKUP. The
// client opens N TCP connections to VIP:echo, 100 a second (16 at a time);
// every other one is "active": right after connect() it exchanges three
// numbered lines, and one more 11 s after all are open; the others are
// "idle": the handshake, then nothing (TCP keep-alive is off at both
// ends: its probes would be traffic). All stay open until the end.
//
// Lag of a connection: from the moment the client's connect() returned (the
// handshake's ACK, the 2nd inbound packet at the director, has been sent;
// an active connection writes its first line, the 3rd, right after) until
// lb2's /proc/net/ip_vs_conn_sync first lists its tuple with origin SYNC.
// That table is polled from a file opened in lb2's namespace, 5 ms after
// the end of each read (or twice the read's time, if longer); the time
// taken is the end of the read that first saw the entry, so each lag is an
// upper bound, late by at most the poll resolution printed (from the start
// of the previous read). The "wire" lag runs to the moment a socket in lb2
// beside the kernel's backup socket received the first sync datagram
// carrying the entry (no polling).
//
// Coverage: lb2's synced ESTABLISHED entries for the client's connections
// ÷ lb1's, at 1 s and 5 s after the last connection is open, and 4 s after
// the active connections' late line (sent past a 10 s refresh period).
//
// HADIRECTOR_BENCH_CONNS overrides the sizes ("1000,10000"),
// HADIRECTOR_BENCH_RATE the connections a second. The test raises
// RLIMIT_NOFILE to 2 N + 1024: the client's and the echo servers' ends of
// every connection are in this process.
func TestBenchSync(t *testing.T) {
	needBench(t)
	sizes := []int{1000, 10000}
	var err error
	if v := os.Getenv("HADIRECTOR_BENCH_CONNS"); v != "" {
		sizes = nil
		for _, f := range strings.Split(v, ",") {
			var n int
			n, err = strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 2 || n > 20000 {
				t.Fatalf("HADIRECTOR_BENCH_CONNS=%q: want sizes 2-20000, comma-separated", v)
			}
			sizes = append(sizes, n)
		}
	}
	rate := 100
	if v := os.Getenv("HADIRECTOR_BENCH_RATE"); v != "" {
		if rate, err = strconv.Atoi(v); err != nil || rate < 1 {
			t.Fatalf("HADIRECTOR_BENCH_RATE=%q: want connections a second", v)
		}
	}
	was, nofile, err := raiseNoFile(uint64(2*slices.Max(sizes) + 1024))
	fmt.Printf("sync bench: %d CPU, %s, RLIMIT_NOFILE %d → %d (%v), opening %d connections a second\n",
		runtime.NumCPU(), memInfo("MemTotal"), was, nofile, err, rate)

	var rows []syncRow
	for _, n := range sizes {
		for _, s := range syncSettings {
			t.Run(fmt.Sprintf("%d %s", n, s.name), func(t *testing.T) {
				if need := uint64(2*n + 256); nofile < need {
					t.Fatalf("RLIMIT_NOFILE is %d, %d connections need %d (both ends are in this process): %v", nofile, n, need, err)
				}
				rows = append(rows, benchSync(t, n, rate, s)...)
			})
		}
	}
	printSyncRows(rows)
}

// syncSetting is one set of sync sysctls under test: extra [sync] keys and
// the values the directors' kernels must then show.
type syncSetting struct {
	name  string
	keys  string
	wants map[string]string
}

var syncSettings = []syncSetting{
	{"kernel defaults", "", map[string]string{"sync_threshold": "3 50", "sync_refresh_period": "0", "sync_retries": "0"}},
	{"profile", "sync_threshold = [0, 0]\nsync_refresh_period = \"10s\"\nsync_retries = 1",
		map[string]string{"sync_threshold": "0 0", "sync_refresh_period": "10", "sync_retries": "1"}},
}

// The pause between two reads of lb2's table: pollEvery, or twice the
// read's time if longer (so the poller takes at most a third of the VM's
// one CPU: a read of 10 000 entries takes 10-20 ms there), but never more
// than pollMax (a read stalled by the host must not stretch the next
// pause).
const (
	pollEvery = 5 * time.Millisecond
	pollMax   = 40 * time.Millisecond
)

// Connection classes.
const (
	active = 1
	idle   = 2
)

var className = map[uint8]string{active: "active", idle: "idle"}

// Checkpoints after the last connection is open.
var checkpoints = []string{"+1 s", "+5 s", "refresh"}

// syncRow is one line of the result: one class of connections of one run.
type syncRow struct {
	n       int
	setting string
	class   uint8
	conns   int
	lag     []time.Duration // table lag of those seen
	wire    []time.Duration // wire lag of those seen
	behind  []time.Duration // table − wire, of those seen by both
	cover   []float64       // per checkpoint, lb2 ÷ lb1
	run     *syncRun
}

// syncRun is what one run (size × setting) measured besides the rows.
type syncRun struct {
	openFor    time.Duration // opening all connections
	failed     int
	firstWrite time.Duration // median, connect() returned → first line written (active)
	res        []time.Duration
	reads      []time.Duration
	maxEntries int
	datagrams  int64
	entries    int64
	decodeErrs int64
	waveFor    time.Duration
	lb1        []int           // lb1's entries per checkpoint
	at         []time.Duration // when each checkpoint began, after the last connection opened
	memAvail   string
}

// benchConn is one client connection.
type benchConn struct {
	c          net.Conn
	port       uint16
	class      uint8
	connected  time.Duration // since the run's start
	firstWrite time.Duration // active: the first line written
}

func benchSync(t *testing.T, n, rate int, s syncSetting) []syncRow {
	ctx, cancel := context.WithTimeout(t.Context(), 6*time.Minute)
	defer cancel()
	b := lvs.New(t, lvs.Options{Mode: lvs.DR, Directors: 2})
	for _, srv := range b.Servers {
		srv.SetKeepAlive(false)
	}
	// Adverts every 2 s: the master-down interval (~6.6 s) rides out the
	// stalls of an emulated VM under this load (with 100 ms adverts lb2
	// took the VIP now and then, and the client's connections went to it).
	_, d2 := startPair(ctx, t, b, lvs.ConfigOptions{AdvertInterval: "2s", Extra: "[sync]\ninterface = \"eth0\"\n" + s.keys})
	defer func() {
		if strings.Contains(d2.Output(), "to=MASTER") {
			t.Errorf("lb2 was MASTER during the run (VRRP adverts missed under load): the figures are void")
		}
	}()
	for _, lb := range b.LBs {
		for k, want := range s.wants {
			got, err := lb.ReadSysctl("net.ipv4.vs." + k)
			if got = strings.Join(strings.Fields(got), " "); err != nil || got != want {
				t.Fatalf("%s: net.ipv4.vs.%s = %q (%v), want %q", lb.Name(), k, got, err, want)
			}
		}
	}
	client := b.ClientAddr()
	vip := netip.MustParseAddrPort(b.VIPPort(lvs.EchoPort))
	mine := func(e *lvs.ConnEntry) bool {
		return e.Protocol == "TCP" && e.Virtual == vip && e.Client.Addr() == client
	}
	run := &syncRun{}
	start := time.Now()
	since := func() time.Duration { return time.Since(start) }

	// lb2's table, polled.
	poll, err := lvs.OpenConnTable(b.LBs[1])
	if err != nil {
		t.Fatal(err)
	}
	defer poll.Close()
	tableSeen := make([]time.Duration, 1<<16) // by client port; 0: not seen
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var fresh []uint16
		prevStart := time.Duration(-1)
		for {
			select {
			case <-stop:
				return
			default:
			}
			t0 := since()
			fresh = fresh[:0]
			k, err := poll.Read(func(e *lvs.ConnEntry) {
				if e.Synced && mine(e) && tableSeen[e.Client.Port()] == 0 {
					fresh = append(fresh, e.Client.Port())
				}
			})
			if err != nil {
				t.Error(err)
				return
			}
			t1 := since()
			for _, p := range fresh {
				tableSeen[p] = t1
			}
			if prevStart >= 0 {
				run.res = append(run.res, t1-prevStart)
			}
			run.reads = append(run.reads, t1-t0)
			run.maxEntries = max(run.maxEntries, k)
			prevStart = t0
			time.Sleep(min(max(pollEvery, 2*(t1-t0)), pollMax))
		}
	}()

	// lb2's sync datagrams, as they arrive.
	pc, err := lvs.ListenSync(b.LBs[1], "eth0", netip.AddrPortFrom(connsync.DefaultGroup, connsync.DefaultPort))
	if err != nil {
		t.Fatal(err)
	}
	wireSeen := make([]time.Duration, 1<<16)
	var datagrams, entries, decodeErrs atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 1<<16)
		var m connsync.Message
		for {
			k, _, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			now := since()
			datagrams.Add(1)
			if err := connsync.Decode(buf[:k], &m); err != nil {
				decodeErrs.Add(1)
			}
			entries.Add(int64(len(m.Conns)))
			for _, c := range m.Conns {
				if c.Client.Addr() == client && c.Virtual == vip && wireSeen[c.Client.Port()] == 0 {
					wireSeen[c.Client.Port()] = now
				}
			}
		}
	}()
	stopWatch := sync.OnceFunc(func() {
		close(stop)
		pc.Close()
		wg.Wait()
	})
	defer stopWatch()

	// The connections.
	conns, failed, firstErr := openConns(ctx, b, vip, n, rate, since)
	defer func() {
		for _, c := range conns {
			c.c.Close()
		}
	}()
	up := since()
	run.openFor, run.failed = up, failed
	if failed > 0 {
		t.Errorf("%d of %d connections failed to open; first: %v", failed, n, firstErr)
	}
	if len(conns) == 0 {
		t.FailNow()
	}
	class := make([]uint8, 1<<16)
	var fw []time.Duration
	for _, c := range conns {
		class[c.port] = c.class
		if c.class == active {
			fw = append(fw, c.firstWrite-c.connected)
		}
	}
	run.firstWrite = pct(fw, 0.5)
	run.memAvail = memInfo("MemAvailable")
	t.Logf("%d connections open in %v (%.0f/s)", len(conns), up.Round(time.Millisecond), float64(len(conns))/up.Seconds())

	// Coverage at the checkpoints.
	lb1Tab, err := lvs.OpenConnTable(b.LBs[0])
	if err != nil {
		t.Fatal(err)
	}
	defer lb1Tab.Close()
	lb2Tab, err := lvs.OpenConnTable(b.LBs[1])
	if err != nil {
		t.Fatal(err)
	}
	defer lb2Tab.Close()
	cover := make([][3]float64, len(checkpoints)) // [class]
	at := func(i int) {
		run.at = append(run.at, since()-up)
		c, lb1n := coverage(t, lb1Tab, lb2Tab, mine, class)
		cover[i] = c
		run.lb1 = append(run.lb1, lb1n)
		t.Logf("%s (+%v): lb1 %d entries; coverage active %.2f %%, idle %.2f %%", checkpoints[i], run.at[i].Round(time.Millisecond), lb1n, 100*c[active], 100*c[idle])
	}
	sleepUntil(ctx, start, up+time.Second)
	at(0)
	sleepUntil(ctx, start, up+5*time.Second)
	at(1)
	// Past the 10 s refresh period of every connection's first sync: one
	// line on each active connection (the profile re-syncs it, the
	// defaults do not, far from the 53rd packet).
	sleepUntil(ctx, start, up+11*time.Second)
	w0 := since()
	if err := wave(ctx, conns, 16); err != nil {
		t.Errorf("a line on each active connection: %v", err)
	}
	run.waveFor = since() - w0
	sleepUntil(ctx, start, since()+4*time.Second)
	at(2)
	stopWatch()
	run.datagrams, run.entries, run.decodeErrs = datagrams.Load(), entries.Load(), decodeErrs.Load()

	var rows []syncRow
	for _, cl := range []uint8{active, idle} {
		r := syncRow{n: n, setting: s.name, class: cl, run: run}
		for _, c := range conns {
			if c.class != cl {
				continue
			}
			r.conns++
			if v := tableSeen[c.port]; v != 0 {
				r.lag = append(r.lag, v-c.connected)
			}
			if v := wireSeen[c.port]; v != 0 {
				r.wire = append(r.wire, v-c.connected)
				if u := tableSeen[c.port]; u != 0 {
					r.behind = append(r.behind, u-v)
				}
			}
		}
		for i := range checkpoints {
			r.cover = append(r.cover, cover[i][cl])
		}
		rows = append(rows, r)
	}
	return rows
}

// openConns opens n connections from the client to vip, rate a second (at
// most; 16 at a time): even ones active (three lines right after connect),
// odd ones idle.
func openConns(ctx context.Context, b *lvs.Bed, vip netip.AddrPort, n, rate int, since func() time.Duration) (conns []*benchConn, failed int, firstErr error) {
	var mu sync.Mutex
	next := make(chan int)
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			buf := make([]byte, 64)
			for i := range next {
				bc, err := openConn(ctx, b, vip, i, buf, since)
				mu.Lock()
				if err != nil {
					failed++
					if firstErr == nil {
						firstErr = err
					}
				} else {
					conns = append(conns, bc)
				}
				mu.Unlock()
			}
		})
	}
	t0 := since()
	for i := range n {
		if d := t0 + time.Duration(i)*time.Second/time.Duration(rate) - since(); d > 0 {
			time.Sleep(d)
		}
		select {
		case next <- i:
		case <-ctx.Done():
		}
	}
	close(next)
	wg.Wait()
	return conns, failed, firstErr
}

func openConn(ctx context.Context, b *lvs.Bed, vip netip.AddrPort, i int, buf []byte, since func() time.Duration) (*benchConn, error) {
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	// Dialled here rather than with Node.DialContext (which hops to
	// another goroutine), so that connected is taken as soon as connect()
	// returns; and with no keep-alive probes, so an idle connection sends
	// nothing at all.
	var c net.Conn
	var connected time.Duration
	err := b.Client.Do(func() (err error) {
		d := net.Dialer{KeepAlive: -1}
		c, err = d.DialContext(dctx, "tcp4", vip.String())
		connected = since()
		return err
	})
	if err != nil {
		return nil, err
	}
	bc := &benchConn{c: c, port: c.LocalAddr().(*net.TCPAddr).AddrPort().Port(), class: idle, connected: connected}
	if i%2 == 0 {
		bc.class = active
		for seq := 1; seq <= 3; seq++ {
			if err := echoLine(c, buf, seq, func() {
				if seq == 1 {
					bc.firstWrite = since()
				}
			}); err != nil {
				c.Close()
				return nil, err
			}
		}
	}
	return bc, nil
}

// echoLine writes line seq on c and reads its echo ("<server> seq"),
// calling written once the write returned.
func echoLine(c net.Conn, buf []byte, seq int, written func()) error {
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	line := append(strconv.AppendInt(buf[:0], int64(seq), 10), '\n')
	if _, err := c.Write(line); err != nil {
		return err
	}
	if written != nil {
		written()
	}
	n := 0
	for bytes.IndexByte(buf[:n], '\n') < 0 {
		if n == len(buf) {
			return errors.New("echo: reply too long")
		}
		k, err := c.Read(buf[n:])
		n += k
		if err != nil && bytes.IndexByte(buf[:n], '\n') < 0 {
			return fmt.Errorf("echo line %d: %w", seq, err)
		}
	}
	want := " " + strconv.Itoa(seq) + "\n"
	if !strings.HasSuffix(string(buf[:n]), want) {
		return fmt.Errorf("echo line %d: answer %q", seq, buf[:n])
	}
	return nil
}

// wave sends line 4 on every active connection, workers at a time.
func wave(ctx context.Context, conns []*benchConn, workers int) error {
	var firstErr error
	var mu sync.Mutex
	next := make(chan *benchConn)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			buf := make([]byte, 64)
			for c := range next {
				if err := echoLine(c.c, buf, 4, nil); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
			}
		})
	}
	for _, c := range conns {
		if c.class == active && ctx.Err() == nil {
			next <- c
		}
	}
	close(next)
	wg.Wait()
	return firstErr
}

// coverage reads lb2's table, then lb1's (which no longer changes once
// every connection is open, so the snapshot is lb2's at the moment of its
// read), and returns, per class, the share of lb1's ESTABLISHED entries of
// the client's connections that lb2 holds as synced ESTABLISHED entries to
// the same real server; and lb1's count.
func coverage(t *testing.T, lb1, lb2 *lvs.ConnTable, mine func(*lvs.ConnEntry) bool, class []uint8) (share [3]float64, lb1n int) {
	t.Helper()
	real := make([]netip.AddrPort, 1<<16) // lb2's, by client port
	counted := make([]bool, 1<<16)
	var have, both [3]int
	if _, err := lb2.Read(func(e *lvs.ConnEntry) {
		if mine(e) && e.Synced && e.State == "ESTABLISHED" {
			real[e.Client.Port()] = e.Real
		}
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := lb1.Read(func(e *lvs.ConnEntry) {
		if mine(e) && !e.Synced && e.State == "ESTABLISHED" {
			lb1n++
			p := e.Client.Port()
			if counted[p] {
				return
			}
			counted[p] = true
			have[class[p]]++
			if real[p] == e.Real {
				both[class[p]]++
			}
		}
	}); err != nil {
		t.Fatal(err)
	}
	for c := range have {
		if have[c] > 0 {
			share[c] = float64(both[c]) / float64(have[c])
		}
	}
	return share, lb1n
}

func sleepUntil(ctx context.Context, start time.Time, at time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(time.Until(start.Add(at))):
	}
}

// pct is the q-quantile of ds (nearest rank); it sorts ds.
func pct(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	i := int(q*float64(len(ds))+0.999999) - 1
	return ds[min(max(i, 0), len(ds)-1)]
}

func ms(d time.Duration) string {
	if d < 10*time.Millisecond {
		return fmt.Sprintf("%.1f ms", float64(d)/1e6)
	}
	return fmt.Sprintf("%d ms", d.Round(time.Millisecond).Milliseconds())
}

func printSyncRows(rows []syncRow) {
	if len(rows) == 0 {
		return
	}
	// The rows of one run are adjacent (active, idle).
	var runs [][]syncRow
	for i, r := range rows {
		if i == 0 || rows[i-1].run != r.run {
			runs = append(runs, nil)
		}
		runs[len(runs)-1] = append(runs[len(runs)-1], r)
	}
	lagCells := func(lag []time.Duration) string {
		if len(lag) == 0 {
			return "– | – | – | – | –"
		}
		var c []string
		for _, q := range []float64{0, 0.5, 0.9, 0.99, 1} {
			c = append(c, ms(pct(lag, q)))
		}
		return strings.Join(c, " | ")
	}
	wireCells := func(wire []time.Duration) string {
		if len(wire) == 0 {
			return "– | –"
		}
		return ms(pct(wire, 0.5)) + " | " + ms(pct(wire, 0.99))
	}

	fmt.Printf("\nIPVS connection sync, lb1 → lb2 (DR, half the connections active, half idle)\n")
	fmt.Printf("lag: connect() returned → the tuple first listed (origin SYNC) in lb2's /proc/net/ip_vs_conn_sync, polled (an upper bound, late by up to the poll resolution);\n")
	fmt.Printf("wire: → the first sync datagram carrying it reached a socket in lb2; coverage: lb2's synced ÷ lb1's ESTABLISHED entries, active / idle connections\n")
	fmt.Printf("| N | sysctls | opened | lag min | median | p90 | p99 | max | never seen | poll resolution median / p99 | wire median | wire p99 | coverage +1 s | +5 s | after a line past the refresh period |\n")
	fmt.Printf("|%s\n", strings.Repeat(" --- |", 15))
	for _, rs := range runs {
		r, u := rs[0], rs[0].run
		var lag, wire []time.Duration
		never := 0
		for _, x := range rs {
			lag = append(lag, x.lag...)
			wire = append(wire, x.wire...)
			never += x.conns - len(x.lag)
		}
		fmt.Printf("| %d | %s | %.0f/s | %s | %d | %s / %s | %s |", r.n, r.setting, float64(r.n-u.failed)/u.openFor.Seconds(),
			lagCells(lag), never, ms(pct(u.res, 0.5)), ms(pct(u.res, 0.99)), wireCells(wire))
		for i := range checkpoints {
			var c []string
			for _, x := range rs {
				c = append(c, fmt.Sprintf("%.2f", 100*x.cover[i]))
			}
			fmt.Printf(" %s %% |", strings.Join(c, " / "))
		}
		fmt.Println()
	}

	fmt.Printf("\nby class\n")
	fmt.Printf("| N | sysctls | class | conns | lag min | median | p90 | p99 | max | never seen | wire median | wire p99 | table − wire median |\n")
	fmt.Printf("|%s\n", strings.Repeat(" --- |", 13))
	for _, r := range rows {
		behind := "–"
		if len(r.behind) > 0 {
			behind = ms(pct(r.behind, 0.5))
		}
		fmt.Printf("| %d | %s | %s | %d | %s | %d | %s | %s |\n", r.n, r.setting, className[r.class], r.conns,
			lagCells(r.lag), r.conns-len(r.lag), wireCells(r.wire), behind)
	}

	fmt.Printf("\nruns:\n")
	for _, rs := range runs {
		r, u := rs[0], rs[0].run
		fmt.Printf("  %d %s: opened in %v (%.0f/s, %d failed), first line %s after connect() (median); table polls: resolution median %s, p99 %s, max %s, read median %s, max %s, up to %d entries; "+
			"%d sync datagrams, %d entries, %d undecodable; late line on the active ones took %v; checkpoints at +%v with lb1 entries %v; %s with all open\n",
			r.n, r.setting, u.openFor.Round(time.Millisecond), float64(r.n-u.failed)/u.openFor.Seconds(), u.failed, ms(u.firstWrite),
			ms(pct(u.res, 0.5)), ms(pct(u.res, 0.99)), ms(pct(u.res, 1)), ms(pct(u.reads, 0.5)), ms(pct(u.reads, 1)), u.maxEntries,
			u.datagrams, u.entries, u.decodeErrs, u.waveFor.Round(time.Millisecond), roundAll(u.at), u.lb1, u.memAvail)
	}
}

func roundAll(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(10 * time.Millisecond)
	}
	return out
}

// raiseNoFile raises RLIMIT_NOFILE to want (the hard limit too, which root
// may); if that is refused, to the hard limit. It returns the soft limit
// before and after.
func raiseNoFile(want uint64) (was, now uint64, err error) {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0, 0, err
	}
	was = r.Cur
	if r.Cur < want {
		err = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: want, Max: max(want, r.Max)})
		if err != nil {
			err = fmt.Errorf("raising RLIMIT_NOFILE to %d (hard %d): %w", want, r.Max, err)
			_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: r.Max, Max: r.Max})
		}
	}
	if err2 := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err2 != nil {
		return was, 0, err2
	}
	return was, r.Cur, err
}

// memInfo is the machine's /proc/meminfo line key, for the record.
func memInfo(key string) string {
	b, _ := os.ReadFile("/proc/meminfo")
	for line := range strings.Lines(string(b)) {
		if k, _, _ := strings.Cut(line, ":"); k == key {
			return strings.Join(strings.Fields(line), " ")
		}
	}
	return key + " unknown"
}
