package lab

import (
	"context"
	"crypto/rand"
	_ "embed"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/hadirector/hadirector/integration/lvs"
	"github.com/hadirector/hadirector/integration/netlab"
	"github.com/hadirector/hadirector/internal/config"
	"github.com/hadirector/hadirector/internal/ipvs"
)

// Config is the lab's cluster file. Its addresses are integration/lvs's DR
// plan with two directors (a unit test holds them together).
//
//go:embed lab.toml
var Config []byte

// StateDir is where the lab keeps its files while it runs: the cluster
// file, each director's copy and control socket, and (up/down) the lab's
// own socket and log.
const StateDir = "/run/hadirector-lab"

// Prefix is the netlab prefix of the lab's namespaces (hdlab<id>-<node>).
const Prefix = "hdlab"

// Plan is the bed the lab builds.
var Plan = lvs.Options{Mode: lvs.DR, Directors: 2}

// Options are Run's and Start's.
type Options struct {
	Self  string        // the hadirector binary the directors run
	Conns int           // long-lived connections; default 200
	Out   io.Writer     // the story, for people
	Phase time.Duration // traffic before and after the failure; default 4s
	// Failure is what Run breaks; default FailMaster.
	Failure Failure
}

// Steady request rhythm and the long-lived connections' line interval.
const (
	requestEvery = 25 * time.Millisecond
	lineEvery    = time.Second
	// lineWait is how long a long-lived connection waits for an answer
	// before it counts as broken: patient, like an SSH session, so that a
	// VM starved of CPU by other work does not pass for a failed failover
	// (silence is caught by ConnSurvival instead).
	lineWait = 10 * time.Second
	// settleMax bounds the wait, after the phase, for every long-lived
	// connection to show it works through the new master.
	settleMax = 20 * time.Second
	// syncWindow: the kernel's sync daemon sends a connection's entry a
	// few seconds after it is queued; older ones are on the backup.
	syncWindow = 4 * time.Second
	// startMax bounds the wait for the election and the first probes.
	startMax = time.Minute
)

// Lab is a running lab: the bed, both directors and the client traffic.
// Its methods are for one caller at a time.
type Lab struct {
	o            Options
	cfg          *config.Config // the cluster file, loaded
	started      time.Time
	nl           *netlab.Lab
	bed          *lvs.Bed
	daemons      map[string]*lvs.Daemon
	streams      []*lvs.Stream
	pr           *prober
	trafficStart time.Time

	mu      sync.Mutex
	summary *Summary // after Fail
	closed  bool
}

// Run is the guided lab: Start, traffic through the master, Fail, the
// summary, Close. It returns the summary, with an error if the lab could
// not run or the failover did not work (Summary.Check). Everything it made
// is removed before it returns.
func Run(ctx context.Context, o Options) (sum *Summary, err error) {
	_ = os.Remove(LogPath) // of a step by step lab that was killed: the caller holds the lock
	l, err := Start(ctx, o)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil && ctx.Err() == nil {
			l.dumpLogs(l.o.Out)
		}
		if cerr := l.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	if err := l.Before(ctx, l.o.Out); err != nil {
		return nil, err
	}
	return l.Fail(ctx, l.o.Out, l.o.Failure)
}

func say(w io.Writer, format string, args ...any) { fmt.Fprintf(w, "== "+format+"\n", args...) }

// Start prints the config, builds the bed, starts both directors and the
// client traffic, and returns once the traffic runs through the master. A
// failure half-way removes what was made.
func Start(ctx context.Context, o Options) (l *Lab, err error) {
	if o.Conns <= 0 {
		o.Conns = 200
	}
	if o.Phase <= 0 {
		o.Phase = syncWindow
	}
	out := o.Out
	l = &Lab{o: o, started: time.Now(), daemons: map[string]*lvs.Daemon{}}
	defer func() {
		if err != nil {
			if ctx.Err() == nil {
				l.dumpLogs(out)
			}
			l.Close()
		}
	}()
	if l.cfg, err = writeState(); err != nil {
		return nil, err
	}
	fmt.Fprintf(out, "== The cluster file both directors run from (%s/cluster.toml):\n\n%s\n", StateDir, Config)

	// Leftovers of a lab that was killed (its owner process is dead).
	_, _ = netlab.Sweep(Prefix)
	if l.nl, err = netlab.New(Prefix); err != nil {
		return l, err
	}
	if l.bed, err = lvs.Build(l.nl, Plan); err != nil {
		return l, err
	}
	b := l.bed
	hb, err := l.cable()
	if err != nil {
		return l, err
	}
	say(out, "Network built in namespaces %s-*: client, lb1, lb2, rs1-rs3 on bridge \"front\"; lb1 and lb2 also on the heartbeat cable (%s).", l.nl.Name(), hb)
	say(out, "Real servers rs1-rs3 answer GET / with their name, and echo numbered lines on :%d.", lvs.EchoPort)

	for _, n := range b.LBs {
		dir := filepath.Join(StateDir, n.Name())
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return l, err
		}
		d, err := lvs.LaunchDaemon(ctx, n, o.Self, dir, string(Config))
		if err != nil {
			return l, err
		}
		l.daemons[n.Name()] = d
		say(out, "Started director %s: hadirector run --config %s --node %s", n.Name(), d.Config, n.Name())
	}
	t0 := time.Now()
	// A bound, so that a director that never gets there shows its log
	// rather than the VM's timeout.
	wctx, cancel := context.WithTimeout(ctx, startMax)
	defer cancel()
	if _, err := l.daemons["lb1"].WaitState(wctx, lvs.InstanceName, "MASTER"); err != nil {
		return l, err
	}
	if _, err := l.daemons["lb2"].WaitState(wctx, lvs.InstanceName, "BACKUP"); err != nil {
		return l, err
	}
	say(out, "Elected: lb1 is MASTER (priority 150) and holds the VIP %s; lb2 is BACKUP (%s after start).", b.VIP(), time.Since(t0).Round(time.Millisecond))
	if err := waitServing(wctx, b, b.ServiceKey(lvs.HTTPPort), b.ServiceKey(lvs.EchoPort)); err != nil {
		return l, err
	}
	say(out, "Both directors probed rs1-rs3 healthy and programmed IPVS (%s after start).", time.Since(t0).Round(time.Millisecond))
	if err := printStatus(ctx, out, o.Self, l.daemons["lb1"]); err != nil {
		return l, err
	}

	// Traffic: long-lived connections first (they must be older than the
	// sync window when the master dies), then the steady requests.
	t1 := time.Now()
	if l.streams, err = b.OpenStreams(ctx, b.VIPPort(lvs.EchoPort), o.Conns, lineEvery, lineWait); err != nil {
		return l, fmt.Errorf("opening %d long-lived connections: %w", o.Conns, err)
	}
	say(out, "Client: %d long-lived connections to %s open (%s), each sending a numbered line every %s.", o.Conns, b.VIPPort(lvs.EchoPort), time.Since(t1).Round(time.Millisecond), lineEvery)
	// The requests outlive ctx when Start returns (up/down): Close stops them.
	l.pr = startProber(context.WithoutCancel(ctx), b, b.VIPPort(lvs.HTTPPort), requestEvery)
	l.trafficStart = time.Now()
	say(out, "Client: a new GET http://%s/ every %s.", b.VIPPort(lvs.HTTPPort), requestEvery)
	return l, nil
}

// Before lets the traffic run through the master for the sync window, then
// shows how it was spread and what the backup learnt.
func (l *Lab) Before(ctx context.Context, out io.Writer) error {
	if err := sleep(ctx, l.o.Phase); err != nil {
		return err
	}
	say(out, "Answers in %s through lb1: %s", l.o.Phase, spread(tally(l.pr.since(l.trafficStart)), l.bed.RealNames()))
	synced, err := lvs.Established(ctx, l.bed.LBs[1])
	if err != nil {
		return err
	}
	say(out, "lb2 (BACKUP) already holds %d established connections, learnt through connection sync.", synced)
	return nil
}

// Fail breaks what f names (FailMaster: lb1's daemon and link; FailServer:
// a real server; FailLink: the heartbeat cable), shows what the directors
// and the clients make of it, stops the traffic and prints the summary.
// The error says why the cluster did not cope (or that the failure could
// not be done). A lab fails once.
func (l *Lab) Fail(ctx context.Context, out io.Writer, f Failure) (*Summary, error) {
	l.mu.Lock()
	done := l.summary
	l.mu.Unlock()
	if done != nil {
		return nil, fmt.Errorf("this lab has shown a failure already (%s): take it down and up again", done.kind())
	}
	var (
		sum *Summary
		err error
	)
	switch f {
	case FailMaster, "":
		sum, err = l.failMaster(ctx, out)
	case FailServer:
		sum, err = l.failServer(ctx, out)
	case FailLink:
		sum, err = l.failLink(ctx, out)
	default:
		return nil, fmt.Errorf("unknown failure %q", f)
	}
	if err != nil {
		return sum, err
	}
	return l.finish(out, sum)
}

// failMaster kills lb1's daemon and cuts its link, waits for lb2's
// takeover, lets the traffic run through lb2 and stops it.
func (l *Lab) failMaster(ctx context.Context, out io.Writer) (*Summary, error) {
	b, lb1 := l.bed, l.bed.LBs[0]
	if young := syncWindow - time.Since(l.trafficStart); young > 0 {
		say(out, "Waiting %s first: connections younger than the sync delay are not on lb2 yet.", young.Round(100*time.Millisecond))
		if err := sleep(ctx, young); err != nil {
			return nil, err
		}
	}
	// The failure: the master's daemon dies and its node drops off the
	// network (as a crashed machine would; the killed daemon's kernel
	// closes the liveness connection, which tells lb2 at once).
	kill := time.Now()
	l.daemons["lb1"].Kill()
	if err := lvs.SetLinkUp(lb1, "eth0", false); err != nil {
		return nil, err
	}
	atFail := l.answered()
	failed := "lb1: its daemon SIGKILLed, then its link cut"
	say(out, "The failure: %s.", failed)
	st, err := l.daemons["lb2"].WaitState(ctx, lvs.InstanceName, "MASTER")
	if err != nil {
		return nil, err
	}
	in := lvs.Instance(st, lvs.InstanceName)
	takeover := in.LastTransition.Sub(kill)
	say(out, "lb2 is MASTER %s after the kill: %s", ms(takeover), in.LastReason)
	if err := sleep(ctx, l.o.Phase); err != nil {
		return nil, err
	}
	if err := l.settle(ctx, atFail); err != nil {
		return nil, err
	}
	say(out, "Answers in %s through lb2: %s", time.Since(kill).Round(100*time.Millisecond), spread(tally(l.pr.since(kill)), b.RealNames()))
	samples, reports := l.stopTraffic()
	sayBroken(out, reports, "kill", kill)
	if err := printStatus(ctx, out, l.o.Self, l.daemons["lb2"]); err != nil {
		return nil, err
	}
	return &Summary{
		Kind: FailMaster, MasterBefore: "lb1", MasterAfter: "lb2", Failed: failed,
		Takeover: takeover, TakeoverReason: in.LastReason,
		Waits:    ClientWaits(samples, kill),
		Survival: ConnSurvival(reports, atFail),
	}, nil
}

// answered is, for each long-lived connection, how many of its lines have
// been answered so far.
func (l *Lab) answered() []int {
	out := make([]int, len(l.streams))
	for i, s := range l.streams {
		out[i] = s.Report().Answered
	}
	return out
}

// finish adds what each director's IPVS scheduled to sum, keeps it and
// prints it. The error says why the cluster did not cope.
func (l *Lab) finish(out io.Writer, sum *Summary) (*Summary, error) {
	b := l.bed
	sum.Scheduled = map[string]map[string]int{}
	for _, n := range b.LBs {
		sum.Directors = append(sum.Directors, n.Name())
		// A killed director's kernel keeps its counters: its namespace is
		// still there.
		var err error
		if sum.Scheduled[n.Name()], err = b.Scheduled(n, b.ServiceKey(lvs.HTTPPort)); err != nil {
			return sum, err
		}
	}
	l.mu.Lock()
	l.summary = sum
	l.mu.Unlock()
	fmt.Fprintln(out)
	if err := sum.Print(out, b.RealNames()); err != nil {
		return sum, fmt.Errorf("%s: %w", sum.kind().didNotCope(), err)
	}
	return sum, nil
}

// settle waits (up to settleMax) until every long-lived connection has
// either broken or had two more lines answered than at the failure (see
// ConnSurvival): on a CPU starved by other work some take longer.
func (l *Lab) settle(ctx context.Context, atFail []int) error {
	deadline := time.Now().Add(settleMax)
	for {
		waiting := 0
		for i, s := range l.streams {
			if r := s.Report(); len(r.Breaks) == 0 && r.Answered < atFail[i]+2 {
				waiting++
			}
		}
		if waiting == 0 || time.Now().After(deadline) {
			return nil
		}
		if err := sleep(ctx, 200*time.Millisecond); err != nil {
			return err
		}
	}
}

// dumpLogs shows the end of each director's log, for a lab that failed.
func (l *Lab) dumpLogs(out io.Writer) {
	for _, n := range []string{"lb1", "lb2"} {
		if d := l.daemons[n]; d != nil {
			fmt.Fprintf(out, "\n-- log of director %s:\n%s", n, tail(d.Output(), 40))
		}
	}
}

// stopTraffic ends the requests and the long-lived connections (once) and
// returns what they saw.
func (l *Lab) stopTraffic() ([]Sample, []lvs.StreamReport) {
	var samples []Sample
	if l.pr != nil {
		samples = l.pr.stop()
		l.pr = nil
	}
	reports := lvs.StopStreams(l.streams)
	l.streams = nil
	return samples, reports
}

// Close stops the traffic and the directors and removes the namespaces and
// the state directory. It may be called more than once.
func (l *Lab) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	l.mu.Unlock()
	l.stopTraffic()
	if l.bed != nil {
		l.bed.Close()
	}
	var err error
	if l.nl != nil {
		if cerr := l.nl.Close(); cerr != nil {
			err = fmt.Errorf("taking the lab down: %w", cerr)
		}
	}
	_ = os.RemoveAll(StateDir)
	say(l.o.Out, "Lab taken down: namespaces and processes removed (%s in all).", time.Since(l.started).Round(100*time.Millisecond))
	return err
}

// writeState creates StateDir afresh with the cluster file and the
// heartbeat link's key, and loads the file.
func writeState() (*config.Config, error) {
	if err := os.RemoveAll(StateDir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(StateDir, 0o700); err != nil {
		return nil, err
	}
	path := filepath.Join(StateDir, "cluster.toml")
	if err := os.WriteFile(path, Config, 0o644); err != nil {
		return nil, err
	}
	cfg, err := config.Load(path)
	if err != nil {
		return nil, fmt.Errorf("the embedded config is invalid (a bug):\n%w", err)
	}
	for _, ln := range cfg.Links {
		if ln.KeyFile == "" {
			continue
		}
		key := make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, err
		}
		if err := os.WriteFile(ln.KeyFile, key, 0o600); err != nil {
			return nil, fmt.Errorf("link %s's key: %w", ln.Name, err)
		}
	}
	return cfg, nil
}

// cable connects the directors directly for the cluster file's heartbeat
// link (its interface, with each node's addresses on it) and describes it.
func (l *Lab) cable() (string, error) {
	if len(l.cfg.Links) == 0 {
		return "none", nil
	}
	ifname := l.cfg.Links[0].Interface
	lb1, lb2 := l.bed.LBs[0], l.bed.LBs[1]
	addrs := func(node string) []string {
		var out []string
		if in := l.cfg.Node(node).Interface(ifname); in != nil {
			for _, p := range in.Addresses {
				out = append(out, p.String())
			}
		}
		return out
	}
	a1, a2 := addrs(lb1.Name()), addrs(lb2.Name())
	if _, _, err := l.nl.Link(lb1, ifname, a1, lb2, ifname, a2); err != nil {
		return "", err
	}
	return fmt.Sprintf("%s, %s %s to %s %s", ifname, lb1.Name(), strings.Join(a1, " "), lb2.Name(), strings.Join(a2, " ")), nil
}

// waitServing waits until both directors' kernels have every real server of
// both services at weight 1 (the first probes passed).
func waitServing(ctx context.Context, b *lvs.Bed, keys ...ipvs.ServiceKey) error {
	for {
		ready := true
		for _, lb := range b.LBs {
			for _, k := range keys {
				w, _ := b.Weights(lb, k)
				for i := range b.RealNames() {
					if w[netip.AddrPortFrom(b.RealAddr(i+1), k.Service().Addr.Port())] != 1 {
						ready = false
					}
				}
			}
		}
		if ready {
			return nil
		}
		if err := sleep(ctx, 50*time.Millisecond); err != nil {
			return fmt.Errorf("waiting for the real servers in IPVS: %w", err)
		}
	}
}

// printStatus shows the director's `hadirector status`, as a user would
// type it.
func printStatus(ctx context.Context, out io.Writer, self string, d *lvs.Daemon) error {
	fmt.Fprintf(out, "\n$ hadirector status   # on %s\n", d.Node.Name())
	cmd := exec.CommandContext(ctx, self, "status", "--socket", d.Socket)
	b, err := cmd.CombinedOutput()
	out.Write(b)
	fmt.Fprintln(out)
	if err != nil {
		return fmt.Errorf("hadirector status on %s: %w", d.Node.Name(), err)
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

func tail(s string, lines int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > lines {
		l = append([]string{"…"}, l[len(l)-lines:]...)
	}
	return strings.Join(l, "\n") + "\n"
}
