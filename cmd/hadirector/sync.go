package main

import (
	"fmt"
	"log/slog"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/hadirector/hadirector/internal/config"
	"github.com/hadirector/hadirector/internal/connsync"
	"github.com/hadirector/hadirector/internal/control"
	"github.com/hadirector/hadirector/internal/vrrp"
)

// syncDaemons drives the kernel's IPVS connection-sync daemons from the
// [sync] section: the sysctl profile of this namespace, and the daemon
// roles. In mode "both" (the default) the master and backup roles run on
// both directors all the time, so a role switch never discards queued sync
// messages and a restarted node learns from the active one (backup_only is
// then forced to 0, or the node would stop directing). In "follow-role"
// the roles follow the first VRRP instance, as keepalived's
// lvs_sync_daemon does.
type syncDaemons struct {
	log *slog.Logger
	d   *connsync.Daemons

	mu     sync.Mutex
	cfg    *config.Config
	master bool // follow-role: the daemons are set for a MASTER instance
	// wantMaster is the instance's latest state; goroutines started by
	// transitions apply whatever is latest, so their order does not matter.
	wantMaster bool
	lastErr    string
	did        []string
	// listener decodes the peer's sync messages for status (nil if it
	// could not start: listenErr says why).
	listener  *connsync.Listener
	listenErr string
}

// openSync starts the sync daemons for cfg; nil without a [sync] section
// or with enabled = false. Errors are the operator's to fix before the
// daemon starts: a sync that silently does nothing loses connections at
// the next failover.
func openSync(cfg *config.Config, log *slog.Logger) (*syncDaemons, error) {
	if cfg.Sync == nil || !cfg.Sync.Enabled {
		return nil, nil
	}
	if err := connsync.CheckInterface(cfg.Sync.Interface, cfg.Sync.MaxLen); err != nil {
		return nil, fmt.Errorf("[sync]: %w", err)
	}
	d, err := connsync.Open("")
	if err != nil {
		return nil, fmt.Errorf("[sync]: %w", err)
	}
	s := &syncDaemons{log: log.With("part", "sync"), d: d, cfg: cfg}
	if err := s.apply(cfg); err != nil {
		d.Close()
		return nil, err
	}
	s.listen()
	return s, nil
}

// listen starts the passive decoder beside the kernel's backup daemon. It
// only observes: if it cannot start, sync works all the same, and status
// says why the counters are missing.
func (s *syncDaemons) listen() {
	s.mu.Lock()
	backup := s.wantLocked(s.cfg.Sync)
	s.mu.Unlock()
	ports := 1
	if v, err := connsync.ReadSysctl(connsync.SysctlDir, "sync_ports"); err == nil {
		if n, err := strconv.Atoi(v); err == nil && n > 0 {
			ports = n
		}
	}
	b := backup[len(backup)-1]
	b.Role = connsync.Backup
	l, err := connsync.Listen(connsync.ListenerFor(b, ports))
	if err != nil {
		s.listenErr = err.Error()
		s.log.Warn("sync message decoder not started (sync itself is not affected)", "err", err)
		return
	}
	s.listener = l
}

func (s *syncDaemons) Close() {
	if s != nil {
		if s.listener != nil {
			s.listener.Close()
		}
		s.d.Close()
	}
}

// apply sets the profile and reconciles the roles for cfg.
func (s *syncDaemons) apply(cfg *config.Config) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cfg = cfg
	return s.applyLocked()
}

func (s *syncDaemons) applyLocked() error {
	sc := s.cfg.Sync
	changed, err := connsync.ApplyProfile(connsync.SysctlDir, profile(s.cfg))
	for _, c := range changed {
		s.log.Info("sync sysctl set", "sysctl", "net.ipv4.vs."+c.Name, "value", c.Value)
	}
	if err == nil {
		var did []string
		did, err = connsync.Reconcile(s.d, s.wantLocked(sc))
		for _, a := range did {
			s.log.Info("sync daemon", "action", a)
		}
		s.did = append(s.did, did...)
		if n := len(s.did); n > 20 {
			s.did = s.did[n-20:]
		}
	}
	if err != nil {
		s.lastErr = err.Error()
		return fmt.Errorf("[sync]: %w", err)
	}
	s.lastErr = ""
	return nil
}

// wantLocked is the daemons the mode asks for now.
func (s *syncDaemons) wantLocked(sc *config.Sync) []connsync.DaemonConfig {
	base := connsync.DaemonConfig{Interface: sc.Interface, SyncID: uint32(sc.SyncID), MaxLen: uint16(sc.MaxLen),
		Port: uint16(sc.Port), TTL: uint8(sc.TTL)}
	if g, err := netip.ParseAddr(sc.Group); err == nil {
		base.Group = g
	}
	master, backup := base, base
	master.Role, backup.Role = connsync.Master, connsync.Backup
	switch {
	case sc.Mode != config.SyncFollowRole:
		return []connsync.DaemonConfig{master, backup}
	case s.master:
		return []connsync.DaemonConfig{master}
	}
	return []connsync.DaemonConfig{backup}
}

// profile is the [sync] section's sysctls; in mode "both" backup_only is
// always 0.
func profile(cfg *config.Config) connsync.Profile {
	sc := cfg.Sync
	var p connsync.Profile
	if cfg.Sysctl("sync_threshold") && len(sc.Threshold) == 2 {
		p.Threshold = &[2]int{sc.Threshold[0], sc.Threshold[1]}
	}
	if cfg.Sysctl("sync_refresh_period") {
		d := sc.RefreshPeriod.D()
		p.RefreshPeriod = &d
	}
	if cfg.Sysctl("sync_retries") {
		p.Retries = &sc.Retries
	}
	if cfg.Sysctl("sloppy_tcp") {
		p.SloppyTCP = &sc.SloppyTCP
	}
	if cfg.Sysctl("sloppy_sctp") {
		p.SloppySCTP = &sc.SloppySCTP
	}
	if sc.Mode != config.SyncFollowRole {
		off := false
		p.BackupOnly = &off
	}
	return p
}

// transition follows the first VRRP instance in follow-role mode. It runs
// off the engine's goroutine (a kernel call must not hold the election).
func (s *syncDaemons) transition(instance string, to vrrp.State) {
	if s == nil {
		return
	}
	s.mu.Lock()
	cfg := s.cfg
	if cfg.Sync.Mode != config.SyncFollowRole || len(cfg.Instances) == 0 || cfg.Instances[0].Name != instance {
		s.mu.Unlock()
		return
	}
	s.wantMaster = to == vrrp.Master
	s.mu.Unlock()
	go func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.master == s.wantMaster {
			return
		}
		s.master = s.wantMaster
		if err := s.applyLocked(); err != nil {
			s.log.Error("sync daemons not switched", "master", s.master, "err", err)
		}
	}()
}

// status is the sync daemons as the kernel has them, the sysctls, and what
// was done last.
func (s *syncDaemons) status() *control.SyncStatus {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	st := &control.SyncStatus{Mode: string(s.cfg.Sync.Mode), Interface: s.cfg.Sync.Interface, SyncID: s.cfg.Sync.SyncID,
		LastError: s.lastErr, Actions: append([]string(nil), s.did...)}
	s.mu.Unlock()
	running, err := s.d.List()
	if err != nil {
		st.LastError = err.Error()
	}
	for _, r := range running {
		st.Daemons = append(st.Daemons, r.String())
	}
	st.Sysctls = map[string]string{}
	for _, kv := range connsync.ReadProfile(connsync.SysctlDir) {
		st.Sysctls[kv.Name] = kv.Value
	}
	st.At = time.Now()
	st.Decoder = s.decoderStatus()
	return st
}

func (s *syncDaemons) decoderStatus() *control.DecoderStatus {
	if s.listener == nil {
		if s.listenErr == "" {
			return nil
		}
		return &control.DecoderStatus{Error: s.listenErr}
	}
	ls := s.listener.Stats()
	ds := &control.DecoderStatus{Messages: ls.Messages, Entries: ls.Entries, SocketDrops: ls.SocketDrops,
		LastSeen: ls.LastSeen, Senders: len(ls.Senders)}
	if ls.LastSender.IsValid() {
		ds.LastSender = ls.LastSender.String()
	}
	for r, n := range ls.Drops {
		if n > 0 {
			if ds.Drops == nil {
				ds.Drops = map[string]uint64{}
			}
			ds.Drops[connsync.DropReason(r).String()] = n
		}
	}
	for r, n := range ls.Skipped {
		if n > 0 {
			if ds.Skipped == nil {
				ds.Skipped = map[string]uint64{}
			}
			ds.Skipped[connsync.DropReason(r).String()] = n
		}
	}
	return ds
}
