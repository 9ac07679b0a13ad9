// Package director is hadirector's engine: one goroutine owns all mutable
// state (the running config, this node's view of every VRRP instance and
// virtual service) and turns events into actions and status snapshots.
//
// For now it holds the configuration, applies reloads by difference and
// answers status; elections, health transitions and IPVS programming arrive
// through this same loop as their packages land.
package director

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/hadirector/hadirector/internal/config"
	"github.com/hadirector/hadirector/internal/control"
)

// Engine is the director. Create it with New and start Run in a goroutine;
// every other method hands work to the Run goroutine, so they are safe from
// any goroutine.
type Engine struct {
	node    string
	version string
	log     *slog.Logger
	now     func() time.Time

	st   *state // owned by Run once it starts
	reqs chan func(*state)
	done chan struct{}
}

// state is owned by the Run goroutine; nothing else touches it.
type state struct {
	cfg        *config.Config
	started    time.Time
	loaded     time.Time
	reloads    int
	lastReload *control.ReloadStatus
}

// ErrStopped is returned by calls made when Run is not running.
var ErrStopped = errors.New("director is not running")

// New makes an engine for node in cfg.
func New(cfg *config.Config, node, version string, log *slog.Logger) (*Engine, error) {
	if cfg.Node(node) == nil {
		return nil, fmt.Errorf("node %q is not in %s", node, cfg.File)
	}
	now := time.Now()
	return &Engine{
		node: node, version: version, log: log, now: time.Now,
		st:   &state{cfg: cfg, started: now, loaded: now},
		reqs: make(chan func(*state)),
		done: make(chan struct{}),
	}, nil
}

// Run is the engine's loop. It returns when ctx ends.
func (e *Engine) Run(ctx context.Context) error {
	defer close(e.done)
	e.log.Info("director running", "cluster", e.st.cfg.Cluster.Name,
		"instances", len(e.st.cfg.Instances), "services", len(e.st.cfg.Services))
	for {
		select {
		case <-ctx.Done():
			e.log.Info("director stopped")
			return nil
		case f := <-e.reqs:
			f(e.st)
		}
	}
}

// do runs f on the loop and waits for it.
func (e *Engine) do(ctx context.Context, f func(*state)) error {
	finished := make(chan struct{})
	select {
	case e.reqs <- func(s *state) { f(s); close(finished) }:
	case <-e.done:
		return ErrStopped
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-finished:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Alive answers when the loop is making progress; the systemd watchdog is
// fed only while it does.
func (e *Engine) Alive(ctx context.Context) error {
	return e.do(ctx, func(*state) {})
}

// Reload applies a new, already validated config. It is refused (and the
// running config kept) when this node is not in it. It returns what changed.
func (e *Engine) Reload(ctx context.Context, cfg *config.Config) ([]config.Change, error) {
	var changes []config.Change
	var err error
	derr := e.do(ctx, func(s *state) {
		if cfg.Node(e.node) == nil {
			err = fmt.Errorf("node %q is not in the new config; nodes there: %v", e.node, cfg.NodeNames())
			s.lastReload = &control.ReloadStatus{At: e.now(), Error: err.Error()}
			return
		}
		changes = config.Diff(s.cfg, cfg)
		s.cfg, s.loaded = cfg, e.now()
		s.reloads++
		lr := &control.ReloadStatus{At: s.loaded, Applied: true}
		for _, c := range changes {
			lr.Changes = append(lr.Changes, c.String())
		}
		s.lastReload = lr
	})
	if derr != nil {
		return nil, derr
	}
	return changes, err
}

// RefuseReload records a reload that did not pass validation, for status.
func (e *Engine) RefuseReload(ctx context.Context, reason error) error {
	return e.do(ctx, func(s *state) {
		s.lastReload = &control.ReloadStatus{At: e.now(), Error: reason.Error()}
	})
}

// Status is a snapshot for the control socket.
func (e *Engine) Status(ctx context.Context) (*control.Status, error) {
	var st *control.Status
	err := e.do(ctx, func(s *state) { st = e.snapshot(s) })
	return st, err
}

func (e *Engine) snapshot(s *state) *control.Status {
	c := s.cfg
	st := &control.Status{
		Cluster: c.Cluster.Name, Node: e.node, Version: e.version, PID: os.Getpid(),
		Started: s.started, ConfigFile: c.File, Loaded: s.loaded, Reloads: s.reloads, LastReload: s.lastReload,
		Instances: []control.InstanceStatus{}, Services: []control.ServiceStatus{},
	}
	for i := range c.Instances {
		in := &c.Instances[i]
		is := control.InstanceStatus{
			Name: in.Name, VRID: in.VRID, Interface: in.Interface,
			// No election runs yet: every instance stays in RFC 5798's
			// Initialize state and owns no address.
			State:          "INIT",
			Priority:       c.PriorityOf(in, e.node),
			AdvertInterval: in.AdvertInterval.D(),
		}
		for _, v := range in.VIPs {
			is.VIPs = append(is.VIPs, v.String())
		}
		st.Instances = append(st.Instances, is)
	}
	for i := range c.Services {
		sv := &c.Services[i]
		ss := control.ServiceStatus{Name: sv.Name, Key: sv.Key(), Scheduler: string(sv.Scheduler), Forwarding: string(sv.Forwarding), RealServers: []control.RealStatus{}}
		for _, r := range sv.RealServers {
			ss.RealServers = append(ss.RealServers, control.RealStatus{Address: r.Address.String(), Weight: r.Weight, Health: "unchecked"})
		}
		st.Services = append(st.Services, ss)
	}
	return st
}
