package director

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/hadirector/hadirector/internal/config"
	"github.com/hadirector/hadirector/internal/healthcheck"
	"github.com/hadirector/hadirector/internal/ipvs"
)

// This file is the service policy, pure: given the config, the health of
// every real server and the operator's overrides, what each virtual service
// looks like in IPVS, and when its quorum is lost or regained. It owns no
// goroutine and touches nothing; lvs.go drives it.

// service is one virtual service as the engine runs it.
type service struct {
	cfg   *config.VirtualService
	key   string // cfg.Key(), the name the operator's overrides use
	svc   ipvs.Service
	reals []*real
	// quorumUp: the live weight was last at or above the quorum (with the
	// hysteresis band). While it is down, a sorry server takes the traffic.
	quorumUp bool
	quorumAt time.Time
	// What was last handed to the IPVS worker, so an event that changes
	// nothing in the kernel costs nothing.
	pushed    bool
	lastSvc   ipvs.Service
	lastDests []ipvs.Destination
}

// real is one real server of a service.
type real struct {
	cfg  *config.RealServer
	dest ipvs.Destination // as configured
	// target is the probe's id; "" when the real server has no check (it
	// then counts as healthy).
	target healthcheck.TargetID
	spec   healthcheck.Spec
	health healthcheck.State
	since  time.Time
	detail string
	// dynamic is the weight an exec check with dynamic_weight reported.
	dynamic    int
	hasDynamic bool
	// follow: this backup programs the master's verdict (peerDown) instead
	// of its own, so that its table is the master's when it takes over
	// (see peer.go).
	follow   bool
	peerDown bool
}

// up is the verdict the table follows: the master's while following it,
// else this node's own.
func (r *real) up() bool {
	if r.follow {
		return !r.peerDown
	}
	return r.health == healthcheck.StateUp
}

// override is what an operator set on a real server at run time. It is kept
// across reloads while the service and the real server exist.
type override struct {
	Drained   bool
	Weight    int
	HasWeight bool
	// At is when the operator set it, on either director: the newer of
	// the two directors' settings wins (peer.go).
	At time.Time
}

// active: the override changes something (an enable leaves only At, as a
// record that the setting was cleared then).
func (o override) active() bool { return o.Drained || o.HasWeight }

// adminKey names a real server of a service for overrides.
type adminKey struct {
	service string // config key: tcp/192.0.2.100:80, fwmark/1/inet
	real    netip.AddrPort
}

// targetID is the probe id of a real server of a service: unique per
// (service, real server), so two services probing one server in the same
// way share a probe (the manager dedups by check) but keep their own rise
// and fall.
func targetID(serviceKey string, addr netip.AddrPort) healthcheck.TargetID {
	return healthcheck.TargetID(serviceKey + " " + addr.String())
}

// newService builds a service from its config. Health starts at each
// check's initial state; real servers without a check are healthy.
func newService(cfg *config.VirtualService, now time.Time) (*service, error) {
	svc, err := ipvsService(cfg)
	if err != nil {
		return nil, err
	}
	s := &service{cfg: cfg, key: cfg.Key(), svc: svc, quorumAt: now}
	for i := range cfg.RealServers {
		rc := &cfg.RealServers[i]
		r := &real{cfg: rc, dest: ipvsDest(cfg, rc), health: healthcheck.StateUp, since: now}
		if rc.Check != nil {
			spec, err := checkSpec(rc.Check, rc.Address)
			if err != nil {
				return nil, fmt.Errorf("virtual_service %s: real_server %s: check: %w", cfg.Name, rc.Address, err)
			}
			r.target, r.spec, r.health = targetID(s.key, rc.Address.AddrPort()), spec, spec.Initial
		}
		s.reals = append(s.reals, r)
	}
	return s, nil
}

// weight is what the real server gets when it is healthy and not drained:
// the operator's weight, else an exec check's dynamic weight, else the
// configured one.
func (r *real) weight(o override) int {
	switch {
	case o.HasWeight:
		return o.Weight
	case r.hasDynamic:
		return r.dynamic
	}
	return r.cfg.Weight
}

// live: healthy and not drained, so it counts toward the quorum.
func (r *real) live(o override) bool {
	return r.up() && !o.Drained
}

// liveWeight is the sum of the live real servers' weights.
func (s *service) liveWeight(admin map[adminKey]override) int {
	sum := 0
	for _, r := range s.reals {
		o := admin[adminKey{s.key, r.cfg.Address.AddrPort()}]
		if r.live(o) {
			sum += r.weight(o)
		}
	}
	return sum
}

// updateQuorum moves the quorum state across its hysteresis band
// (keepalived's: lost below quorum − hysteresis, regained at quorum +
// hysteresis) and says whether it changed. The upper edge is capped at
// the configured total, so a service can always come back.
func (s *service) updateQuorum(admin map[adminKey]override, now time.Time) bool {
	live := s.liveWeight(admin)
	q, h := s.cfg.Quorum, s.cfg.QuorumHysteresis
	total := 0
	for _, r := range s.reals {
		total += r.cfg.Weight
	}
	up := s.quorumUp
	switch {
	case up && live < q-h:
		up = false
	case !up && live >= min(q+h, max(total, q)):
		up = true
	}
	if up == s.quorumUp {
		return false
	}
	s.quorumUp, s.quorumAt = up, now
	return true
}

// initQuorum sets the quorum state from scratch (no hysteresis: there is
// no previous state to hold).
func (s *service) initQuorum(admin map[adminKey]override) {
	s.quorumUp = s.liveWeight(admin) >= s.cfg.Quorum
}

// sorryActive: the sorry server takes the traffic now.
func (s *service) sorryActive() bool { return !s.quorumUp && s.cfg.SorryServer != nil }

// realEntry says what a real server is in IPVS: its weight, and whether it
// is there at all (a failed server with on_failure = "remove" is not).
// state is a word for status: up, down, drained, standby (healthy, but the
// sorry server has the traffic).
func (s *service) realEntry(r *real, o override) (d ipvs.Destination, present bool, state string) {
	d = r.dest
	switch {
	case o.Drained:
		d.Weight = 0
		return d, true, "drained"
	case !r.up():
		d.Weight = 0
		return d, s.cfg.OnFailure != config.FailRemove, "down"
	case s.sorryActive():
		// Below quorum with a sorry server: every new connection goes to
		// it; established ones on the live servers finish (weight 0, not
		// removed).
		d.Weight = 0
		return d, true, "standby"
	}
	d.Weight = r.weight(o)
	return d, true, "up"
}

// entries is the service as it must be in IPVS.
func (s *service) entries(admin map[adminKey]override) (ipvs.Service, []ipvs.Destination) {
	var ds []ipvs.Destination
	for _, r := range s.reals {
		if d, ok, _ := s.realEntry(r, admin[adminKey{s.key, r.cfg.Address.AddrPort()}]); ok {
			ds = append(ds, d)
		}
	}
	if s.sorryActive() {
		ds = append(ds, sorryDest(s.cfg))
	}
	return s.svc, ds
}

// sorryDest is the sorry server as a destination: the service's forwarding,
// except that DR and TUN cannot change the port, so a sorry server on
// another port is reached by NAT.
func sorryDest(cfg *config.VirtualService) ipvs.Destination {
	ss := cfg.SorryServer
	fwd := forwarding(cfg.Forwarding)
	if cfg.FWMark == 0 && ss.Port != cfg.Address.Port && fwd != ipvs.NAT {
		fwd = ipvs.NAT
	}
	return ipvs.Destination{Addr: ss.AddrPort(), Weight: 1, Forwarding: fwd}
}

// ---- config → ipvs / healthcheck ------------------------------------------

func forwarding(f config.Forwarding) ipvs.Forwarding {
	switch f {
	case config.NAT:
		return ipvs.NAT
	case config.TUN:
		return ipvs.Tunnel
	}
	return ipvs.DR
}

// IPVSService is a virtual service's config as an IPVS service.
func IPVSService(c *config.VirtualService) (ipvs.Service, error) { return ipvsService(c) }

func ipvsService(c *config.VirtualService) (ipvs.Service, error) {
	s := ipvs.Service{Scheduler: string(c.Scheduler), Persistence: c.Persistence.D()}
	if c.FWMark != 0 {
		s.FWMark = uint32(c.FWMark)
		s.Family = ipvs.IPv4
		if c.Family == config.IPv6 {
			s.Family = ipvs.IPv6
		}
	} else {
		s.Addr = c.Address.AddrPort()
		switch c.Protocol {
		case config.UDP:
			s.Protocol = ipvs.UDP
		case config.SCTP:
			s.Protocol = ipvs.SCTP
		default:
			s.Protocol = ipvs.TCP
		}
	}
	if c.Persistence > 0 {
		s.PersistencePrefix = c.PersistenceGranularity
		if s.PersistencePrefix == c.Family.Bits() {
			s.PersistencePrefix = 0
		}
	}
	for _, f := range c.SchedulerFlags {
		switch f {
		case "sh-fallback", "mh-fallback", "flag-1":
			s.Flags |= ipvs.FlagSched1
		case "sh-port", "mh-port", "flag-2":
			s.Flags |= ipvs.FlagSched2
		case "flag-3":
			s.Flags |= ipvs.FlagSched3
		}
	}
	if err := s.Validate(); err != nil {
		return s, fmt.Errorf("virtual_service %s: %w", c.Name, err)
	}
	return s, nil
}

func ipvsDest(s *config.VirtualService, r *config.RealServer) ipvs.Destination {
	return ipvs.Destination{
		Addr: r.Address.AddrPort(), Weight: r.Weight, Forwarding: forwarding(r.Forwarding),
		UpperThreshold: uint32(r.UpperThreshold), LowerThreshold: uint32(r.LowerThreshold),
	}
}

// checkSpec turns a real server's check into a probe spec.
func checkSpec(c *config.Check, rs config.Endpoint) (healthcheck.Spec, error) {
	spec := healthcheck.Spec{
		Interval: c.Interval.D(), Timeout: c.Timeout.D(), Rise: c.Rise, Fall: c.Fall,
		Initial: healthcheck.StateUp,
	}
	if c.Initial == config.InitialDown {
		spec.Initial = healthcheck.StateDown
	}
	port := rs.Port
	if c.Port != 0 {
		port = c.Port
	}
	addr := netip.AddrPortFrom(rs.Addr, uint16(port))
	switch c.Type {
	case config.CheckTCP:
		spec.Check = healthcheck.TCPSpec{Addr: addr}
	case config.CheckHTTP, config.CheckHTTPS:
		h := healthcheck.HTTPSpec{
			Addr: addr, TLS: c.Type == config.CheckHTTPS, Path: c.Path, Host: c.Host,
			BodyRegex: c.BodyRegex, BodySHA256: c.BodySHA256, ServerName: c.TLSServerName,
			VerifyTLS: c.VerifyTLS, CAFile: c.CAFile, KeepAlive: c.KeepAlive,
		}
		for _, r := range c.ExpectStatus {
			h.ExpectStatus = append(h.ExpectStatus, healthcheck.StatusRange{Lo: r.Lo, Hi: r.Hi})
		}
		spec.Check = h
	case config.CheckICMP:
		spec.Check = healthcheck.ICMPSpec{Addr: rs.Addr}
	case config.CheckExec:
		spec.Check = healthcheck.ExecSpec{Command: c.Command, Dynamic: c.DynamicWeight, Addr: rs.Addr, Port: uint16(rs.Port)}
	default:
		return spec, fmt.Errorf("unknown check type %q", c.Type)
	}
	return spec, spec.Validate()
}
