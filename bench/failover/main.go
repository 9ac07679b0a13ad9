// Command failover is the failover benchmark of issue 3: hadirector and
// keepalived 2.2.7 side by side, in the same run, on the same namespace
// topology and with the method of the keepalived baseline
// (/work/shared/research/keepalived-baseline.md).
//
// Two directors (d1 priority 150, d2 priority 100) and a client share a
// bridge; VIP 10.77.0.250/24. Each director runs a tiny TCP server on
// 0.0.0.0:8080 answering its name; the client opens a new non-blocking TCP
// connection to VIP:8080 every millisecond (each abandoned after 200 ms).
// For each implementation, advert interval and scenario, every run starts
// a fresh lab and fresh directors, waits for d1 MASTER / d2 BACKUP and
// 2 x Master_Down_Interval more, starts the client, waits 0.7 s + a random
// part of the advert cycle, and at t0 acts on d1:
//
//	kill      SIGKILL (keepalived: VRRP child, then parent)
//	linkdown  the same SIGKILL, then eth0 down on d1 (node loss)
//	term      SIGTERM (keepalived: to the parent), a graceful stop
//	nodeloss  all of d1's interfaces down first, then SIGKILL (default:
//	          hadirector+udp only; see scNodeloss)
//
// and measures, relative to t0: the first answer from d2, the longest gap
// between answered connections (window t0-0.5 s ... end), and from a
// capture on the client's interface the adverts and ARP claims. The idle
// part measures CPU (schedstat) and RSS of master and backup.
//
// Usage (root): go run ./bench/failover [-runs 20] [-intervals 1s,100ms,10ms]
// [-impls hadirector,keepalived,hadirector+udp] [-scenarios kill,linkdown,term]
// [-idle 60s] [-idle-together] [-out DIR] [-hadirector PATH]
package main

import (
	"context"
	"encoding/csv"
	"flag"
	"fmt"
	"math"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hadirector/hadirector/integration/netlab"
)

type bench struct {
	hadirector string
	keepalived string
	out        string
	runs       int
	intervals  []time.Duration
	impls      []impl
	scenarios  []string
	udpScen    []string
	idle       time.Duration
	together   bool
	trace      bool
	rt         bool

	results []runResult
	idles   []idleRow
	idleErr map[string]string

	runsCSV *csv.Writer
	idleCSV *csv.Writer
}

func main() {
	if name := os.Getenv(serverEnv); name != "" {
		os.Exit(serveMain(name))
	}
	// Spare Ps: the client loop and the capture sit in blocking syscalls;
	// nothing else in this process may wait for sysmon to retake a P.
	runtime.GOMAXPROCS(max(8, 4*runtime.NumCPU()))
	os.Exit(realMain())
}

func realMain() int {
	b := &bench{idleErr: map[string]string{}}
	fs := flag.NewFlagSet("failover", flag.ContinueOnError)
	fs.StringVar(&b.hadirector, "hadirector", "", "hadirector binary (default: go build ./cmd/hadirector into a temp dir)")
	fs.StringVar(&b.keepalived, "keepalived", "keepalived", "keepalived binary")
	fs.StringVar(&b.out, "out", "", "directory for the CSV files and per-run logs (default: a new temp dir)")
	fs.IntVar(&b.runs, "runs", 20, "runs per implementation x interval x scenario")
	intervals := fs.String("intervals", "1s,100ms,10ms", "advert intervals")
	impls := fs.String("impls", "hadirector,keepalived,hadirector+udp", "implementations: hadirector, keepalived, hadirector+udp (UDP heartbeat link, 2ms)")
	scenarios := fs.String("scenarios", "kill,linkdown,term", "scenarios: kill, linkdown, term, nodeloss")
	udpScen := fs.String("udp-scenarios", "kill,linkdown,nodeloss", "scenarios run for hadirector+udp (intersected with -scenarios; nodeloss runs for it even if -scenarios lacks it)")
	fs.DurationVar(&b.idle, "idle", 60*time.Second, "idle measurement window per implementation and interval (0 skips it)")
	fs.BoolVar(&b.together, "idle-together", false, "measure the implementations' idle cost in one shared window (a lab each, all running at once), so that other work on the machine weighs on them alike; the default measures them one after the other")
	fs.BoolVar(&b.trace, "trace", true, "write every run's client connections (conns.csv) and captured adverts/ARP (packets.csv) next to its logs")
	fs.BoolVar(&b.rt, "rt", true, "run the probe (client thread, servers) SCHED_FIFO 10, so that machine load does not stall the instrument (the directors and keepalived keep the normal policy); -rt=false for a plain probe")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return 2
	}
	for _, s := range splitList(*intervals) {
		d, err := time.ParseDuration(s)
		if err != nil || d < 10*time.Millisecond || d%(10*time.Millisecond) != 0 {
			fmt.Fprintf(os.Stderr, "-intervals: %q: want a duration of at least 10ms in steps of 10ms\n", s)
			return 2
		}
		b.intervals = append(b.intervals, d)
	}
	for _, s := range splitList(*impls) {
		im, ok := allImpls[s]
		if !ok {
			fmt.Fprintf(os.Stderr, "-impls: unknown %q\n", s)
			return 2
		}
		b.impls = append(b.impls, im)
	}
	for _, s := range splitList(*scenarios) {
		if s != scKill && s != scLinkdown && s != scTerm && s != scNodeloss {
			fmt.Fprintf(os.Stderr, "-scenarios: unknown %q\n", s)
			return 2
		}
		b.scenarios = append(b.scenarios, s)
	}
	b.udpScen = splitList(*udpScen)
	if b.runs < 0 {
		fmt.Fprintln(os.Stderr, "-runs: want >= 0")
		return 2
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "failover: needs root (network namespaces); try: sudo env PATH=\"$PATH\" go run ./bench/failover")
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() { <-ctx.Done(); stop() }() // a second Ctrl-C kills; netlab.Sweep cleans up next time
	if err := b.setup(); err != nil {
		fmt.Fprintf(os.Stderr, "failover: %v\n", err)
		return 1
	}
	b.loop(ctx)
	b.report(os.Stdout)
	fmt.Printf("\nRaw data: %s/runs.csv, %s/idle.csv; per-run configs and stamped logs under %s/runs and %s/idle\n", b.out, b.out, b.out, b.out)
	if ctx.Err() != nil {
		fmt.Println("(interrupted: the tables hold the runs finished before Ctrl-C)")
		return 1
	}
	return 0
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func (b *bench) setup() error {
	if removed, err := netlab.Sweep(labPrefix); err != nil {
		fmt.Fprintf(os.Stderr, "sweep: %v\n", err)
	} else if len(removed) > 0 {
		fmt.Fprintf(os.Stderr, "swept leftovers of a crashed run: %v\n", removed)
	}
	if b.out == "" {
		d, err := os.MkdirTemp("", "hadirector-failover-")
		if err != nil {
			return err
		}
		b.out = d
	}
	if err := os.MkdirAll(b.out, 0o755); err != nil {
		return err
	}
	if b.hadirector == "" {
		bin := filepath.Join(b.out, "hadirector")
		cmd := exec.Command("go", "build", "-o", bin, "github.com/hadirector/hadirector/cmd/hadirector")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("building hadirector: %v\n%s", err, out)
		}
		b.hadirector = bin
	} else if abs, err := filepath.Abs(b.hadirector); err == nil {
		b.hadirector = abs
	}
	needK := slices.ContainsFunc(b.impls, func(i impl) bool { return i.keepalived })
	if needK {
		p, err := exec.LookPath(b.keepalived)
		if err != nil {
			return fmt.Errorf("keepalived: %w", err)
		}
		b.keepalived = p
	}
	fmt.Printf("== failover benchmark  %s\n", time.Now().Format(time.RFC3339))
	hv, _ := exec.Command(b.hadirector, "version").CombinedOutput()
	fmt.Printf("hadirector  %s (%s)\n", strings.TrimSpace(string(hv)), b.hadirector)
	if rev, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output(); err == nil {
		st, _ := exec.Command("git", "status", "--porcelain").Output()
		fmt.Printf("source      git %s, %d uncommitted/untracked paths at build time\n", strings.TrimSpace(string(rev)), len(splitLines(string(st))))
	}
	if needK {
		kv, _ := exec.Command(b.keepalived, "--version").CombinedOutput()
		fmt.Printf("keepalived  %s (-n -l -D -G -P -R, VRRPv3)\n", firstLine(string(kv)))
	}
	uname, _ := exec.Command("uname", "-r").Output()
	la, _ := os.ReadFile("/proc/loadavg")
	fmt.Printf("host        kernel %s, %d CPUs, loadavg %s\n", strings.TrimSpace(string(uname)), numCPU(), strings.Join(strings.Fields(string(la))[:3], " "))
	idleMode := "one after the other"
	if b.together {
		idleMode = "together"
	}
	fmt.Printf("plan        runs=%d intervals=%v impls=%s scenarios=%v (hadirector+udp: %v) idle=%s (%s) probe SCHED_FIFO=%v\n", b.runs, b.intervals, implNames(b.impls), b.scenarios, b.udpScen, b.idle, idleMode, b.rt)
	fmt.Printf("out         %s\n\n", b.out)

	rf, err := os.Create(filepath.Join(b.out, "runs.csv"))
	if err != nil {
		return err
	}
	b.runsCSV = csv.NewWriter(rf)
	b.runsCSV.Write(runsHeader)
	b.runsCSV.Flush()
	inf, err := os.Create(filepath.Join(b.out, "idle.csv"))
	if err != nil {
		return err
	}
	b.idleCSV = csv.NewWriter(inf)
	b.idleCSV.Write(idleHeader)
	b.idleCSV.Flush()
	return nil
}

func splitLines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.TrimSpace(l) != "" {
			out = append(out, l)
		}
	}
	return out
}

func firstLine(s string) string {
	if l := splitLines(s); len(l) > 0 {
		return strings.TrimSpace(l[0])
	}
	return ""
}

func numCPU() int {
	b, _ := os.ReadFile("/proc/cpuinfo")
	return strings.Count(string(b), "processor\t:")
}

func implNames(ims []impl) string {
	var s []string
	for _, i := range ims {
		s = append(s, i.name)
	}
	return strings.Join(s, ",")
}

func (b *bench) scenariosOf(im impl) []string {
	if !im.udp {
		return b.scenarios
	}
	var out []string
	for _, s := range b.scenarios {
		if slices.Contains(b.udpScen, s) {
			out = append(out, s)
		}
	}
	// nodeloss matters for the heartbeat link (see scNodeloss): with the
	// default -scenarios it runs for hadirector+udp only.
	if slices.Contains(b.udpScen, scNodeloss) && !slices.Contains(out, scNodeloss) && slices.Contains(b.scenarios, scLinkdown) {
		out = append(out, scNodeloss)
	}
	return out
}

// loop runs everything: per interval, the runs interleaved (rep, impl,
// scenario) so that a change in machine load hits every cell alike, then
// the idle measurements.
func (b *bench) loop(ctx context.Context) {
	total := 0
	for range b.intervals {
		for _, im := range b.impls {
			total += b.runs * len(b.scenariosOf(im))
		}
	}
	n := 0
	start := time.Now()
	for _, adv := range b.intervals {
		for rep := 1; rep <= b.runs; rep++ {
			for _, im := range b.impls {
				for _, sc := range b.scenariosOf(im) {
					if ctx.Err() != nil {
						return
					}
					n++
					r := b.oneRun(ctx, im, adv, sc, rep)
					if ctx.Err() != nil && !r.OK {
						return // interrupted mid-run: not a result
					}
					b.results = append(b.results, r)
					b.writeRun(r)
					fmt.Fprintf(os.Stderr, "[%d/%d %s] %-6s %-15s %-8s #%-2d %s\n", n, total, time.Since(start).Round(time.Second), adv, im.name, sc, rep, summary(r))
				}
			}
		}
		if b.idle > 0 && b.together {
			if ctx.Err() != nil {
				return
			}
			fmt.Fprintf(os.Stderr, "[idle] %-6s %-15s %s window, together ...\n", adv, implNames(b.impls), b.idle)
			rows, errs := b.idleRunTogether(ctx, b.impls, adv, b.idle)
			if ctx.Err() != nil {
				return
			}
			for i, im := range b.impls {
				if errs[i] != nil {
					b.idleErr[im.name+"/"+adv.String()] = errs[i].Error()
					fmt.Fprintf(os.Stderr, "[idle] %-6s %-15s FAILED: %v\n", adv, im.name, errs[i])
					continue
				}
				b.idles = append(b.idles, rows[i]...)
				for _, r := range rows[i] {
					b.writeIdle(r)
				}
			}
		} else if b.idle > 0 {
			for _, im := range b.impls {
				if ctx.Err() != nil {
					return
				}
				fmt.Fprintf(os.Stderr, "[idle] %-6s %-15s %s window ...\n", adv, im.name, b.idle)
				rows, err := b.idleRun(ctx, im, adv, b.idle)
				if ctx.Err() != nil {
					return
				}
				if err != nil {
					b.idleErr[im.name+"/"+adv.String()] = err.Error()
					fmt.Fprintf(os.Stderr, "[idle] %-6s %-15s FAILED: %v\n", adv, im.name, err)
					continue
				}
				b.idles = append(b.idles, rows...)
				for _, r := range rows {
					b.writeIdle(r)
				}
			}
		}
	}
}

func summary(r runResult) string {
	if !r.OK {
		return "FAILED: " + firstLine(r.Err)
	}
	s := fmt.Sprintf("first d2 answer %7.1f ms, handover gap %6.1f ms, longest gap %6.1f ms (before t0 %5.1f), VIP left on d1: %v", r.FirstD2Answer*1e3, r.GapHandover*1e3, r.LongestGap*1e3, r.GapBeforeT0*1e3, r.VIPLeftOnD1)
	if r.Note != "" {
		s += "; " + r.Note
	}
	return s
}

var runsHeader = []string{"impl", "advert_s", "scenario", "rep", "ok", "error", "t0_unix_ns", "client_start_to_t0_s",
	"since_last_d1_adv_s", "first_d2_answer_s", "longest_gap_s", "gap_start_s", "gap_before_t0_s", "gap_after_t0_s", "gap_handover_s", "last_d1_answer_s", "d2_log_master_s",
	"first_d2_advert_s", "first_d2_arp_s", "wire_down_timer_s", "prio0_advert_s", "d1_adverts_after_t0", "linkdown_done_s",
	"old_master_exit_s", "vip_left_on_d1", "vip_on_d2", "conns", "answered", "timeouts", "refused", "other_errors", "client_max_start_gap_s", "bench_late_s", "loadavg1", "note"}

func fnum(v float64) string {
	if math.IsNaN(v) {
		return ""
	}
	return strconv.FormatFloat(v, 'f', 5, 64)
}

func yesno(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func (b *bench) writeRun(r runResult) {
	t0 := ""
	if !r.T0.IsZero() {
		t0 = strconv.FormatInt(r.T0.UnixNano(), 10)
	}
	b.runsCSV.Write([]string{r.Impl, fnum(r.Adv.Seconds()), r.Scenario, strconv.Itoa(r.Rep), yesno(r.OK), strings.ReplaceAll(firstLine(r.Err), ",", ";"), t0,
		fnum(r.Delay), fnum(r.SinceLastD1Adv), fnum(r.FirstD2Answer), fnum(r.LongestGap), fnum(r.GapStart), fnum(r.GapBeforeT0), fnum(r.GapAfterT0), fnum(r.GapHandover), fnum(r.LastD1Answer), fnum(r.D2LogMaster),
		fnum(r.FirstD2Advert), fnum(r.FirstD2ARP), fnum(r.WireDownTimer), fnum(r.Prio0Advert), strconv.Itoa(r.D1AdvertsAfterT0), fnum(r.LinkDown),
		fnum(r.OldMasterExit), yesno(r.VIPLeftOnD1), yesno(r.VIPOnD2), strconv.Itoa(r.Conns), strconv.Itoa(r.Answered), strconv.Itoa(r.Timeouts),
		strconv.Itoa(r.Refused), strconv.Itoa(r.OtherErr), fnum(r.ClientMaxStart), fnum(r.BenchLate), strconv.FormatFloat(r.Load1, 'f', 2, 64), r.Note})
	b.runsCSV.Flush()
}

var idleHeader = []string{"impl", "advert_s", "host", "state", "process", "window_s", "cpu_percent_schedstat", "cpu_percent_ticks", "switches_per_advert", "rss_kib", "rss_max_kib", "threads", "note"}

func (b *bench) writeIdle(r idleRow) {
	b.idleCSV.Write([]string{r.Impl, fnum(r.Adv.Seconds()), r.Host, r.State, r.Process, fnum(r.Window), strconv.FormatFloat(r.CPUSched, 'f', 4, 64),
		strconv.FormatFloat(r.CPUTicks, 'f', 3, 64), strconv.FormatFloat(r.Switches, 'f', 2, 64), strconv.FormatInt(r.RSSKiB, 10), strconv.FormatInt(r.RSSMaxKiB, 10), strconv.Itoa(r.Threads), r.Note})
	b.idleCSV.Flush()
}
