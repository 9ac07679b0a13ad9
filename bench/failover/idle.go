package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Idle cost (d): after settling past the second gratuitous-ARP burst, the
// CPU time (/proc/PID/task/*/schedstat, ns; and utime+stime in ticks as a
// cross-check), thread switches (the tasks' voluntary and involuntary
// context switches, per advert interval) and VmRSS of master and backup
// over a window. On a virtual machine a switch is a large part of an idle
// advert's cost: the count says where a difference comes from.

const clockTicks = 100 // USER_HZ

type idleRow struct {
	Impl      string
	Adv       time.Duration
	Host      string // d1, d2
	State     string // MASTER, BACKUP
	Process   string // hadirector: daemon; keepalived: parent, vrrp, sum
	Window    float64
	CPUSched  float64 // percent of one CPU
	CPUTicks  float64
	Switches  float64 // thread switches per advert interval
	RSSKiB    int64   // at the end of the window
	RSSMaxKiB int64
	Threads   int
	Note      string
}

type procSample struct {
	schedNs  int64
	ticks    int64
	switches int64
	threads  int
}

func readSample(pid int) (procSample, error) {
	var s procSample
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return s, err
	}
	for _, t := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/schedstat", pid, t.Name()))
		if err != nil {
			continue
		}
		f := strings.Fields(string(b))
		if len(f) > 0 {
			v, _ := strconv.ParseInt(f[0], 10, 64)
			s.schedNs += v
			s.threads++
		}
		s.switches += readSwitches(fmt.Sprintf("/proc/%d/task/%s/status", pid, t.Name()))
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, err
	}
	str := string(b)
	i := strings.LastIndexByte(str, ')')
	f := strings.Fields(str[i+1:])
	// After ")": state(0) ppid(1) ... utime is field 14 overall -> index 11 here, stime 12.
	if len(f) > 12 {
		u, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		s.ticks = u + st
	}
	return s, nil
}

// readSwitches sums a task's voluntary and involuntary context switches.
func readSwitches(status string) int64 {
	b, err := os.ReadFile(status)
	if err != nil {
		return 0
	}
	var n int64
	for _, l := range strings.Split(string(b), "\n") {
		if _, v, ok := strings.Cut(l, "ctxt_switches:"); ok {
			c, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			n += c
		}
	}
	return n
}

func readRSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n
			}
		}
	}
	return -1
}

// idleLab is one implementation's settled lab, ready to be measured.
type idleLab struct {
	im        impl
	adv       time.Duration
	e         *env
	procs     []idleProc
	settledAt time.Time
	note      string
}

type idleProc struct {
	host, state, name string
	pid               int
}

// idleRun measures one impl at one interval in a fresh lab.
func (b *bench) idleRun(ctx context.Context, im impl, adv time.Duration, window time.Duration) (rows []idleRow, err error) {
	md := masterDown(adv, d2Prio)
	ctx, cancel := context.WithTimeout(ctx, window+60*time.Second+12*md)
	defer cancel()
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	l, err := b.idleStart(ctx, im, adv)
	if l != nil {
		defer func() {
			if cerr := l.e.close(); cerr != nil && err == nil {
				err = fmt.Errorf("teardown: %w", cerr)
			}
		}()
	}
	if err != nil {
		return nil, err
	}
	all, errs := idleMeasure(ctx, []*idleLab{l}, window)
	return all[0], errs[0]
}

// idleRunTogether measures every impl at one interval in the same window:
// one lab each, all settled first, then sampled side by side, so that the
// machine's other work weighs on every implementation alike (on a small
// shared machine, sequential windows differ by tens of percent). Per impl
// it returns the rows or the error.
func (b *bench) idleRunTogether(ctx context.Context, ims []impl, adv time.Duration, window time.Duration) (rows [][]idleRow, errs []error) {
	md := masterDown(adv, d2Prio)
	ctx, cancel := context.WithTimeout(ctx, window+time.Duration(len(ims))*(60*time.Second+12*md))
	defer cancel()
	rows, errs = make([][]idleRow, len(ims)), make([]error, len(ims))
	var labs []*idleLab
	var idx []int
	defer func() {
		for i, l := range labs {
			if cerr := l.e.close(); cerr != nil && errs[idx[i]] == nil {
				errs[idx[i]] = fmt.Errorf("teardown: %w", cerr)
			}
		}
	}()
	for i, im := range ims {
		l, err := func() (l *idleLab, err error) {
			defer func() {
				if r := recover(); r != nil {
					err = fmt.Errorf("panic: %v", r)
				}
			}()
			return b.idleStart(ctx, im, adv)
		}()
		if l != nil {
			labs, idx = append(labs, l), append(idx, i)
		}
		if err != nil {
			errs[i] = err // torn down with the others, not measured
		}
	}
	var measured []*idleLab
	var mIdx []int
	for i, l := range labs {
		if errs[idx[i]] == nil {
			measured, mIdx = append(measured, l), append(mIdx, idx[i])
		}
	}
	if len(measured) == 0 {
		return rows, errs
	}
	// Every lab has run at least as long as its own settling by now;
	// the earlier ones longer, which only settles them more.
	all, merrs := idleMeasure(ctx, measured, window)
	for j, i := range mIdx {
		rows[i], errs[i] = all[j], merrs[j]
		for k := range rows[i] {
			rows[i][k].Note = joinNote(rows[i][k].Note, fmt.Sprintf("measured together with %d other implementation(s)", len(measured)-1))
		}
	}
	return rows, errs
}

// idleStart builds a lab for im, starts the directors and waits until they
// have settled. On error the lab (if any) is returned too, for teardown.
func (b *bench) idleStart(ctx context.Context, im impl, adv time.Duration) (*idleLab, error) {
	md := masterDown(adv, d2Prio)
	dir := filepath.Join(b.out, "idle", fmt.Sprintf("%s-%s", im.name, advLabel(adv)))
	e, err := newEnv(b, im, adv, dir, false)
	if err != nil {
		return nil, fmt.Errorf("lab: %w", err)
	}
	l := &idleLab{im: im, adv: adv, e: e}
	if err := e.startDirectors(ctx); err != nil {
		return l, err
	}
	// Past the second gratuitous-ARP burst (5 s), as the baseline (>= 7 s).
	if l.settledAt, l.note, err = e.waitSettled(ctx, max(7*time.Second, 2*md)); err != nil {
		return l, err
	}
	for i, d := range e.dirs {
		state := "MASTER"
		if i == 1 {
			state = "BACKUP"
		}
		p := d.pids()
		if im.keepalived {
			l.procs = append(l.procs, idleProc{d.name, state, "parent", p[0]}, idleProc{d.name, state, "vrrp", p[1]})
		} else {
			l.procs = append(l.procs, idleProc{d.name, state, "daemon", p[0]})
		}
	}
	return l, nil
}

// idleMeasure samples the processes of every lab over one window.
func idleMeasure(ctx context.Context, labs []*idleLab, window time.Duration) (rows [][]idleRow, errs []error) {
	rows, errs = make([][]idleRow, len(labs)), make([]error, len(labs))
	start := make([][]procSample, len(labs))
	rssMax := make([][]int64, len(labs))
	for j, l := range labs {
		start[j] = make([]procSample, len(l.procs))
		rssMax[j] = make([]int64, len(l.procs))
		for i, p := range l.procs {
			var err error
			if start[j][i], err = readSample(p.pid); err != nil {
				errs[j] = fmt.Errorf("%s %s: %w", p.host, p.name, err)
			}
		}
	}
	t1 := time.Now()
	for time.Since(t1) < window {
		if err := sleepCtx(ctx, min(time.Second, window-time.Since(t1))); err != nil {
			for j := range errs {
				errs[j] = err
			}
			return rows, errs
		}
		for j, l := range labs {
			for i, p := range l.procs {
				rssMax[j][i] = max(rssMax[j][i], readRSS(p.pid))
			}
		}
	}
	elapsed := time.Since(t1)
	for j, l := range labs {
		if errs[j] != nil {
			continue
		}
		rows[j], errs[j] = l.rows(start[j], rssMax[j], elapsed)
	}
	return rows, errs
}

// rows turns one lab's samples into table rows (keepalived: per process
// and the sum per host).
func (l *idleLab) rows(start []procSample, rssMax []int64, elapsed time.Duration) (rows []idleRow, err error) {
	im, e := l.im, l.e
	note := l.note
	for _, d := range e.dirs {
		n := 0
		d.log.mu.Lock()
		for _, ln := range d.log.lines {
			if ln.at.After(l.settledAt) && d.isMaster(ln.text) && d == e.dirs[1] {
				n++
			}
		}
		d.log.mu.Unlock()
		if n > 0 {
			note = joinNote(note, fmt.Sprintf("spurious: d2 became MASTER %d times in the window (load; both directors kept running)", n))
		}
		if _, gone := d.exited(); gone {
			note = joinNote(note, d.name+" exited")
		}
	}
	var sums = map[string]*idleRow{}
	for i, p := range l.procs {
		end, err := readSample(p.pid)
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", p.host, p.name, err)
		}
		r := idleRow{Impl: im.name, Adv: l.adv, Host: p.host, State: p.state, Process: p.name, Window: elapsed.Seconds(),
			CPUSched: float64(end.schedNs-start[i].schedNs) / float64(elapsed.Nanoseconds()) * 100,
			CPUTicks: float64(end.ticks-start[i].ticks) / clockTicks / elapsed.Seconds() * 100,
			Switches: float64(end.switches-start[i].switches) / (float64(elapsed) / float64(l.adv)),
			RSSKiB:   readRSS(p.pid), RSSMaxKiB: rssMax[i], Threads: end.threads, Note: note}
		if end.threads < start[i].threads {
			r.Note = joinNote(r.Note, fmt.Sprintf("threads %d -> %d (schedstat of exited threads is lost)", start[i].threads, end.threads))
		}
		rows = append(rows, r)
		if im.keepalived {
			s := sums[p.host]
			if s == nil {
				s = &idleRow{Impl: im.name, Adv: l.adv, Host: p.host, State: p.state, Process: "sum", Window: r.Window, Note: note}
				sums[p.host] = s
			}
			s.CPUSched += r.CPUSched
			s.CPUTicks += r.CPUTicks
			s.Switches += r.Switches
			s.RSSKiB += r.RSSKiB
			s.RSSMaxKiB += r.RSSMaxKiB
			s.Threads += r.Threads
		}
	}
	for _, h := range []string{"d1", "d2"} {
		if s := sums[h]; s != nil {
			rows = append(rows, *s)
		}
	}
	return rows, nil
}

func joinNote(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}
