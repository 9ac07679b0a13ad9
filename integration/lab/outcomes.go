package lab

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hadirector/hadirector/integration/lvs"
	"github.com/hadirector/hadirector/internal/config"
)

// Failure is what the lab breaks: the master director (the default), a
// real server, or the heartbeat link between the directors.
type Failure string

// The failures.
const (
	FailMaster Failure = "master"
	FailServer Failure = "server"
	FailLink   Failure = "link"
)

// Failures lists them, the default first.
var Failures = []Failure{FailMaster, FailServer, FailLink}

// ParseFailure reads a failure's name; "" is FailMaster.
func ParseFailure(s string) (Failure, error) {
	if s == "" {
		return FailMaster, nil
	}
	for _, f := range Failures {
		if string(f) == s {
			return f, nil
		}
	}
	return "", fmt.Errorf("unknown failure %q (want master, server or link)", s)
}

// CheckFacts is what the cluster file says about a real server's failure
// and return: how it leaves IPVS, and how long its checks may take.
type CheckFacts struct {
	OnFailure config.OnFailure // drain (weight 0) or remove
	Weight    int              // its configured weight, which it gets back
	// Out bounds the time from its death to its removal: the slowest of
	// its checks' fall × interval + timeout. Back bounds its return: rise
	// × interval + timeout.
	Out, Back       time.Duration
	OutHow, BackHow string // "fall 3 × interval 1s + timeout 900ms"
}

// ServerCheckFacts reads the facts about the real server at addr from cfg:
// over every service that has it, the strictest treatment and the longest
// bounds (the lab's two services check it alike).
func ServerCheckFacts(cfg *config.Config, addr string) (CheckFacts, error) {
	var f CheckFacts
	found := false
	for i := range cfg.Services {
		vs := &cfg.Services[i]
		for _, rs := range vs.RealServers {
			if rs.Address.Addr.String() != addr || rs.Check == nil {
				continue
			}
			ck := rs.Check
			found = true
			if f.OnFailure == "" || vs.OnFailure == config.FailRemove {
				f.OnFailure = vs.OnFailure
			}
			f.Weight = max(f.Weight, rs.Weight)
			if d := time.Duration(ck.Fall)*ck.Interval.D() + ck.Timeout.D(); d > f.Out {
				f.Out = d
				f.OutHow = fmt.Sprintf("fall %d × interval %s + timeout %s", ck.Fall, ck.Interval, ck.Timeout)
			}
			if d := time.Duration(ck.Rise)*ck.Interval.D() + ck.Timeout.D(); d > f.Back {
				f.Back = d
				f.BackHow = fmt.Sprintf("rise %d × interval %s + timeout %s", ck.Rise, ck.Interval, ck.Timeout)
			}
		}
	}
	if !found {
		return f, fmt.Errorf("no health-checked real server %s in the cluster file", addr)
	}
	return f, nil
}

// Removal says how a failed real server leaves IPVS.
func (f CheckFacts) Removal() string {
	if f.OnFailure == config.FailRemove {
		return `removed (on_failure = "remove")`
	}
	return fmt.Sprintf("at weight 0 (on_failure = %q)", f.OnFailure)
}

// ServerOutcome is what a real server's failure showed.
type ServerOutcome struct {
	Server string   // the real server killed
	Others []string // those that stayed
	Facts  CheckFacts
	// Out is, per director, the time from the kill until the server was
	// out of every service in its IPVS; Back, from the revival until it
	// was back at its weight in every one. A director missing from a map
	// never got there.
	Out, Back map[string]time.Duration
	// WhileOut and AfterBack are the short requests answered, by server,
	// while it was out on every director and once it was back on every one.
	WhileOut, AfterBack map[string]int
	Lost                Lost // its long-lived connections
}

// Lost is what the long-lived connections to a killed real server saw:
// they break, necessarily, and reconnect to the others.
type Lost struct {
	Conns       int
	Unbroken    int            // should be none
	Breaks      map[string]int // by reason (reset, ...)
	Reconnected int            // answered again on a new connection
	Outage      time.Duration  // the longest from a break to the first answer on a new connection
}

// SplitStreams separates the reports (and their answered-at-failure
// counts) of the connections first scheduled to server from the others.
func SplitStreams(reports []lvs.StreamReport, answeredAtFail []int, server string) (others []lvs.StreamReport, othersAtFail []int, lost []lvs.StreamReport) {
	for i, r := range reports {
		if len(r.Servers) > 0 && r.Servers[0] == server {
			lost = append(lost, r)
			continue
		}
		others = append(others, r)
		if answeredAtFail != nil {
			othersAtFail = append(othersAtFail, answeredAtFail[i])
		}
	}
	return others, othersAtFail, lost
}

// LostConns sums up the connections to a killed server.
func LostConns(reports []lvs.StreamReport) Lost {
	l := Lost{Conns: len(reports), Breaks: map[string]int{}}
	for _, r := range reports {
		if len(r.Breaks) == 0 {
			l.Unbroken++
			continue
		}
		b := r.Breaks[0]
		l.Breaks[lvs.BreakReason(b.Err)]++
		if b.Outage > 0 {
			l.Reconnected++
			l.Outage = max(l.Outage, b.Outage)
		}
	}
	return l
}

// LinkOutcome is what a heartbeat link's failure showed.
type LinkOutcome struct {
	Link, Iface string        // the link and the interface cut (on the master)
	Cut         time.Duration // how long it was cut
	// Down is, per director, the time from the cut until its status showed
	// the link DOWN; Up, from the restore until it showed it up. A
	// director missing from a map never got there.
	Down, Up map[string]time.Duration
	Warnings []string // what the directors logged about it, "lb2: message"
}

// checkServer: no failover, both directors took the server out and
// brought it back, the short requests went only to the others meanwhile
// and to it again after, and every long-lived connection to the others
// survived.
func (s Summary) checkServer() error {
	o := s.Server
	errs := s.checkQuiet(o.Out, "did not take "+o.Server+" out of IPVS", o.Back, "did not bring "+o.Server+" back")
	if n := o.WhileOut[o.Server]; n > 0 {
		errs = append(errs, fmt.Errorf("%d short requests went to %s while it was out", n, o.Server))
	}
	if len(o.Out) == len(s.Directors) && total(o.WhileOut) == 0 {
		errs = append(errs, fmt.Errorf("no short request was answered while %s was out", o.Server))
	}
	if len(o.Back) == len(s.Directors) && o.AfterBack[o.Server] == 0 {
		errs = append(errs, fmt.Errorf("no short request went to %s after it came back", o.Server))
	}
	return errors.Join(append(errs, s.checkTraffic()...)...)
}

// checkLink: no failover and no VRRP transition, both directors saw the
// link go down and come back, and every long-lived connection survived.
func (s Summary) checkLink() error {
	o := s.Link
	errs := s.checkQuiet(o.Down, "never showed link "+o.Link+" DOWN", o.Up, "did not show link "+o.Link+" up again")
	return errors.Join(append(errs, s.checkTraffic()...)...)
}

// checkQuiet: no failover, not even a passing one, and every director got
// through both stages of the failure, away and back (the time it took,
// per director; a director missing from a map never got there, which
// gives an error "director D <what>").
func (s Summary) checkQuiet(away map[string]time.Duration, awayWhat string, back map[string]time.Duration, backWhat string) []error {
	errs := s.checkSameMaster()
	for _, stage := range []struct {
		m    map[string]time.Duration
		what string
	}{{away, awayWhat}, {back, backWhat}} {
		for _, d := range s.Directors {
			if _, ok := stage.m[d]; !ok {
				errs = append(errs, fmt.Errorf("director %s %s", d, stage.what))
			}
		}
	}
	return errs
}

// perDirector is "lb1 after 2.1s, lb2 after 2.2s", with "(late)" past
// bound (0: none) and "never" for a director missing from m.
func perDirector(directors []string, m map[string]time.Duration, bound time.Duration) string {
	parts := make([]string, 0, len(directors))
	for _, d := range directors {
		t, ok := m[d]
		switch {
		case !ok:
			parts = append(parts, d+" never")
		case bound > 0 && t > bound:
			parts = append(parts, fmt.Sprintf("%s after %s (late)", d, ms(t)))
		default:
			parts = append(parts, fmt.Sprintf("%s after %s", d, ms(t)))
		}
	}
	return strings.Join(parts, ", ")
}

func and(names []string) string {
	if len(names) < 2 {
		return strings.Join(names, "")
	}
	return strings.Join(names[:len(names)-1], ", ") + " and " + names[len(names)-1]
}

// printServer writes a real server failure's lines and returns its
// verdict when it works.
func (s Summary) printServer(p printer, reals []string) string {
	o := s.Server
	f := o.Facts
	p("== Real server failure summary")
	p("  master before:    %s", s.MasterBefore)
	p("  failed:           %s", s.Failed)
	s.printSameMaster(p, "a real server's failure is the health checks' business")
	p("  taken out:        %s %s by %s from the kill", o.Server, f.Removal(), perDirector(s.Directors, o.Out, f.Out))
	p("                    (bound: %s = %s)", f.OutHow, ms(f.Out))
	p("  brought back:     %s at weight %d by %s from its revival", o.Server, f.Weight, perDirector(s.Directors, o.Back, f.Back))
	p("                    (bound: %s = %s)", f.BackHow, ms(f.Back))
	s.printServed(p, reals, s.MasterBefore)
	p("  while out:        answers %s", spread(o.WhileOut, reals))
	p("  after its return: answers %s", spread(o.AfterBack, reals))
	s.printRequests(p)
	if s.Waits.Failures["refused"]+s.Waits.Failures["reset"] > 0 {
		p("                    (those in flight to %s at its death are reset; those IPVS gave it after its", o.Server)
		p("                    death, before the checks took it out, are refused by its kernel)")
	}
	s.printWaited(p, "kill")
	sv := s.Survival
	p("  kept connections: %d of %d to %s survived; %d numbered messages sent, %d answered in order", sv.Survived, sv.Conns, and(o.Others), sv.Sent, sv.Answered)
	s.printBroken(p, "no line answered since the kill")
	l := o.Lost
	if l.Conns == 0 {
		p("  lost connections: none: %s held no long-lived connection", o.Server)
	} else {
		p("  lost connections: %d to %s broke%s, as they must: its process died and its kernel reset them;", l.Conns-l.Unbroken, o.Server, byReason(l.Breaks))
		p("                    %d reconnected through the VIP to %s, the slowest %s after its break", l.Reconnected, and(o.Others), ms(l.Outage))
	}
	return fmt.Sprintf("%s left IPVS and came back on both directors, and every long-lived connection to %s survived", o.Server, and(o.Others))
}

// printLink writes a heartbeat link failure's lines and returns its
// verdict when it works.
func (s Summary) printLink(p printer, reals []string) string {
	o := s.Link
	p("== Heartbeat link failure summary")
	p("  master before:    %s", s.MasterBefore)
	p("  failed:           %s", s.Failed)
	s.printSameMaster(p, "the adverts still crossed the front bridge")
	p("  %-18sDOWN on %s from the cut", "link "+o.Link+":", perDirector(s.Directors, o.Down, 0))
	p("                    up again on %s from the restore (cut for %s)", perDirector(s.Directors, o.Up, 0), ms(o.Cut))
	if len(o.Warnings) == 0 {
		p("  warned:           nothing in the directors' logs")
	}
	for i, w := range o.Warnings {
		if i == 0 {
			p("  warned:           %s", w)
		} else {
			p("                    %s", w)
		}
	}
	s.printServed(p, reals, s.MasterBefore)
	s.printRequests(p)
	s.printWaited(p, "cut")
	sv := s.Survival
	p("  kept connections: %d of %d survived the cut; %d numbered messages sent, %d answered in order", sv.Survived, sv.Conns, sv.Sent, sv.Answered)
	s.printBroken(p, "no line answered since the cut")
	return "no failover, both directors saw the link go and come back, and every long-lived connection survived"
}

func (s Summary) kind() Failure {
	if s.Kind == "" {
		return FailMaster
	}
	return s.Kind
}

// didNotCope starts the error of a failure the cluster did not cope with.
func (f Failure) didNotCope() string {
	switch f {
	case FailServer:
		return "the directors did not handle the real server's failure"
	case FailLink:
		return "the directors did not ride out the heartbeat link's failure"
	}
	return "the failover did not work"
}
