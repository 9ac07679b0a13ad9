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
// cross-check) and VmRSS of master and backup over a window.

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
	RSSKiB    int64 // at the end of the window
	RSSMaxKiB int64
	Threads   int
	Note      string
}

type procSample struct {
	schedNs int64
	ticks   int64
	threads int
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
	dir := filepath.Join(b.out, "idle", fmt.Sprintf("%s-%s", im.name, advLabel(adv)))
	e, err := newEnv(b, im, adv, dir, false)
	if err != nil {
		return nil, fmt.Errorf("lab: %w", err)
	}
	defer func() {
		if cerr := e.close(); cerr != nil && err == nil {
			err = fmt.Errorf("teardown: %w", cerr)
		}
	}()
	if err := e.startDirectors(ctx); err != nil {
		return nil, err
	}
	// Past the second gratuitous-ARP burst (5 s), as the baseline (>= 7 s).
	settledAt, settleNote, err := e.waitSettled(ctx, max(7*time.Second, 2*md))
	if err != nil {
		return nil, err
	}
	type proc struct {
		host, state, name string
		pid               int
	}
	var procs []proc
	for i, d := range e.dirs {
		state := "MASTER"
		if i == 1 {
			state = "BACKUP"
		}
		p := d.pids()
		if im.keepalived {
			procs = append(procs, proc{d.name, state, "parent", p[0]}, proc{d.name, state, "vrrp", p[1]})
		} else {
			procs = append(procs, proc{d.name, state, "daemon", p[0]})
		}
	}
	start := make([]procSample, len(procs))
	rssMax := make([]int64, len(procs))
	for i, p := range procs {
		if start[i], err = readSample(p.pid); err != nil {
			return nil, fmt.Errorf("%s %s: %w", p.host, p.name, err)
		}
	}
	t1 := time.Now()
	for time.Since(t1) < window {
		if err := sleepCtx(ctx, min(time.Second, window-time.Since(t1))); err != nil {
			return nil, err
		}
		for i, p := range procs {
			rssMax[i] = max(rssMax[i], readRSS(p.pid))
		}
	}
	elapsed := time.Since(t1)
	note := settleNote
	for _, d := range e.dirs {
		n := 0
		d.log.mu.Lock()
		for _, l := range d.log.lines {
			if l.at.After(settledAt) && d.isMaster(l.text) && d == e.dirs[1] {
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
	for i, p := range procs {
		end, err := readSample(p.pid)
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", p.host, p.name, err)
		}
		r := idleRow{Impl: im.name, Adv: adv, Host: p.host, State: p.state, Process: p.name, Window: elapsed.Seconds(),
			CPUSched: float64(end.schedNs-start[i].schedNs) / float64(elapsed.Nanoseconds()) * 100,
			CPUTicks: float64(end.ticks-start[i].ticks) / clockTicks / elapsed.Seconds() * 100,
			RSSKiB:   readRSS(p.pid), RSSMaxKiB: rssMax[i], Threads: end.threads, Note: note}
		if end.threads < start[i].threads {
			r.Note = joinNote(r.Note, fmt.Sprintf("threads %d -> %d (schedstat of exited threads is lost)", start[i].threads, end.threads))
		}
		rows = append(rows, r)
		if im.keepalived {
			s := sums[p.host]
			if s == nil {
				s = &idleRow{Impl: im.name, Adv: adv, Host: p.host, State: p.state, Process: "sum", Window: r.Window, Note: note}
				sums[p.host] = s
			}
			s.CPUSched += r.CPUSched
			s.CPUTicks += r.CPUTicks
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
