package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"time"

	"github.com/hadirector/hadirector/internal/alert"
	"github.com/hadirector/hadirector/internal/config"
	"github.com/hadirector/hadirector/internal/control"
	"github.com/hadirector/hadirector/internal/director"
	"github.com/hadirector/hadirector/internal/healthcheck"
	"github.com/hadirector/hadirector/internal/ipvs"
)

// lvs is the daemon's LVS side: the probe manager, the reconciler over
// the kernel's IPVS table, and a second kernel handle that status reads
// connection counters through (so a long reconcile never stalls status).
type lvs struct {
	health *healthcheck.Manager
	kernel *ipvs.Kernel
	stats  *ipvs.Kernel
	rec    *ipvs.Reconciler
}

// openLVS opens IPVS when the kernel has it (refused earlier, by preflight,
// if the config has services and the kernel has none), so that a reload
// may add services to a config that started with none.
func openLVS(cfg *config.Config, log *slog.Logger) (*lvs, error) {
	l := &lvs{health: healthcheck.NewManager(healthcheck.Options{Logger: log.With("part", "healthcheck")})}
	if len(cfg.Services) == 0 && ipvs.Preflight() != nil {
		return l, nil
	}
	var err error
	if l.kernel, err = ipvs.Open(""); err != nil {
		l.Close()
		return nil, err
	}
	if l.stats, err = ipvs.Open(""); err != nil {
		l.Close()
		return nil, err
	}
	opts := []ipvs.ReconcilerOption{ipvs.WithLogger(log.With("part", "ipvs"))}
	if cfg.IPVS.StateFile != "" {
		opts = append(opts, ipvs.WithStateFile(cfg.IPVS.StateFile))
	}
	if l.rec, err = ipvs.NewReconciler(l.kernel, opts...); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// options wires the LVS side into the engine's options.
func (l *lvs) options(o *director.Options) {
	o.Health = l.health
	if l.rec != nil {
		o.IPVS = l.rec
	}
}

func (l *lvs) Close() {
	l.health.Close()
	if l.kernel != nil {
		l.kernel.Close()
	}
	if l.stats != nil {
		l.stats.Close()
	}
}

// statusHandler answers the control socket: the engine's snapshot plus
// the kernel's connection counters, read within the request's deadline.
type statusHandler struct {
	*director.Engine
	d *daemon
	l *lvs
}

func (h statusHandler) Status(ctx context.Context) (*control.Status, error) {
	st, err := h.Engine.Status(ctx)
	if err != nil {
		return st, err
	}
	st.Sync = h.d.sync.status()
	if st.Sync != nil {
		if st.Sync.Peer = h.d.peer.status(); st.Sync.Peer != nil {
			st.Sync.Peer.Following = following(st)
		}
	}
	if h.l.stats == nil || len(st.Services) == 0 {
		return st, nil
	}
	cfg := h.d.cfg.Load()
	byKey := map[string]*config.VirtualService{}
	for i := range cfg.Services {
		byKey[cfg.Services[i].Key()] = &cfg.Services[i]
	}
	deadline := time.Now().Add(2 * time.Second)
	if d, ok := ctx.Deadline(); ok && d.Add(-time.Second).Before(deadline) {
		deadline = d.Add(-time.Second)
	}
	for i := range st.Services {
		ss := &st.Services[i]
		vs := byKey[ss.Key]
		if vs == nil {
			continue
		}
		if time.Now().After(deadline) {
			setIPVSError(st, fmt.Sprintf("counters read for %d of %d services (out of time)", i, len(st.Services)))
			break
		}
		svc, err := director.IPVSService(vs)
		if err != nil {
			continue
		}
		conns, err := h.l.stats.Counters(svc)
		if err != nil {
			setIPVSError(st, err.Error())
			continue
		}
		for j := range ss.RealServers {
			rs := &ss.RealServers[j]
			if ap, err := netip.ParseAddrPort(rs.Address); err == nil {
				if c, ok := conns[ap]; ok {
					rs.ActiveConns, rs.InactiveConns = &c.Active, &c.Inactive
				}
			}
		}
		if vs.SorryServer != nil {
			if c, ok := conns[vs.SorryServer.AddrPort()]; ok {
				ss.SorryActiveConns, ss.SorryInactiveConns = &c.Active, &c.Inactive
			}
		}
	}
	return st, nil
}

func setIPVSError(st *control.Status, msg string) {
	if st.IPVS == nil {
		st.IPVS = &control.IPVSStatus{}
	}
	if st.IPVS.CountersError == "" {
		st.IPVS.CountersError = msg
	}
}

// serviceHooks runs a service's notify program on real-server and quorum
// transitions. It never blocks: the runner queues.
func (d *daemon) serviceHooks(ev director.ServiceEvent) {
	cfg := d.cfg.Load()
	for i := range cfg.Services {
		vs := &cfg.Services[i]
		if vs.Key() != ev.Key || vs.Notify == "" {
			continue
		}
		e := alert.Event{Kind: alert.KindService, Name: vs.Name, State: ev.State, Priority: ev.Weight, At: ev.At,
			Cluster: cfg.Cluster.Name, Node: d.node, Reason: ev.Detail,
			Extra: map[string]string{"SERVICE": vs.Name, "SERVICE_KEY": vs.Key()}}
		if ev.Real != "" {
			e.Kind, e.Name = alert.KindRealServer, vs.Name+" "+ev.Real
			e.Extra["REAL"] = ev.Real
		}
		d.runner.Notify(alert.Hook{Path: vs.Notify, Timeout: vs.NotifyTimeout.D()}, e)
	}
}

// cmdAdmin is drain, enable and set-weight: one request to the daemon.
func cmdAdmin(op string, args []string, stdout, stderr io.Writer) int {
	usageArgs := "[--socket PATH] SERVICE REAL"
	if op == director.AdminSetWeight {
		usageArgs += " WEIGHT"
	}
	fs := newFlags(op, usageArgs, stderr)
	socket := fs.String("socket", control.DefaultSocket, "control socket `path`")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	want := 2
	if op == director.AdminSetWeight {
		want = 3
	}
	if fs.NArg() != want {
		fmt.Fprintf(stderr, "hadirector %s: want %d arguments: %s (SERVICE is its name or key, REAL ip or ip:port)\n", op, want, usageArgs)
		return exitUsage
	}
	req := control.Request{Cmd: op, Service: fs.Arg(0), Real: fs.Arg(1)}
	if op == director.AdminSetWeight {
		if _, err := fmt.Sscanf(fs.Arg(2), "%d", &req.Weight); err != nil || fmt.Sprint(req.Weight) != fs.Arg(2) {
			fmt.Fprintf(stderr, "hadirector %s: weight %q is not a whole number 0..65535\n", op, fs.Arg(2))
			return exitUsage
		}
	}
	resp, err := control.Call(*socket, req, 5*time.Second)
	if err == nil && !resp.OK {
		err = errors.New(resp.Error)
	}
	if err != nil {
		fmt.Fprintf(stderr, "hadirector %s: %v\n", op, err)
		return exitFail
	}
	fmt.Fprintln(stdout, resp.Message)
	return exitOK
}

// following: this node programs the master's verdicts (it is no master,
// and its peer is, with the same services).
func following(st *control.Status) bool {
	if st.Sync == nil || st.Sync.Peer == nil {
		return false
	}
	for _, in := range st.Instances {
		if in.State == "MASTER" {
			return false
		}
	}
	return st.Sync.Peer.PeerMaster && st.Sync.Peer.SameEpoch
}
