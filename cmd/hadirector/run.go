package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hadirector/hadirector/internal/alert"
	"github.com/hadirector/hadirector/internal/config"
	"github.com/hadirector/hadirector/internal/control"
	"github.com/hadirector/hadirector/internal/director"
	"github.com/hadirector/hadirector/internal/ipvs"
	"github.com/hadirector/hadirector/internal/vrrp"
	"golang.org/x/sys/unix"
)

// cmdRun is the daemon. Nothing is started until the config, the node and
// the host have all been checked: a bad start changes nothing.
func cmdRun(args []string, stderr io.Writer) int {
	fs := newFlags("run", "--config FILE [--node NAME]", stderr)
	path := fs.String("config", defaultConfig, "cluster config `file`")
	nodeFlag := fs.String("node", "", "this director's `name` in the cluster file (default: the host name)")
	socket := fs.String("socket", control.DefaultSocket, "control socket `path`")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn or error")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	log, err := newLogger(stderr, *logFormat, *logLevel)
	if err != nil {
		fmt.Fprintf(stderr, "hadirector run: %v\n", err)
		return exitUsage
	}
	cfg, err := config.Load(*path)
	if err != nil {
		printProblems(stderr, err)
		fmt.Fprintln(stderr, "hadirector run: not started: the config is invalid")
		return exitFail
	}
	// Failures before the daemon starts are plain lines for the operator at
	// the terminal (or in the journal), not structured logs.
	node, err := resolveNode(cfg, *nodeFlag)
	if err == nil {
		err = preflight(cfg, node)
	}
	if err != nil {
		fmt.Fprintf(stderr, "hadirector run: not started: %v\n", err)
		return exitFail
	}
	d := &daemon{path: *path, node: node, socket: *socket, log: log.With("node", node), notify: newNotifier(log)}
	return d.run(cfg)
}

// preflight checks what the daemon needs from this host for cfg: the node's
// interfaces and addresses, and IPVS when there are virtual services.
func preflight(cfg *config.Config, node string) error {
	if err := checkHost(cfg.Node(node)); err != nil {
		return err
	}
	for _, in := range cfg.Instances {
		if in.Notify != "" {
			if err := alert.CheckHook(in.Notify); err != nil {
				return fmt.Errorf("vrrp_instance %s: notify: %w", in.Name, err)
			}
		}
	}
	for _, g := range cfg.SyncGroups {
		if g.Notify != "" {
			if err := alert.CheckHook(g.Notify); err != nil {
				return fmt.Errorf("sync_group %s: notify: %w", g.Name, err)
			}
		}
	}
	if len(cfg.Services) > 0 {
		if err := ipvs.Preflight(); err != nil {
			return fmt.Errorf("%s configures %d virtual services: %w", cfg.File, len(cfg.Services), err)
		}
	}
	return nil
}

func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: use debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: use text or json", format)
}

// shutdownBound caps the graceful handover on SIGTERM (systemd's
// TimeoutStopSec is 15 s).
const shutdownBound = 10 * time.Second

type daemon struct {
	path, node, socket string
	log                *slog.Logger
	notify             *notifier
	engine             *director.Engine
	cfg                atomic.Pointer[config.Config] // the running config (hooks read it on the engine goroutine)
	runner             *alert.Runner
	sync               *syncDaemons // nil without [sync]
	peer               *peerSide    // nil without the peer state channel
}

func (d *daemon) run(cfg *config.Config) int {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Signals are caught before anything starts, so an early SIGTERM is a
	// clean stop rather than the default abrupt exit.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(sigs)

	plat, err := buildPlatform(cfg, d.node, d.log)
	if err != nil {
		d.log.Error("not started", "err", err)
		return exitFail
	}
	defer plat.Close()
	d.cfg.Store(cfg)
	d.runner = alert.NewRunner(alert.RunnerConfig{}, d.log)
	defer func() {
		// Let the last hooks (STOP) run, within a bound.
		hctx, hcancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer hcancel()
		d.runner.Close(hctx)
	}()
	lv, err := openLVS(cfg, d.log)
	if err != nil {
		d.log.Error("not started", "err", err)
		return exitFail
	}
	defer lv.Close()
	sy, err := openSync(cfg, d.log)
	if err != nil {
		d.log.Error("not started", "err", err)
		return exitFail
	}
	defer sy.Close()
	d.sync = sy
	ps, err := openPeer(cfg, d.node, d.log)
	if err != nil {
		d.log.Error("not started", "err", err)
		return exitFail
	}
	defer ps.Close()
	d.peer = ps
	opts := plat.opts
	opts.Hooks = d.hooks
	opts.ServiceHooks = d.serviceHooks
	opts.HoldPreempt = ps.holdAtStart()
	opts.PeerChanged = ps.kick
	lv.options(&opts)
	// Each instance tracks its own interface and its track_interface ones.
	tracked := map[string]bool{}
	for _, in := range cfg.Instances {
		tracked[in.Interface] = true
		for _, t := range in.TrackInterfaces {
			tracked[t.Name] = true
		}
	}
	var engineRef atomic.Pointer[director.Engine]
	watchDone := make(chan struct{})
	defer close(watchDone)
	down, err := watchLinks(tracked, func(name string, up bool) {
		if e := engineRef.Load(); e != nil {
			e.LinkState(name, up)
		}
	}, watchDone, d.log)
	if err != nil {
		d.log.Error("not started: watching interfaces", "err", err)
		return exitFail
	}
	opts.LinksDown = down
	engine, err := director.New(cfg, d.node, version, d.log, opts)
	if err != nil {
		d.log.Error("not started", "err", err)
		return exitFail
	}
	plat.engine.Store(engine)
	engineRef.Store(engine)
	d.engine = engine
	ps.attach(engine)
	engineDone := make(chan error, 1)
	go func() { engineDone <- engine.Run(ctx) }()

	srv, err := control.Listen(d.socket, statusHandler{Engine: engine, d: d, l: lv}, d.log)
	if err != nil {
		d.log.Error("not started", "err", err)
		cancel()
		<-engineDone
		return exitFail
	}
	serveDone := make(chan struct{})
	go func() { srv.Serve(ctx); close(serveDone) }()

	d.log.Info("hadirector started", "version", version, "cluster", cfg.Cluster.Name, "config", d.path, "socket", d.socket, "pid", os.Getpid())
	d.notify.send(fmt.Sprintf("READY=1\nSTATUS=cluster %s, node %s: running", cfg.Cluster.Name, d.node))
	go d.notify.watchdog(ctx, engine.Alive)

	for {
		select {
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				d.reload(ctx)
				continue
			}
			d.log.Info("stopping", "signal", sig.String())
			d.notify.send("STOPPING=1")
			// A master hands over before leaving: it advertises priority 0
			// and keeps answering for its VIPs until the successor speaks.
			sctx, scancel := context.WithTimeout(ctx, shutdownBound)
			if err := engine.Shutdown(sctx); err != nil {
				d.log.Warn("graceful handover did not finish", "err", err)
			}
			scancel()
			plat.Bye() // a graceful stop, not a crash, for the peer's liveness
			cancel()
			<-engineDone
			<-serveDone
			d.log.Info("hadirector stopped")
			return exitOK
		case err := <-engineDone:
			// The loop only returns on cancel; anything else is a bug, and
			// stopping (so systemd restarts us) beats running headless.
			d.log.Error("director loop ended unexpectedly", "err", err)
			cancel()
			<-serveDone
			return exitFail
		}
	}
}

// reload re-reads the config. A config that fails validation, names no node
// for this host, or needs what this host lacks, is refused whole: the
// running config stays, and the log says exactly why.
func (d *daemon) reload(ctx context.Context) {
	d.notify.send(fmt.Sprintf("RELOADING=1\nMONOTONIC_USEC=%d", monotonicUsec()))
	defer d.notify.send("READY=1")
	d.log.Info("reload requested (SIGHUP)", "config", d.path)
	cfg, err := config.Load(d.path)
	switch {
	case err != nil:
	case cfg.Node(d.node) == nil:
		err = fmt.Errorf("node %q is not in the new config; its nodes are: %s", d.node, strings.Join(cfg.NodeNames(), ", "))
	default:
		err = preflight(cfg, d.node)
	}
	if err != nil {
		for _, line := range strings.Split(err.Error(), "\n") {
			d.log.Error("reload refused, keeping the running config", "problem", line)
		}
		d.engine.RefuseReload(ctx, err)
		d.notify.send("STATUS=reload refused; running the previous config")
		return
	}
	changes, err := d.engine.Reload(ctx, cfg)
	if err != nil {
		d.log.Error("reload refused, keeping the running config", "problem", err.Error())
		return
	}
	d.cfg.Store(cfg)
	if d.sync != nil && cfg.Sync != nil && cfg.Sync.Enabled {
		if err := d.sync.apply(cfg); err != nil {
			d.log.Error("reload: sync daemons not as configured", "err", err)
		}
	} else if (d.sync == nil) != (cfg.Sync == nil || !cfg.Sync.Enabled) {
		d.log.Warn("reload: turning connection sync on or off needs a restart")
	}
	d.log.Info("reload applied", "changes", len(changes))
	for _, c := range changes {
		d.log.Info("reload change", "change", c.String())
	}
	d.notify.send(fmt.Sprintf("STATUS=cluster %s, node %s: running (reloaded, %d changes)", cfg.Cluster.Name, d.node, len(changes)))
}

// monotonicUsec is CLOCK_MONOTONIC in microseconds, which systemd wants
// with RELOADING=1 to tell this reload from an earlier one.
// hooks runs the instance's notify program on a transition, with
// keepalived's arguments (INSTANCE NAME STATE PRIORITY). It never blocks:
// the runner queues.
func (d *daemon) hooks(t director.Transition) {
	cfg := d.cfg.Load()
	if t.Instance != "" {
		d.sync.transition(t.Instance, t.To)
	}
	if t.Group != "" {
		for _, g := range cfg.SyncGroups {
			if g.Name == t.Group && g.Notify != "" {
				// keepalived reports a group's priority as 0.
				d.runner.Notify(alert.Hook{Path: g.Notify, Timeout: g.NotifyTimeout.D()}, alert.Event{
					Kind: alert.KindGroup, Name: g.Name, State: hookState(t.To), Priority: 0, At: t.At,
					Cluster: cfg.Cluster.Name, Node: d.node, Reason: t.Reason,
					Extra: map[string]string{"FROM": hookState(t.From), "INSTANCES": strings.Join(g.Instances, " ")},
				})
			}
		}
		return
	}
	for i := range cfg.Instances {
		in := &cfg.Instances[i]
		if in.Name != t.Instance || in.Notify == "" {
			continue
		}
		vips := make([]string, len(in.VIPs))
		for j, v := range in.VIPs {
			vips[j] = v.String()
		}
		d.runner.Notify(alert.Hook{Path: in.Notify, Timeout: in.NotifyTimeout.D()}, alert.Event{
			Kind: alert.KindInstance, Name: in.Name, State: hookState(t.To), Priority: t.Priority, At: t.At,
			Cluster: cfg.Cluster.Name, Node: d.node, Reason: t.Reason,
			Extra: map[string]string{"FROM": hookState(t.From), "VIPS": strings.Join(vips, " ")},
		})
	}
}

// hookState is keepalived's word for a state: leaving to Initialize is STOP.
func hookState(s vrrp.State) string {
	if s == vrrp.Initialize {
		return alert.StateStop
	}
	return s.String()
}

func monotonicUsec() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return ts.Nano() / 1000
}
