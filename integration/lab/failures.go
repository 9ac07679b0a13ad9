package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hadirector/hadirector/integration/lvs"
	"github.com/hadirector/hadirector/integration/netlab"
	"github.com/hadirector/hadirector/internal/control"
)

// pollEvery is how often the lab looks at the directors while it waits
// for them to react to a failure; pollSlack is how long past the config's
// bound it waits before it gives up.
const (
	pollEvery = 50 * time.Millisecond
	pollSlack = 10 * time.Second
)

// failServer kills a real server's process (rs2) while the traffic runs:
// the health checks take it out of both directors' IPVS (the master's
// verdicts, which the backup programs too), the requests go to the
// others, its long-lived connections break and reconnect to the others;
// then it is revived and comes back.
func (l *Lab) failServer(ctx context.Context, out io.Writer) (*Summary, error) {
	b := l.bed
	reals := b.RealNames()
	victim := reals[len(reals)/2]
	others := slices.DeleteFunc(slices.Clone(reals), func(r string) bool { return r == victim })
	addr, _ := b.ServerAddr(victim)
	facts, err := ServerCheckFacts(l.cfg, addr.String())
	if err != nil {
		return nil, err
	}
	q, err := l.quietStart(ctx)
	if err != nil {
		return nil, err
	}
	master := q.master
	srv := b.Servers[victim]
	held := srv.Conns()
	atFail := l.answered()
	kill := time.Now()
	srv.Kill()
	failed := fmt.Sprintf("%s: its server process killed (listeners closed, its %d open connections reset)", victim, held)
	say(out, "The failure: %s.", failed)

	outT, err := l.pollDirectors(ctx, kill, facts.Out+pollSlack, func(lb *netlab.Node) (time.Time, bool) {
		return time.Time{}, l.realWeightIs(lb, addr, func(w int, in bool) bool { return !in || w == 0 })
	})
	if err != nil {
		return nil, err
	}
	say(out, "The health checks took %s out of both directors' IPVS, %s: %s from the kill (bound: %s = %s).",
		victim, facts.Removal(), perDirector(l.names(), outT, facts.Out), facts.OutHow, ms(facts.Out))
	outAt := time.Now()
	if len(outT) == len(b.LBs) {
		outAt = kill.Add(slices.Max(durations(outT)))
	}
	if err := sleep(ctx, l.o.Phase/2); err != nil {
		return nil, err
	}
	if err := l.settle(ctx, atFail); err != nil {
		return nil, err
	}
	revive := time.Now()
	whileOut := tally(between(l.pr.since(outAt), outAt, revive))
	say(out, "Answers in %s with %s out, through %s: %s", revive.Sub(outAt).Round(100*time.Millisecond), victim, master, spread(whileOut, reals))
	fmt.Fprintf(out, "\n# %s, the backup, programs the master's verdicts; its own probes (HEALTH) see %s down too.", b.LBs[1].Name(), victim)
	if err := printStatus(ctx, out, l.o.Self, l.daemons[b.LBs[1].Name()]); err != nil {
		return nil, err
	}

	revive = time.Now()
	if err := srv.Revive(); err != nil {
		return nil, err
	}
	say(out, "%s revived: its server listens again.", victim)
	backT, err := l.pollDirectors(ctx, revive, facts.Back+pollSlack, func(lb *netlab.Node) (time.Time, bool) {
		return time.Time{}, l.realWeightIs(lb, addr, func(w int, in bool) bool { return in && w == facts.Weight })
	})
	if err != nil {
		return nil, err
	}
	say(out, "The health checks brought %s back at weight %d in both directors' IPVS: %s from the revival (bound: %s = %s).",
		victim, facts.Weight, perDirector(l.names(), backT, facts.Back), facts.BackHow, ms(facts.Back))
	backAt := time.Now()
	if len(backT) == len(b.LBs) {
		backAt = revive.Add(slices.Max(durations(backT)))
	}
	if err := sleep(ctx, l.o.Phase/2); err != nil {
		return nil, err
	}
	afterBack := tally(l.pr.since(backAt))
	say(out, "Answers in %s since its return: %s", time.Since(backAt).Round(100*time.Millisecond), spread(afterBack, reals))
	sum, reports, err := l.quietEnd(ctx, q, "kill", kill)
	if err != nil {
		return nil, err
	}
	kept, keptAt, lost := SplitStreams(reports, atFail, victim)
	sayBroken(out, kept, "kill", kill)
	sum.Kind, sum.MasterBefore, sum.Failed = FailServer, master, failed
	sum.Survival = ConnSurvival(kept, keptAt)
	sum.Server = &ServerOutcome{
		Server: victim, Others: others, Facts: facts,
		Out: outT, Back: backT,
		WhileOut: whileOut, AfterBack: afterBack,
		Lost: LostConns(lost),
	}
	return sum, nil
}

// failLink cuts the master's end of the heartbeat cable while both
// directors run: the link goes DOWN on both, they warn, and nothing else
// happens (VRRP on the front bridge still carries the adverts); then the
// cable is restored and the link comes back up.
func (l *Lab) failLink(ctx context.Context, out io.Writer) (*Summary, error) {
	if len(l.cfg.Links) == 0 {
		return nil, errors.New("the cluster file has no heartbeat link to cut")
	}
	link := l.cfg.Links[0]
	q, err := l.quietStart(ctx)
	if err != nil {
		return nil, err
	}
	master := q.master
	node := l.bed.LBs[0]
	if master != "" && l.bed.Node(master) != nil {
		node = l.bed.Node(master)
	}
	atFail := l.answered()
	cut := time.Now()
	if err := lvs.SetLinkUp(node, link.Interface, false); err != nil {
		return nil, err
	}
	failed := fmt.Sprintf("link %s: %s's end of the cable (%s) cut, both directors running", link.Name, node.Name(), link.Interface)
	say(out, "The failure: %s.", failed)
	linkIs := func(up bool) func(*netlab.Node) (time.Time, bool) {
		return func(lb *netlab.Node) (time.Time, bool) {
			st, err := l.daemons[lb.Name()].Status(ctx)
			if err != nil {
				return time.Time{}, false
			}
			for _, ls := range st.Links {
				if ls.Name == link.Name {
					return ls.Since, ls.Up == up
				}
			}
			return time.Time{}, false
		}
	}
	down, err := l.pollDirectors(ctx, cut, pollSlack, linkIs(false))
	if err != nil {
		return nil, err
	}
	say(out, "Link %s went DOWN on %s from the cut (3 heartbeats of %s missed).", link.Name, perDirector(l.names(), down, 0), link.Interval)
	if err := sleep(ctx, l.o.Phase); err != nil {
		return nil, err
	}
	say(out, "Answers in %s with the link cut, through %s: %s", time.Since(cut).Round(100*time.Millisecond), master, spread(tally(l.pr.since(cut)), l.bed.RealNames()))
	say(out, "Roles: %s", l.roles(ctx))
	if err := printStatus(ctx, out, l.o.Self, l.daemons[l.bed.LBs[1].Name()]); err != nil {
		return nil, err
	}
	restore := time.Now()
	if err := lvs.SetLinkUp(node, link.Interface, true); err != nil {
		return nil, err
	}
	up, err := l.pollDirectors(ctx, restore, pollSlack, linkIs(true))
	if err != nil {
		return nil, err
	}
	say(out, "Cable restored: link %s came up again on %s from the restore.", link.Name, perDirector(l.names(), up, 0))
	if err := l.settle(ctx, atFail); err != nil {
		return nil, err
	}
	var warnings []string
	for _, name := range l.names() {
		for _, w := range LogWarnings(l.logSince(q, name)) {
			warnings = append(warnings, name+": "+w)
		}
	}
	sum, reports, err := l.quietEnd(ctx, q, "cut", cut)
	if err != nil {
		return nil, err
	}
	sayBroken(out, reports, "cut", cut)
	sum.Kind, sum.MasterBefore, sum.Failed = FailLink, master, failed
	sum.Survival = ConnSurvival(reports, atFail)
	sum.Link = &LinkOutcome{
		Link: link.Name, Iface: link.Interface, Cut: restore.Sub(cut),
		Down: down, Up: up, Warnings: warnings,
	}
	return sum, nil
}

// quiet is what the lab notes before a failure that calls for no
// failover: who is master, each director's last VRRP transition and how
// far its log goes.
type quiet struct {
	master  string
	before  map[string]time.Time
	logFrom map[string]int
}

func (l *Lab) quietStart(ctx context.Context) (quiet, error) {
	q := quiet{master: l.master(ctx), logFrom: map[string]int{}}
	for name, d := range l.daemons {
		q.logFrom[name] = len(d.Output())
	}
	var err error
	q.before, err = l.transitions(ctx)
	return q, err
}

// logSince is what the director logged since quietStart.
func (l *Lab) logSince(q quiet, name string) string {
	return l.daemons[name].Output()[q.logFrom[name]:]
}

// quietEnd ends such a failure: it starts the summary with the VRRP
// transitions since quietStart and who is master now, stops the traffic
// and returns the long-lived connections' reports.
func (l *Lab) quietEnd(ctx context.Context, q quiet, event string, at time.Time) (*Summary, []lvs.StreamReport, error) {
	changes, err := l.changesSince(ctx, q, event, at)
	if err != nil {
		return nil, nil, err
	}
	sum := &Summary{MasterAfter: l.master(ctx), Changes: changes}
	samples, reports := l.stopTraffic()
	sum.Waits = ClientWaits(samples, at)
	return sum, reports, nil
}

// names are the directors' names, in order.
func (l *Lab) names() []string {
	out := make([]string, 0, len(l.bed.LBs))
	for _, n := range l.bed.LBs {
		out = append(out, n.Name())
	}
	return out
}

// pollDirectors asks reached about every director that has not got there
// yet, every pollEvery, until all have or limit has passed since from. It
// returns, per director, how long after from it got there: at the time
// reached gives, if that is not before from, else when it was seen.
// Only ctx's end is an error; a director that never gets there is missing
// from the map.
func (l *Lab) pollDirectors(ctx context.Context, from time.Time, limit time.Duration, reached func(*netlab.Node) (time.Time, bool)) (map[string]time.Duration, error) {
	got := map[string]time.Duration{}
	for {
		for _, lb := range l.bed.LBs {
			if _, ok := got[lb.Name()]; ok {
				continue
			}
			now := time.Now()
			if at, ok := reached(lb); ok {
				if at.Before(from) {
					at = now
				}
				got[lb.Name()] = at.Sub(from)
			}
		}
		if len(got) == len(l.bed.LBs) || time.Since(from) > limit {
			return got, nil
		}
		if err := sleep(ctx, pollEvery); err != nil {
			return got, err
		}
	}
}

// realWeightIs reports whether ok holds for the real server at addr in
// every service of the director's IPVS (w: its weight; in: whether it is
// in the service at all).
func (l *Lab) realWeightIs(lb *netlab.Node, addr netip.Addr, ok func(w int, in bool) bool) bool {
	for _, port := range []int{lvs.HTTPPort, lvs.EchoPort} {
		key := l.bed.ServiceKey(port)
		ws, err := l.bed.Weights(lb, key)
		if err != nil {
			return false
		}
		w, in := ws[netip.AddrPortFrom(addr, key.Service().Addr.Port())]
		if !ok(w, in) {
			return false
		}
	}
	return true
}

// instances returns each live director's instance status.
func (l *Lab) instances(ctx context.Context) (map[string]*control.InstanceStatus, error) {
	out := map[string]*control.InstanceStatus{}
	for _, name := range l.names() {
		d := l.daemons[name]
		select {
		case <-d.Exited():
			continue
		default:
		}
		st, err := d.Status(ctx)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		if in := lvs.Instance(st, lvs.InstanceName); in != nil {
			out[name] = in
		}
	}
	return out, nil
}

// master names the director that is MASTER now ("" if none, "lb1+lb2"
// if both are).
func (l *Lab) master(ctx context.Context) string {
	ins, _ := l.instances(ctx)
	var m []string
	for _, name := range l.names() {
		if in := ins[name]; in != nil && in.State == "MASTER" {
			m = append(m, name)
		}
	}
	return strings.Join(m, "+")
}

// roles is "lb1 MASTER, lb2 BACKUP".
func (l *Lab) roles(ctx context.Context) string {
	ins, err := l.instances(ctx)
	if err != nil {
		return err.Error()
	}
	var parts []string
	for _, name := range l.names() {
		if in := ins[name]; in != nil {
			parts = append(parts, name+" "+in.State)
		}
	}
	return strings.Join(parts, ", ")
}

// transitions is each director's last VRRP transition.
func (l *Lab) transitions(ctx context.Context) (map[string]time.Time, error) {
	ins, err := l.instances(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string]time.Time{}
	for name, in := range ins {
		out[name] = in.LastTransition
	}
	return out, nil
}

// changesSince describes the directors whose last VRRP transition is not
// the one noted by quietStart, with every transition they logged since:
// "lb2: BACKUP→MASTER 1.2s after the kill (its reason); MASTER→BACKUP ...".
func (l *Lab) changesSince(ctx context.Context, q quiet, event string, at time.Time) ([]string, error) {
	ins, err := l.instances(ctx)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, name := range l.names() {
		in := ins[name]
		if in == nil || in.LastTransition.Equal(q.before[name]) {
			continue
		}
		hist := LogTransitions(l.logSince(q, name), event, at)
		if len(hist) == 0 {
			hist = []string{fmt.Sprintf("%s %s after the %s (%s)", in.State, ms(in.LastTransition.Sub(at)), event, in.LastReason)}
		}
		out = append(out, name+": "+strings.Join(hist, "; "))
	}
	return out, nil
}

// LogTransitions lists the VRRP transitions in a daemon's log (slog's
// text format): "BACKUP→MASTER 1.2s after the kill (its reason)", the
// time from at.
func LogTransitions(log, event string, at time.Time) []string {
	var out []string
	for _, line := range strings.Split(log, "\n") {
		if attr(line, "msg") != "VRRP transition" {
			continue
		}
		when := ""
		if t, err := time.Parse(time.RFC3339Nano, attr(" "+line, "time")); err == nil {
			when = fmt.Sprintf(" %s after the %s", ms(t.Sub(at)), event)
		}
		out = append(out, fmt.Sprintf("%s→%s%s (%s)", attr(line, "from"), attr(line, "to"), when, attr(line, "reason")))
	}
	return out
}

// LogWarnings picks the warnings and errors out of a daemon's log (slog's
// text format): each distinct message once, with its link= attribute if
// any, and "(×N)" when it came N times.
func LogWarnings(log string) []string {
	var order []string
	count := map[string]int{}
	for _, line := range strings.Split(log, "\n") {
		if !strings.Contains(line, "level=WARN") && !strings.Contains(line, "level=ERROR") {
			continue
		}
		msg := attr(line, "msg")
		if ln := attr(line, "link"); ln != "" {
			msg += " (link " + ln + ")"
		}
		if count[msg] == 0 {
			order = append(order, msg)
		}
		count[msg]++
	}
	for i, m := range order {
		if n := count[m]; n > 1 {
			order[i] = fmt.Sprintf("%s (×%d)", m, n)
		}
	}
	return order
}

// attr is the value of key=value (quoted or not) in a slog text line.
func attr(line, key string) string {
	i := strings.Index(line, " "+key+"=")
	if i < 0 {
		return ""
	}
	v := line[i+len(key)+2:]
	if strings.HasPrefix(v, `"`) {
		if q, err := strconv.QuotedPrefix(v); err == nil {
			if s, err := strconv.Unquote(q); err == nil {
				return s
			}
		}
	}
	if j := strings.IndexByte(v, ' '); j >= 0 {
		v = v[:j]
	}
	return v
}

// between keeps the samples started in [from, to).
func between(samples []Sample, from, to time.Time) []Sample {
	var out []Sample
	for _, s := range samples {
		if !s.Start.Before(from) && s.Start.Before(to) {
			out = append(out, s)
		}
	}
	return out
}

func durations(m map[string]time.Duration) []time.Duration {
	out := make([]time.Duration, 0, len(m))
	for _, d := range m {
		out = append(out, d)
	}
	return out
}

// sayBroken shows, for a run that lost connections it should have kept,
// where the first few went, when and why they broke.
func sayBroken(out io.Writer, reports []lvs.StreamReport, event string, at time.Time) {
	const most = 5
	n := 0
	for _, r := range reports {
		if len(r.Breaks) == 0 {
			continue
		}
		if n++; n > most {
			continue
		}
		b := r.Breaks[0]
		when := fmt.Sprintf("%s after the %s", ms(b.At.Sub(at)), event)
		if b.At.Before(at) {
			when = fmt.Sprintf("%s before the %s", ms(at.Sub(b.At)), event)
		}
		first := ""
		if len(r.Servers) > 0 {
			first = " to " + r.Servers[0]
		}
		say(out, "Broken: a connection%s, at line %d, %s: %v", first, b.Seq, when, b.Err)
	}
	if n > most {
		say(out, "Broken: %d more.", n-most)
	}
}
