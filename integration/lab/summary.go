package lab

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/hadirector/hadirector/integration/lvs"
)

// Sample is one short client request: when it started, how long it took,
// and who answered (or why not).
type Sample struct {
	Start  time.Time
	Took   time.Duration
	Server string
	Err    error
}

// Waits is what the short requests saw around the failover.
type Waits struct {
	Requests, Answered int
	Failed             int            // requests that got no answer at all
	Usual              time.Duration  // the median answer time
	Longest            time.Duration  // the longest any answered request waited
	Outage             time.Duration  // the longest time without an answer, from the kill on
	Failures           map[string]int // failed requests by reason (reset, timeout, ...)
}

// ClientWaits measures the short requests: how long the unluckiest one
// waited, and how long no request at all was answered from the kill on
// (gaps before the kill are the steady rhythm of the requests).
func ClientWaits(samples []Sample, kill time.Time) Waits {
	w := Waits{Requests: len(samples), Failures: map[string]int{}}
	var took []time.Duration
	var ends []time.Time
	for _, s := range samples {
		if s.Err != nil {
			w.Failed++
			w.Failures[lvs.BreakReason(s.Err)]++
			continue
		}
		w.Answered++
		took = append(took, s.Took)
		w.Longest = max(w.Longest, s.Took)
		ends = append(ends, s.Start.Add(s.Took))
	}
	if len(took) > 0 {
		slices.Sort(took)
		w.Usual = took[len(took)/2]
	}
	slices.SortFunc(ends, func(a, b time.Time) int { return a.Compare(b) })
	prev := kill
	for _, e := range ends {
		if e.Before(kill) {
			continue
		}
		w.Outage = max(w.Outage, e.Sub(prev))
		prev = e
	}
	return w
}

// Survival is what the long-lived connections saw.
type Survival struct {
	Conns, Survived int
	Stalled         int            // unbroken, but not shown to work through the new master
	Sent, Answered  int            // numbered lines
	Breaks          map[string]int // broken connections by reason (reset, timeout, ...)
}

// ConnSurvival counts the long-lived connections that survived: they never
// broke (every numbered line they sent was answered, in order, on the same
// connection), and each had at least two more lines answered than it had
// at the failure (answeredAtFail[i], for reports[i]). A stream sends a line
// only when the last one is answered, so the second of those was sent after
// the failure and went through the new master. nil answeredAtFail skips
// that second test (before any failure).
func ConnSurvival(reports []lvs.StreamReport, answeredAtFail []int) Survival {
	s := Survival{Conns: len(reports), Breaks: map[string]int{}}
	for i, r := range reports {
		s.Sent += r.Sent
		s.Answered += r.Answered
		switch {
		case len(r.Breaks) > 0:
			s.Breaks[lvs.BreakReason(r.Breaks[0].Err)]++
		case answeredAtFail != nil && r.Answered < answeredAtFail[i]+2:
			s.Stalled++
		default:
			s.Survived++
		}
	}
	return s
}

// Summary is the outcome of a lab run.
type Summary struct {
	Kind                      Failure // what failed; "" means FailMaster
	MasterBefore, MasterAfter string
	Failed                    string        // what was done
	Takeover                  time.Duration // master: from the kill to the new master's transition
	TakeoverReason            string        // master: the new master's own words
	// Scheduled is, per director, how many new connections its IPVS gave
	// each real server (web service), from the kernel's counters.
	Scheduled map[string]map[string]int
	Directors []string // every director, in order (server, link: each must show the failure)
	// Changes are the VRRP transitions seen from the failure on, for the
	// failures that call for none (server, link): "lb2 MASTER (reason)".
	Changes []string
	Waits   Waits
	// Survival: the long-lived connections that had to survive (server:
	// those to the other real servers).
	Survival Survival
	Server   *ServerOutcome // FailServer
	Link     *LinkOutcome   // FailLink
}

func total(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// Check says why the run does not show what the failure should (nil if
// it does). For the master's failure: the master changed, both directors
// scheduled connections (the first over every real server), short
// requests were answered after the kill, and every long-lived connection
// survived. For a real server's and a heartbeat link's, see checkServer
// and checkLink.
func (s Summary) Check(reals []string) error {
	switch {
	case s.Kind == FailServer && s.Server != nil:
		return s.checkServer()
	case s.Kind == FailLink && s.Link != nil:
		return s.checkLink()
	case s.Kind != "" && s.Kind != FailMaster:
		return fmt.Errorf("no outcome of the %s failure (a bug)", s.Kind)
	}
	var errs []error
	if s.MasterBefore == "" || s.MasterAfter == "" || s.MasterBefore == s.MasterAfter {
		errs = append(errs, fmt.Errorf("the master did not change (before %q, after %q)", s.MasterBefore, s.MasterAfter))
	}
	for _, d := range []string{s.MasterBefore, s.MasterAfter} {
		if d != "" && total(s.Scheduled[d]) == 0 {
			errs = append(errs, fmt.Errorf("director %s scheduled no connection", d))
		}
	}
	if m := s.Scheduled[s.MasterBefore]; total(m) > 0 {
		for _, r := range reals {
			if m[r] == 0 {
				errs = append(errs, fmt.Errorf("director %s sent nothing to %s", s.MasterBefore, r))
			}
		}
	}
	return errors.Join(append(errs, s.checkTraffic()...)...)
}

// checkTraffic: short requests were answered, and every long-lived
// connection that had to survive did.
func (s Summary) checkTraffic() []error {
	var errs []error
	if s.Waits.Answered == 0 {
		errs = append(errs, errors.New("no short request was answered"))
	}
	if s.Survival.Conns == 0 || s.Survival.Survived < s.Survival.Conns {
		errs = append(errs, fmt.Errorf("%d of %d long-lived connections survived", s.Survival.Survived, s.Survival.Conns))
	}
	return errs
}

// checkSameMaster: a failure that is no reason for a failover caused none,
// not even a passing one.
func (s Summary) checkSameMaster() []error {
	var errs []error
	if s.MasterBefore == "" || s.MasterAfter != s.MasterBefore {
		errs = append(errs, fmt.Errorf("a needless failover: the master was %q, then %q", s.MasterBefore, s.MasterAfter))
	}
	if len(s.Changes) > 0 {
		errs = append(errs, fmt.Errorf("needless VRRP transitions: %s", strings.Join(s.Changes, ", ")))
	}
	return errs
}

// printSameMaster is the "master after" line of a failure that calls for
// no failover.
func (s Summary) printSameMaster(p printer, why string) {
	if len(s.Changes) == 0 && s.MasterAfter == s.MasterBefore {
		p("  master after:     %s: no failover, no VRRP transition on either director", s.MasterAfter)
		p("                    (%s)", why)
		return
	}
	p("  master after:     %s; VRRP transitions:", s.MasterAfter)
	timer := false
	for _, c := range s.Changes {
		p("                    %s", c)
		timer = timer || strings.Contains(c, "Master_Down_Interval")
	}
	if timer {
		p("                    (a backup's timer ran out: no advert reached it for 3 intervals while the master")
		p("                    ran; a CPU starved by other work, as an emulated VM's can be, does that too)")
	}
}

func spread(m map[string]int, reals []string) string {
	parts := make([]string, 0, len(reals))
	for _, r := range reals {
		parts = append(parts, fmt.Sprintf("%s %d", r, m[r]))
	}
	return strings.Join(parts, ", ")
}

// byReason is " (reset 9, timeout 1)", or "" for none.
func byReason(m map[string]int) string {
	if len(m) == 0 {
		return ""
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return " (" + strings.Join(parts, ", ") + ")"
}

func ms(d time.Duration) string {
	if d >= time.Second {
		return d.Round(10 * time.Millisecond).String()
	}
	return d.Round(100 * time.Microsecond).String()
}

// Print writes the summary for people, ending with the verdict of Check.
func (s Summary) Print(w io.Writer, reals []string) error {
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	var ok string
	switch {
	case s.Kind == FailServer && s.Server != nil:
		ok = s.printServer(p, reals)
	case s.Kind == FailLink && s.Link != nil:
		ok = s.printLink(p, reals)
	default:
		ok = s.printMaster(p, reals)
	}
	err := s.Check(reals)
	if err != nil {
		p("  RESULT: FAILED: %s", strings.ReplaceAll(err.Error(), "\n", "; "))
		return err
	}
	p("  RESULT: OK: %s", ok)
	return nil
}

type printer func(format string, args ...any)

// printMaster writes the master failover's lines and returns its verdict
// when it works.
func (s Summary) printMaster(p printer, reals []string) string {
	p("== Failover summary")
	p("  master before:    %s", s.MasterBefore)
	p("  failed:           %s", s.Failed)
	p("  master after:     %s, %s after the kill: %s", s.MasterAfter, ms(s.Takeover), s.TakeoverReason)
	s.printServed(p, reals, s.MasterBefore, s.MasterAfter)
	s.printRequests(p)
	if s.Waits.Failures["reset"] > 0 {
		p("                    (a request in flight at the kill, on a connection younger than the sync delay")
		p("                    of a few seconds, is reset: the new master never heard of it)")
	}
	s.printWaited(p, "kill")
	sv := s.Survival
	p("  kept connections: %d of %d survived the failover; %d numbered messages sent, %d answered in order", sv.Survived, sv.Conns, sv.Sent, sv.Answered)
	s.printBroken(p, "no line answered through "+s.MasterAfter+" yet")
	return "both directors served, and every long-lived connection survived the failover"
}

func (s Summary) printServed(p printer, reals []string, directors ...string) {
	for _, d := range directors {
		m := s.Scheduled[d]
		p("  %s served:       %d new connections (%s)", d, total(m), spread(m, reals))
	}
}

func (s Summary) printRequests(p printer) {
	wt := s.Waits
	p("  short requests:   %d sent, %d answered, usually in %s; %d failed%s", wt.Requests, wt.Answered, ms(wt.Usual), wt.Failed, byReason(wt.Failures))
}

func (s Summary) printWaited(p printer, event string) {
	wt := s.Waits
	p("  clients waited:   no answer for at most %s from the %s on; the slowest request took %s", ms(wt.Outage), event, ms(wt.Longest))
}

// printBroken adds the broken and the silent connections to the kept
// ones; silent says what the silent ones lack.
func (s Summary) printBroken(p printer, silent string) {
	sv := s.Survival
	if len(sv.Breaks) > 0 {
		p("                    broken:%s", byReason(sv.Breaks))
	}
	if sv.Stalled > 0 {
		p("                    %d unbroken but silent: %s", sv.Stalled, silent)
	}
}
