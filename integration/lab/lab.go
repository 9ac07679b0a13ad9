package lab

import (
	"context"
	_ "embed"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
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
// file, and each director's copy and control socket.
const StateDir = "/run/hadirector-lab"

// Prefix is the netlab prefix of the lab's namespaces (hdlab<id>-<node>).
const Prefix = "hdlab"

// Plan is the bed the lab builds.
var Plan = lvs.Options{Mode: lvs.DR, Directors: 2}

// Options are Run's.
type Options struct {
	Self  string        // the hadirector binary the directors run
	Conns int           // long-lived connections; default 200
	Out   io.Writer     // the story, for people
	Phase time.Duration // traffic before and after the failure; default 4s
}

// Steady request rhythm and the long-lived connections' line interval.
const (
	requestEvery = 25 * time.Millisecond
	lineEvery    = 500 * time.Millisecond
	// syncWindow: the kernel's sync daemon sends a connection's entry a
	// few seconds after it is queued; older ones are on the backup.
	syncWindow = 4 * time.Second
)

// Run runs the lab to the end and returns its summary, with an error if
// the lab could not run or the failover did not work (Summary.Check).
// Everything it made is removed before it returns.
func Run(ctx context.Context, o Options) (sum *Summary, err error) {
	if o.Conns <= 0 {
		o.Conns = 200
	}
	if o.Phase <= 0 {
		o.Phase = syncWindow
	}
	out := o.Out
	say := func(format string, args ...any) { fmt.Fprintf(out, "== "+format+"\n", args...) }
	started := time.Now()

	fmt.Fprintf(out, "== The cluster file both directors run from (%s/cluster.toml):\n\n%s\n", StateDir, Config)
	if err := writeState(); err != nil {
		return nil, err
	}
	defer os.RemoveAll(StateDir)

	// Leftovers of a lab that was killed (its owner process is dead).
	_, _ = netlab.Sweep(Prefix)
	nl, err := netlab.New(Prefix)
	if err != nil {
		return nil, err
	}
	defer func() {
		if cerr := nl.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("taking the lab down: %w", cerr)
		}
		say("Lab taken down: namespaces and processes removed (%s in all).", time.Since(started).Round(100*time.Millisecond))
	}()
	b, err := lvs.Build(nl, Plan)
	if err != nil {
		return nil, err
	}
	defer b.Close()
	lb1, lb2 := b.LBs[0], b.LBs[1]
	say("Network built in namespaces %s-*: client, lb1, lb2, rs1-rs3 on bridge \"front\".", nl.Name())
	say("Real servers rs1-rs3 answer GET / with their name, and echo numbered lines on :%d.", lvs.EchoPort)

	daemons := map[string]*lvs.Daemon{}
	for _, n := range b.LBs {
		dir := filepath.Join(StateDir, n.Name())
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
		d, err := lvs.LaunchDaemon(ctx, n, o.Self, dir, string(Config))
		if err != nil {
			return nil, err
		}
		daemons[n.Name()] = d
		say("Started director %s: hadirector run --config %s --node %s", n.Name(), d.Config, n.Name())
	}
	defer func() {
		if err != nil {
			for name, d := range daemons {
				fmt.Fprintf(out, "\n-- log of director %s:\n%s", name, tail(d.Output(), 40))
			}
		}
	}()
	t0 := time.Now()
	if _, err := daemons["lb1"].WaitState(ctx, lvs.InstanceName, "MASTER"); err != nil {
		return nil, err
	}
	if _, err := daemons["lb2"].WaitState(ctx, lvs.InstanceName, "BACKUP"); err != nil {
		return nil, err
	}
	say("Elected: lb1 is MASTER (priority 150) and holds the VIP %s; lb2 is BACKUP (%s after start).", b.VIP(), time.Since(t0).Round(time.Millisecond))
	web, echo := b.ServiceKey(lvs.HTTPPort), b.ServiceKey(lvs.EchoPort)
	if err := waitServing(ctx, b, web, echo); err != nil {
		return nil, err
	}
	say("Both directors probed rs1-rs3 healthy and programmed IPVS (%s after start).", time.Since(t0).Round(time.Millisecond))
	if err := printStatus(ctx, out, o.Self, daemons["lb1"]); err != nil {
		return nil, err
	}

	// Traffic: long-lived connections first (they must be older than the
	// sync window when the master dies), then the steady requests.
	t1 := time.Now()
	streams, err := b.OpenStreams(ctx, b.VIPPort(lvs.EchoPort), o.Conns, lineEvery)
	if err != nil {
		return nil, fmt.Errorf("opening %d long-lived connections: %w", o.Conns, err)
	}
	stopped := false
	var reports []lvs.StreamReport
	defer func() {
		if !stopped {
			lvs.StopStreams(streams)
		}
	}()
	say("Client: %d long-lived connections to %s open (%s), each sending a numbered line every %s.", o.Conns, b.VIPPort(lvs.EchoPort), time.Since(t1).Round(time.Millisecond), lineEvery)
	pr := startProber(ctx, b, b.VIPPort(lvs.HTTPPort), requestEvery)
	defer func() {
		if !stopped {
			pr.stop()
		}
	}()
	say("Client: a new GET http://%s/ every %s.", b.VIPPort(lvs.HTTPPort), requestEvery)
	tBefore := time.Now()
	if err := sleep(ctx, o.Phase); err != nil {
		return nil, err
	}
	say("Answers in %s through lb1: %s", o.Phase, spread(tally(pr.since(tBefore)), b.RealNames()))
	synced, err := lvs.Established(ctx, lb2)
	if err != nil {
		return nil, err
	}
	say("lb2 (BACKUP) already holds %d established connections, learnt through connection sync.", synced)

	// The failure: the master's daemon dies and its node drops off the
	// network (as a crashed machine would; the killed daemon's kernel
	// closes the liveness connection, which tells lb2 at once).
	kill := time.Now()
	daemons["lb1"].Kill()
	if err := lvs.SetLinkUp(lb1, "eth0", false); err != nil {
		return nil, err
	}
	failed := "lb1: its daemon SIGKILLed, then its link cut"
	say("The failure: %s.", failed)
	st, err := daemons["lb2"].WaitState(ctx, lvs.InstanceName, "MASTER")
	if err != nil {
		return nil, err
	}
	in := lvs.Instance(st, lvs.InstanceName)
	takeover := in.LastTransition.Sub(kill)
	say("lb2 is MASTER %s after the kill: %s", ms(takeover), in.LastReason)
	if err := sleep(ctx, o.Phase); err != nil {
		return nil, err
	}
	say("Answers in %s through lb2: %s", o.Phase, spread(tally(pr.since(kill)), b.RealNames()))
	stopped = true
	samples := pr.stop()
	reports = lvs.StopStreams(streams)
	if err := printStatus(ctx, out, o.Self, daemons["lb2"]); err != nil {
		return nil, err
	}

	sum = &Summary{
		MasterBefore: "lb1", MasterAfter: "lb2", Failed: failed,
		Takeover: takeover, TakeoverReason: in.LastReason,
		Scheduled: map[string]map[string]int{},
		Waits:     ClientWaits(samples, kill),
		Survival:  ConnSurvival(reports),
	}
	for _, n := range b.LBs {
		// lb1's kernel keeps its counters: its namespace is still there.
		if sum.Scheduled[n.Name()], err = b.Scheduled(n, web); err != nil {
			return sum, err
		}
	}
	fmt.Fprintln(out)
	if err := sum.Print(out, b.RealNames()); err != nil {
		return sum, fmt.Errorf("the failover did not work: %w", err)
	}
	return sum, nil
}

// writeState creates StateDir afresh with the cluster file, and checks it.
func writeState() error {
	if err := os.RemoveAll(StateDir); err != nil {
		return err
	}
	if err := os.MkdirAll(StateDir, 0o700); err != nil {
		return err
	}
	path := filepath.Join(StateDir, "cluster.toml")
	if err := os.WriteFile(path, Config, 0o644); err != nil {
		return err
	}
	if _, err := config.Load(path); err != nil {
		return fmt.Errorf("the embedded config is invalid (a bug):\n%w", err)
	}
	return nil
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
