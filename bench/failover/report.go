package main

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// stat is min / median / p99 of a sample. p99 is nearest-rank: with fewer
// than 100 values it is the maximum.
type stat struct {
	n             int
	min, med, p99 float64
}

func stats(xs []float64) stat {
	var v []float64
	for _, x := range xs {
		if !math.IsNaN(x) {
			v = append(v, x)
		}
	}
	if len(v) == 0 {
		return stat{min: nan, med: nan, p99: nan}
	}
	slices.Sort(v)
	n := len(v)
	med := v[n/2]
	if n%2 == 0 {
		med = (v[n/2-1] + v[n/2]) / 2
	}
	return stat{n: n, min: v[0], med: med, p99: v[int(math.Ceil(0.99*float64(n)))-1]}
}

func (s stat) ms() string {
	if s.n == 0 {
		return "—"
	}
	return fmt.Sprintf("%s / %s / %s", msf(s.min), msf(s.med), msf(s.p99))
}

func msf(sec float64) string {
	if math.IsNaN(sec) {
		return "—"
	}
	ms := sec * 1e3
	switch {
	case math.Abs(ms) >= 1000:
		return fmt.Sprintf("%.0f", ms)
	default:
		return fmt.Sprintf("%.1f", ms)
	}
}

// cell returns the runs of one table cell.
func (b *bench) cell(im string, adv time.Duration, sc string) (ok []runResult, all int) {
	for _, r := range b.results {
		if r.Impl == im && r.Adv == adv && r.Scenario == sc {
			all++
			if r.OK {
				ok = append(ok, r)
			}
		}
	}
	return ok, all
}

func col(rs []runResult, f func(runResult) float64) stat {
	v := make([]float64, len(rs))
	for i, r := range rs {
		v[i] = f(r)
	}
	return stats(v)
}

// target is the metric each scenario's target is about.
func target(sc string) (string, func(runResult) float64) {
	if sc == scTerm {
		return "handover gap", func(r runResult) float64 { return r.GapHandover }
	}
	return "first answer from d2", func(r runResult) float64 { return r.FirstD2Answer }
}

func (b *bench) report(w io.Writer) {
	for _, adv := range b.intervals {
		md := masterDown(adv, d2Prio)
		fmt.Fprintf(w, "\n== advert interval %s — failover (ms after t0: min / median / p99; p99 is nearest-rank = max when n < 100)\n   handover gap = longest time without an answered connection in [t0, first answer from d2 + 100 ms]\n   wire down-timer = first d2 advert - last d1 advert before it (for +udp the link's 2 ms adverts also restart d2's timer)\n", adv)
		fmt.Fprintf(w, "   RFC 5798 for d2 (priority 100): Master_Down_Interval %s, Skew_Time %s\n",
			md.Round(10*time.Microsecond), skew(adv, d2Prio).Round(10*time.Microsecond))
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "impl\tscenario\tok/n\tfirst answer from d2 [a,b]\thandover gap [c]\tlongest gap t0-0.5s..end\tgap before t0 (noise)\td2 logs MASTER (med)\twire down-timer (med)\tprio-0 advert (med)\told master exits (med)\tVIP left on d1\tstart-up transients")
		for _, im := range b.impls {
			for _, sc := range b.scenariosOf(im) {
				ok, all := b.cell(im.name, adv, sc)
				if all == 0 {
					continue
				}
				left, trans := 0, 0
				for _, r := range ok {
					if r.VIPLeftOnD1 {
						left++
					}
				}
				for _, r := range b.results {
					if r.Impl == im.name && r.Adv == adv && r.Scenario == sc && r.Note != "" {
						trans++
					}
				}
				fmt.Fprintf(tw, "%s\t%s\t%d/%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d/%d\t%d\n", im.name, sc, len(ok), all,
					col(ok, func(r runResult) float64 { return r.FirstD2Answer }).ms(),
					col(ok, func(r runResult) float64 { return r.GapHandover }).ms(),
					col(ok, func(r runResult) float64 { return r.LongestGap }).ms(),
					col(ok, func(r runResult) float64 { return r.GapBeforeT0 }).ms(),
					msf(col(ok, func(r runResult) float64 { return r.D2LogMaster }).med),
					msf(col(ok, func(r runResult) float64 { return r.WireDownTimer }).med),
					msf(col(ok, func(r runResult) float64 { return r.Prio0Advert }).med),
					msf(col(ok, func(r runResult) float64 { return r.OldMasterExit }).med),
					left, len(ok), trans)
			}
		}
		tw.Flush()
		b.reportFailures(w, adv)
		b.reportRatios(w, adv)
		b.reportIdle(w, adv)
	}
	b.reportTargets(w)
}

func (b *bench) reportFailures(w io.Writer, adv time.Duration) {
	var lines []string
	for _, r := range b.results {
		if r.Adv == adv && !r.OK {
			lines = append(lines, fmt.Sprintf("   %s %s #%d: %s", r.Impl, r.Scenario, r.Rep, firstLine(r.Err)))
		}
	}
	if len(lines) > 0 {
		fmt.Fprintf(w, "   failed runs (skipped):\n%s\n", strings.Join(lines, "\n"))
	}
}

func (b *bench) reportRatios(w io.Writer, adv time.Duration) {
	hasK := slices.ContainsFunc(b.impls, func(i impl) bool { return i.keepalived })
	if !hasK {
		return
	}
	var lines []string
	for _, im := range b.impls {
		if im.keepalived {
			continue
		}
		for _, sc := range b.scenariosOf(im) {
			_, f := target(sc)
			hok, _ := b.cell(im.name, adv, sc)
			kok, _ := b.cell("keepalived", adv, sc)
			ref := sc
			if len(kok) == 0 && sc == scNodeloss {
				kok, _ = b.cell("keepalived", adv, scLinkdown)
				ref = scLinkdown
			}
			h, k := col(hok, f), col(kok, f)
			if h.n == 0 || k.n == 0 {
				continue
			}
			lines = append(lines, fmt.Sprintf("   %s/keepalived\t%s\t%s\t%.3f\t%.3f\n", im.name, sc, ref, h.med/k.med, h.p99/k.p99))
		}
	}
	if len(lines) == 0 {
		return
	}
	fmt.Fprintf(w, "\n   ratios to keepalived at %s (target metric: kill, linkdown = first answer from d2; term = handover gap)\n", adv)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "   impl\tscenario\tkeepalived scenario\tmedian ratio\tp99 ratio")
	for _, l := range lines {
		fmt.Fprint(tw, l)
	}
	tw.Flush()
}

var processOrder = map[string]int{"daemon": 0, "parent": 1, "vrrp": 2, "sum": 3}

func (b *bench) idleOf(im string, adv time.Duration) []idleRow {
	var rows []idleRow
	for _, r := range b.idles {
		if r.Impl == im && r.Adv == adv {
			rows = append(rows, r)
		}
	}
	slices.SortStableFunc(rows, func(a, c idleRow) int {
		if a.Host != c.Host {
			return strings.Compare(a.Host, c.Host)
		}
		return processOrder[a.Process] - processOrder[c.Process]
	})
	return rows
}

func (b *bench) reportIdle(w io.Writer, adv time.Duration) {
	if b.idle <= 0 {
		return
	}
	fmt.Fprintf(w, "\n   idle at %s (window %s after settling >= 7 s; CPU in %% of one CPU)\n", adv, b.idle)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "   impl\thost\tstate\tprocess\tCPU % (schedstat)\tCPU % (ticks)\tswitches/advert\tRSS MiB (end)\tRSS MiB (max)\tthreads\tnote")
	for _, im := range b.impls {
		if e, ok := b.idleErr[im.name+"/"+adv.String()]; ok {
			fmt.Fprintf(tw, "   %s\tFAILED: %s\n", im.name, firstLine(e))
			continue
		}
		for _, r := range b.idleOf(im.name, adv) {
			fmt.Fprintf(tw, "   %s\t%s\t%s\t%s\t%.4f\t%.3f\t%.2f\t%.1f\t%.1f\t%d\t%s\n", r.Impl, r.Host, r.State, r.Process, r.CPUSched, r.CPUTicks, r.Switches,
				float64(r.RSSKiB)/1024, float64(r.RSSMaxKiB)/1024, r.Threads, r.Note)
		}
	}
	tw.Flush()
}

// idleTotal returns the whole-node row (hadirector: the daemon;
// keepalived: the sum) of host.
func (b *bench) idleTotal(im string, adv time.Duration, host string) (idleRow, bool) {
	for _, r := range b.idleOf(im, adv) {
		if r.Host == host && (r.Process == "daemon" || r.Process == "sum") {
			return r, true
		}
	}
	return idleRow{}, false
}

func verdict(ok bool) string {
	if ok {
		return "MET"
	}
	return "NOT MET"
}

func (b *bench) reportTargets(w io.Writer) {
	fmt.Fprintf(w, "\n== Targets (issue 3), hadirector as measured in this run\n")
	has := func(name string) bool {
		return slices.ContainsFunc(b.impls, func(i impl) bool { return i.name == name })
	}
	for _, adv := range b.intervals {
		fmt.Fprintf(w, "-- advert interval %s\n", adv)
		// (a)
		for _, im := range []string{"hadirector", "hadirector+udp"} {
			if ok, _ := b.cell(im, adv, scKill); len(ok) > 0 {
				s := col(ok, func(r runResult) float64 { return r.FirstD2Answer })
				fmt.Fprintf(w, "(a) %s: kill -> VIP answered by the backup, p99 < 5 ms: %s (p99 %s ms, median %s ms, n=%d)\n", im, verdict(s.p99 < 0.005), msf(s.p99), msf(s.med), s.n)
			}
		}
		// (b)
		if ok, _ := b.cell("hadirector", adv, scLinkdown); len(ok) > 0 {
			h := col(ok, func(r runResult) float64 { return r.FirstD2Answer })
			if kok, _ := b.cell("keepalived", adv, scLinkdown); len(kok) > 0 {
				k := col(kok, func(r runResult) float64 { return r.FirstD2Answer })
				fmt.Fprintf(w, "(b) linkdown, no worse than keepalived (median and p99): %s (hadirector %s / %s ms, keepalived %s / %s ms)\n",
					verdict(h.med <= k.med && h.p99 <= k.p99), msf(h.med), msf(h.p99), msf(k.med), msf(k.p99))
			} else {
				fmt.Fprintf(w, "(b) linkdown vs keepalived: no keepalived data (hadirector median %s, p99 %s ms)\n", msf(h.med), msf(h.p99))
			}
		}
		for _, sc := range []string{scLinkdown, scNodeloss} {
			if ok, _ := b.cell("hadirector+udp", adv, sc); len(ok) > 0 {
				h := col(ok, func(r runResult) float64 { return r.FirstD2Answer })
				fmt.Fprintf(w, "(b) %s with the 2 ms UDP heartbeat link, p99 < 15 ms: %s (p99 %s ms, median %s ms, n=%d)\n", sc, verdict(h.p99 < 0.015), msf(h.p99), msf(h.med), h.n)
			}
		}
		// (c)
		if ok, _ := b.cell("hadirector", adv, scTerm); len(ok) > 0 {
			s := col(ok, func(r runResult) float64 { return r.GapHandover })
			l := col(ok, func(r runResult) float64 { return r.LongestGap })
			nz := col(ok, func(r runResult) float64 { return r.GapBeforeT0 })
			fmt.Fprintf(w, "(c) term -> longest client outage (handover window), p99 < 5 ms: %s (p99 %s ms, median %s ms, n=%d; baseline window t0-0.5s..end: p99 %s ms; noise floor before t0: median %s, max %s ms)\n",
				verdict(s.p99 < 0.005), msf(s.p99), msf(s.med), s.n, msf(l.p99), msf(nz.med), msf(nz.p99))
		}
		// (d)
		if b.idle > 0 && has("hadirector") {
			for _, host := range []string{"d1", "d2"} {
				h, okh := b.idleTotal("hadirector", adv, host)
				if !okh {
					continue
				}
				rss := fmt.Sprintf("RSS %.1f MiB < 30 MiB: %s", float64(h.RSSMaxKiB)/1024, verdict(h.RSSMaxKiB < 30*1024))
				if k, okk := b.idleTotal("keepalived", adv, host); okk {
					fmt.Fprintf(w, "(d) idle %s (%s): CPU %.4f %% vs keepalived %.4f %% (parent+VRRP child): %s; %s\n", h.State, host, h.CPUSched, k.CPUSched, verdict(h.CPUSched <= k.CPUSched), rss)
				} else {
					fmt.Fprintf(w, "(d) idle %s (%s): CPU %.4f %% (no keepalived data); %s\n", h.State, host, h.CPUSched, rss)
				}
			}
		}
	}
}
