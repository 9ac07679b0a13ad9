package main

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Scenarios.
const (
	scKill     = "kill"
	scLinkdown = "linkdown"
	scTerm     = "term"
	// scNodeloss is node loss with nothing escaping: every interface of d1
	// down first (eth0, and the heartbeat cable eth1), then SIGKILL. In
	// linkdown (the baseline's order) d1's kernel is still alive for a few
	// ms after the kill and on the heartbeat cable for good, so it can tell
	// the peer that the process died (TCP FIN); a dead node cannot.
	scNodeloss = "nodeloss"
)

var nan = math.NaN()

// runResult is one failover run. Times are seconds relative to t0; NaN
// means not applicable / not seen.
type runResult struct {
	Impl     string
	Adv      time.Duration
	Scenario string
	Rep      int
	OK       bool
	Err      string
	Note     string // start-up transients

	T0               time.Time
	Delay            float64 // client start -> t0
	SinceLastD1Adv   float64 // t0 - last d1 advert before t0 (phase in the advert cycle)
	FirstD2Answer    float64 // (a)/(b)
	LongestGap       float64 // (c): window t0-0.5 s ... end, as the baseline
	GapBeforeT0      float64 // window t0-0.5 s ... t0: the noise floor
	GapAfterT0       float64 // window t0 ... end
	GapHandover      float64 // window t0 ... first answer from d2 + 100 ms: the outage the failover causes
	GapStart         float64 // where the longest gap began
	LastD1Answer     float64
	D2LogMaster      float64
	FirstD2Advert    float64
	FirstD2ARP       float64
	WireDownTimer    float64 // first d2 advert - last d1 advert before it (kill/linkdown)
	Prio0Advert      float64 // first priority-0 advert from d1 (term)
	D1AdvertsAfterT0 int
	LinkDown         float64 // eth0 down done (linkdown)
	OldMasterExit    float64 // d1's daemon (keepalived: parent) reaped
	VIPLeftOnD1      bool
	VIPOnD2          bool
	Conns, Answered  int
	Timeouts         int
	Refused          int
	OtherErr         int
	ClientMaxStart   float64 // longest pause between two connection starts (client stall check)
	BenchLate        float64 // how late the bench delivered t0 (its own scheduling: a stall check)
	Load1            float64 // 1-minute load average at t0 (other work on the machine)
}

// oneRun is a whole failover run in a fresh lab.
func (b *bench) oneRun(ctx context.Context, im impl, adv time.Duration, scenario string, rep int) (res runResult) {
	res = runResult{Impl: im.name, Adv: adv, Scenario: scenario, Rep: rep,
		Delay: nan, SinceLastD1Adv: nan, FirstD2Answer: nan, LongestGap: nan, GapBeforeT0: nan, GapAfterT0: nan, GapHandover: nan, GapStart: nan, LastD1Answer: nan,
		D2LogMaster: nan, FirstD2Advert: nan, FirstD2ARP: nan, WireDownTimer: nan, Prio0Advert: nan, LinkDown: nan,
		OldMasterExit: nan, ClientMaxStart: nan, BenchLate: nan, Load1: nan}
	md := masterDown(adv, d2Prio)
	ctx, cancel := context.WithTimeout(ctx, 40*time.Second+12*md)
	defer cancel()
	defer func() {
		if r := recover(); r != nil {
			res.OK, res.Err = false, fmt.Sprintf("panic: %v", r)
		}
	}()
	dir := filepath.Join(b.out, "runs", fmt.Sprintf("%s-%s-%s-%02d", im.name, advLabel(adv), scenario, rep))
	e, err := newEnv(b, im, adv, dir, true)
	if err != nil {
		res.Err = "lab: " + err.Error()
		return res
	}
	defer func() {
		if err := e.close(); err != nil && res.Err == "" {
			res.Err = "teardown: " + err.Error()
		}
	}()
	if err := b.measure(ctx, e, scenario, &res); err != nil {
		res.OK, res.Err = false, err.Error()
		return res
	}
	return res
}

func (b *bench) measure(ctx context.Context, e *env, scenario string, res *runResult) error {
	adv := e.adv
	md := masterDown(adv, d2Prio)
	if err := e.startDirectors(ctx); err != nil {
		return fmt.Errorf("start: %w", err)
	}
	settledAt, note, err := e.waitSettled(ctx, max(2*md, 500*time.Millisecond))
	if err != nil {
		return err
	}
	res.Note = note
	sn, err := startSniffer(e.cl, e.clIface.Index(), vrid, vip4)
	if err != nil {
		return err
	}
	snStopped := false
	defer func() {
		if !snStopped {
			sn.Stop()
		}
	}()
	// The client reaches d1 through the VIP before the probe starts.
	wctx, wcancel := context.WithTimeout(ctx, 3*time.Second)
	who, err := askVIP(wctx, e.cl)
	wcancel()
	if err != nil || who != "d1" {
		return fmt.Errorf("VIP before t0: answered by %q, err %v (want d1)", who, err)
	}
	d1 := e.dirs[0]
	pids := d1.pids() // keepalived: parent, VRRP child

	// No garbage collection while the probe runs: a stop-the-world whose
	// initiator (an ordinary thread) is descheduled would stall the probe's
	// thread too, whatever its priority. The window allocates little.
	runtime.GC()
	defer debug.SetGCPercent(debug.SetGCPercent(-1))

	base := time.Now()
	pr := startProber(e.cl, vip4, base, b.rt)
	prStopped := false
	defer func() {
		if !prStopped {
			pr.Stop()
		}
	}()
	delay := 700*time.Millisecond + time.Duration(rand.Int64N(int64(min(adv, time.Second))))
	if err := sleepCtx(ctx, delay); err != nil {
		return err
	}

	// t0: the signal.
	var t0 time.Time
	var sigErr error
	kill := func() {
		// keepalived: the VRRP child, then the parent, back to back.
		for i := len(pids) - 1; i >= 0; i-- {
			if err := syscall.Kill(pids[i], syscall.SIGKILL); err != nil {
				sigErr = err
			}
		}
	}
	linksDown := func(names ...string) {
		for _, n := range names {
			link, err := e.d1.Netlink().LinkByName(n)
			if err == nil {
				err = e.d1.Netlink().LinkSetDown(link)
			}
			if err != nil {
				sigErr = fmt.Errorf("%s down: %w", n, err)
			}
		}
		res.LinkDown = time.Since(t0).Seconds()
	}
	switch scenario {
	case scKill:
		t0 = time.Now()
		kill()
	case scLinkdown:
		t0 = time.Now()
		kill()
		linksDown("eth0")
	case scNodeloss:
		t0 = time.Now()
		if e.impl.udp {
			linksDown("eth0", "eth1")
		} else {
			linksDown("eth0")
		}
		kill()
	case scTerm:
		t0 = time.Now()
		sigErr = syscall.Kill(pids[0], syscall.SIGTERM)
	}
	res.T0 = t0
	res.Delay = t0.Sub(base).Seconds()
	res.BenchLate = (t0.Sub(base) - delay).Seconds()
	res.Load1 = loadavg1()
	if late := t0.Sub(base) - delay; late > 20*time.Millisecond {
		res.Note = joinNote(res.Note, fmt.Sprintf("the bench itself ran %s late at t0 (machine stall?)", late.Round(time.Millisecond)))
	}
	if sigErr != nil {
		return fmt.Errorf("at t0: %w", sigErr)
	}
	if err := sleepCtx(ctx, time.Until(t0.Add(postWindow(adv, scenario)))); err != nil {
		return err
	}
	stopAt := time.Since(base)
	recs, perr := pr.Stop()
	prStopped = true
	events := sn.Stop()
	snStopped = true
	if perr != nil {
		return fmt.Errorf("client: %w", perr)
	}
	res.VIPLeftOnD1, _ = hasVIP(e.d1)
	res.VIPOnD2, _ = hasVIP(e.d2)
	if at, ok := d1.exited(); ok {
		res.OldMasterExit = at.Sub(t0).Seconds()
	}
	if at, _, ok := e.dirs[1].log.find(settledAt, e.dirs[1].isMaster); ok {
		res.D2LogMaster = at.Sub(t0).Seconds()
	}
	analyze(res, recs, events, base, t0, stopAt, e)
	if b.trace {
		writeTrace(e.dir, recs, events, base, t0, e)
	}

	// A stalled instrument measures the machine, not the failover.
	const stall = 50 * time.Millisecond
	switch {
	case res.ClientMaxStart > stall.Seconds():
		return fmt.Errorf("void: the client stalled %.0f ms (no connection started); the machine was starved", res.ClientMaxStart*1e3)
	case res.BenchLate > stall.Seconds():
		return fmt.Errorf("void: the bench delivered t0 %.0f ms late; the machine was starved", res.BenchLate*1e3)
	case res.D2LogMaster < 0:
		return fmt.Errorf("d2 logged MASTER %.1f ms before t0 (spurious election)", -res.D2LogMaster*1e3)
	case math.IsNaN(res.FirstD2Answer):
		return fmt.Errorf("no answer from d2 within %s after t0 (d2 MASTER at %.1f ms, VIP on d2: %v)", postWindow(adv, scenario), res.D2LogMaster*1e3, res.VIPOnD2)
	case res.FirstD2Answer < 0:
		return fmt.Errorf("d2 answered %.1f ms before t0 (spurious election)", -res.FirstD2Answer*1e3)
	}
	res.OK = true
	return nil
}

// analyze derives the metrics from the client's records and the capture.
func analyze(res *runResult, recs []connRec, events []pktEvent, base, t0 time.Time, stopAt time.Duration, e *env) {
	t0off := t0.Sub(base)
	rel := func(d time.Duration) float64 { return (d - t0off).Seconds() }
	winStart := t0off - 500*time.Millisecond

	var ends []time.Duration
	first := true
	var prevStart time.Duration
	maxStart := time.Duration(0)
	for _, r := range recs {
		if r.start >= winStart {
			res.Conns++
			if !first {
				maxStart = max(maxStart, r.start-prevStart)
			}
			first = false
			prevStart = r.start
			switch r.how {
			case endTimeout:
				res.Timeouts++
			case endRefused:
				res.Refused++
			case endOK:
			case endCancel:
			default:
				res.OtherErr++
			}
		}
		if r.how != endOK {
			continue
		}
		if r.start >= winStart {
			res.Answered++
		}
		switch r.who {
		case whoD2:
			if x := rel(r.end); math.IsNaN(res.FirstD2Answer) || x < res.FirstD2Answer {
				res.FirstD2Answer = x
			}
		case whoD1:
			if x := rel(r.end); math.IsNaN(res.LastD1Answer) || x > res.LastD1Answer {
				res.LastD1Answer = x
			}
		}
		ends = append(ends, r.end)
	}
	res.ClientMaxStart = maxStart.Seconds()
	slices.Sort(ends)
	// The baseline's window (t0-0.5 s ... end); and the parts before t0
	// (the noise floor of this machine and harness) and after it.
	if g, at, ok := longestGap(ends, winStart, stopAt); ok {
		res.LongestGap, res.GapStart = g.Seconds(), rel(at)
	}
	if g, _, ok := longestGap(ends, winStart, t0off); ok {
		res.GapBeforeT0 = g.Seconds()
	}
	if g, _, ok := longestGap(ends, t0off, stopAt); ok {
		res.GapAfterT0 = g.Seconds()
	}
	if !math.IsNaN(res.FirstD2Answer) {
		to := min(t0off+time.Duration(res.FirstD2Answer*1e9)+handoverTail, stopAt)
		if g, _, ok := longestGap(ends, t0off, to); ok {
			res.GapHandover = g.Seconds()
		}
	}

	// The capture (CLOCK_REALTIME).
	t0n := t0.UnixNano()
	sec := func(ns int64) float64 { return float64(ns-t0n) / 1e9 }
	var lastD1Before int64
	for _, ev := range events {
		switch ev.kind {
		case pktAdvert:
			switch ev.src {
			case d1IP4:
				if ev.at <= t0n && ev.prio > 0 {
					lastD1Before = max(lastD1Before, ev.at)
				}
				if ev.at > t0n {
					res.D1AdvertsAfterT0++
					if ev.prio == 0 && math.IsNaN(res.Prio0Advert) {
						res.Prio0Advert = sec(ev.at)
					}
				}
			case d2IP4:
				if ev.at > t0n && ev.prio > 0 && math.IsNaN(res.FirstD2Advert) {
					res.FirstD2Advert = sec(ev.at)
				}
			}
		case pktARP:
			if ev.mac == e.d2MAC && ev.at > t0n && math.IsNaN(res.FirstD2ARP) {
				res.FirstD2ARP = sec(ev.at)
			}
		}
	}
	if lastD1Before > 0 {
		res.SinceLastD1Adv = float64(t0n-lastD1Before) / 1e9
	}
	if res.Scenario != scTerm && !math.IsNaN(res.FirstD2Advert) {
		// The effective Master_Down_Interval: last d1 advert before the
		// first d2 advert.
		firstD2 := t0n + int64(res.FirstD2Advert*1e9)
		var last int64
		for _, ev := range events {
			if ev.kind == pktAdvert && ev.src == d1IP4 && ev.at < firstD2 {
				last = max(last, ev.at)
			}
		}
		if last > 0 {
			res.WireDownTimer = float64(firstD2-last) / 1e9
		}
	}
}

func advLabel(d time.Duration) string { return d.String() }

// postWindow is how long the client keeps probing after t0: past the
// backup's Master_Down_Interval (or, for a graceful stop, its Skew_Time and
// a stopping master's handover bound) plus a margin.
func postWindow(adv time.Duration, scenario string) time.Duration {
	if scenario == scTerm {
		return skew(adv, d2Prio) + max(2*adv, 100*time.Millisecond) + 500*time.Millisecond
	}
	return masterDown(adv, d2Prio) + time.Second
}

// handoverTail is how long after the first answer from d2 the handover
// window runs: it covers a stopping hadirector master's release of the VIP
// (20 ms after the successor's first advert).
const handoverTail = 100 * time.Millisecond

// longestGap is the longest time between consecutive answers (sorted ends)
// within [from, to]; the last answer before from and the end to count as
// points too, so that an outage running into the window or to its end is
// measured whole up to the window's edge.
func longestGap(ends []time.Duration, from, to time.Duration) (gap, at time.Duration, ok bool) {
	i, _ := slices.BinarySearch(ends, from)
	prev := from
	if i > 0 {
		prev = ends[i-1]
	}
	for ; i < len(ends) && ends[i] <= to; i++ {
		if g := ends[i] - prev; g > gap {
			gap, at = g, prev
		}
		prev = ends[i]
		ok = true
	}
	if g := to - prev; g > gap {
		gap, at = g, prev
	}
	return gap, at, true
}

var whoNames = [...]string{whoNone: "", whoD1: "d1", whoD2: "d2", whoOther: "?"}
var howNames = [...]string{endOK: "ok", endTimeout: "timeout", endRefused: "refused", endEOF: "eof", endError: "error", endCancel: "cancel"}

// writeTrace writes the run's raw client records and capture, in ms
// relative to t0, next to its logs.
func writeTrace(dir string, recs []connRec, events []pktEvent, base, t0 time.Time, e *env) {
	t0off := t0.Sub(base)
	var sb strings.Builder
	sb.WriteString("start_ms,end_ms,who,result\n")
	for _, r := range recs {
		fmt.Fprintf(&sb, "%.3f,%.3f,%s,%s\n", float64(r.start-t0off)/1e6, float64(r.end-t0off)/1e6, whoNames[r.who], howNames[r.how])
	}
	os.WriteFile(filepath.Join(dir, "conns.csv"), []byte(sb.String()), 0o644)
	sb.Reset()
	sb.WriteString("t_ms,kind,from,priority\n")
	t0n := t0.UnixNano()
	for _, ev := range events {
		switch ev.kind {
		case pktAdvert:
			fmt.Fprintf(&sb, "%.3f,advert,%s,%d\n", float64(ev.at-t0n)/1e6, netip.AddrFrom4(ev.src), ev.prio)
		case pktARP:
			from := net.HardwareAddr(ev.mac[:]).String()
			switch ev.mac {
			case e.d1MAC:
				from = "d1"
			case e.d2MAC:
				from = "d2"
			}
			fmt.Fprintf(&sb, "%.3f,arp-vip,%s,\n", float64(ev.at-t0n)/1e6, from)
		}
	}
	os.WriteFile(filepath.Join(dir, "packets.csv"), []byte(sb.String()), 0o644)
}

func loadavg1() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return nan
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return nan
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return nan
	}
	return v
}
