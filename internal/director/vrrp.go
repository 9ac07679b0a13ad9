package director

import (
	"errors"
	"net/netip"
	"time"

	"github.com/hadirector/hadirector/internal/config"
	"github.com/hadirector/hadirector/internal/control"
	"github.com/hadirector/hadirector/internal/vrrp"
)

// The VRRP side of the engine: one vrrp.Machine per instance, fed with
// adverts from the instance's VRRP socket and its extra links, and its
// actions carried out on the socket, the links and the VIPs.

// AdvertSocket sends VRRP packets on one interface and family
// (heartbeat.VRRPSocket).
type AdvertSocket interface {
	Send(payload []byte, dst netip.Addr) error
	Source() netip.Addr
	Group() netip.Addr
}

// RoutineSocket is an AdvertSocket that can keep a backup's routine adverts
// (those repeating its master's last one) from waking the engine, queued
// until it next wakes, which is no later than its Master_Down timer
// (heartbeat.VRRPSocket.SetRoutine; why that changes nothing, in
// heartbeat/routine.go). The engine reads such a socket's packets with
// their arrival times.
type RoutineSocket interface {
	SetRoutine(key any, src netip.Addr, head [6]byte, on bool) error
}

// VIPs holds one instance's virtual addresses (vip.Announcer).
type VIPs interface {
	Take() error
	Release() error
	Announce() error
}

// Link carries adverts to the other directors besides VRRP
// (heartbeat.UDPLink, heartbeat.SerialLink).
type Link interface {
	Name() string
	Send(payload []byte) error
}

// Transition is what the engine reports to hooks on every state change of
// an instance, or of a sync group (Group set, Instance empty, Priority 0 as
// keepalived reports groups).
type Transition struct {
	Instance string
	Group    string
	From, To vrrp.State
	Priority int
	Reason   string
	At       time.Time
}

// InstanceIO is what the engine needs to run one instance, built by cmd.
type InstanceIO struct {
	Socket AdvertSocket
	// Peers are the unicast destinations; empty means the group.
	Peers []netip.Addr
	VIPs  VIPs
	// Links are the extra links (by config name) that carry its adverts.
	Links []string
}

// Packet is a VRRP packet received on a socket (the IP payload with the
// addresses the checksum needs), or an advert envelope received on a link.
type Packet struct {
	Interface string
	Src, Dst  netip.Addr
	Payload   []byte
	Link      string // set when it came on an extra link
	At        time.Time
}

// instance is the engine's runtime state of one VRRP instance.
type instance struct {
	cfg     *config.Instance
	machine *vrrp.Machine
	io      InstanceIO
	advert  vrrp.Advert
	buf     []byte

	lastTransition time.Time
	lastReason     string
	stopped        bool
	group          *group
	fault          bool // a tracked interface (weight 0) is down
	delta          int  // the weights of the tracked interfaces that are down
	routine        routine
	acts           []vrrp.Action // lendActs
}

// lendActs lends the instance's action buffer, reused for the events of
// every advert so that an idle director allocates nothing; returnActs
// gives it back. While lent, a nested step of the same instance gets a
// buffer of its own.
func (in *instance) lendActs() []vrrp.Action {
	b := in.acts[:0]
	in.acts = nil
	return b
}

func (in *instance) returnActs(b []vrrp.Action) {
	clear(b)
	in.acts = b[:0]
}

// routine is the advert an instance's socket has been told is routine;
// none when src is not valid.
type routine struct {
	src  netip.Addr
	head [6]byte
}

// DropCounts counts received packets the engine did not act on, by reason.
type DropCounts map[vrrp.DropReason]uint64

func newInstance(cfg *config.Instance, prio int, primary netip.Addr, io InstanceIO) *instance {
	addrs := make([]netip.Addr, len(cfg.VIPs))
	for i, v := range cfg.VIPs {
		addrs[i] = v.Addr()
	}
	return &instance{
		cfg: cfg,
		machine: vrrp.New(vrrp.Config{
			VRID: uint8(cfg.VRID), Priority: uint8(prio), AdvertInterval: cfg.AdvertInterval.D(),
			Preempt: cfg.Preempt, PreemptDelay: cfg.PreemptDelay.D(), Primary: primary,
		}),
		io:     io,
		advert: vrrp.Advert{Version: 3, VRID: uint8(cfg.VRID), Interval: cfg.AdvertInterval.D(), Addrs: addrs},
	}
}

// noteRoutine tells the instance's socket which adverts are routine after
// it took in payload from src on that socket: while it is a backup that
// follows src (and src is not resigning), those that repeat this one.
func (e *Engine) noteRoutine(in *instance, src netip.Addr, payload []byte) {
	want := routine{}
	if len(payload) >= 6 && payload[2] != 0 && in.machine.State() == vrrp.Backup && in.machine.MasterAddr() == src {
		want = routine{src: src, head: [6]byte(payload[:6])}
	}
	e.setRoutine(in, want)
}

func (e *Engine) setRoutine(in *instance, want routine) {
	rs, ok := in.io.Socket.(RoutineSocket)
	if !ok || want == in.routine {
		return
	}
	if err := rs.SetRoutine(in, want.src, want.head, want.src.IsValid()); err != nil {
		// Not fatal: every advert still wakes the engine (the socket opens
		// its watched side first), and the next one tries again.
		e.log.Debug("routine adverts", "instance", in.cfg.Name, "err", err)
		return
	}
	in.routine = want
}

// send sends an advert of priority p to the group or every unicast peer,
// and over every extra link.
func (in *instance) send(p uint8) error {
	in.advert.Priority = p
	src := in.io.Socket.Source()
	dsts := in.io.Peers
	if len(dsts) == 0 {
		dsts = []netip.Addr{in.io.Socket.Group()}
	}
	var errs []error
	for _, dst := range dsts {
		b, err := in.advert.AppendMarshal(in.buf[:0], src, dst)
		if err != nil {
			return err
		}
		in.buf = b
		if err := in.io.Socket.Send(b, dst); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Link envelopes. Every node sends one on every link each link interval,
// so that both ends see a dead link: a master's carries its advert (fed to
// the peer's state machine), anyone else's is a bare keepalive (link health
// only: a backup's priority must never look like a rival master's advert).
//
//	version 1 | kind | name length | name | source (16 bytes, IPv4-mapped for
//	IPv4) | the advert as sent to the group
//
// The link frame around it is authenticated, so its contents are trusted as
// the peer's.
const (
	envelopeVersion   = 1
	envelopeKeepalive = 0
	envelopeAdvert    = 1
)

// keepaliveEnvelope is shared and read-only: links copy it into frames.
var keepaliveEnvelope = []byte{envelopeVersion, envelopeKeepalive, 0}

func keepalive() []byte { return keepaliveEnvelope }

// IsKeepalive says whether a link payload is a keepalive envelope: the
// engine has nothing to do with one (the link counted it as life), so
// whoever delivers link payloads may drop it instead of waking the engine.
func IsKeepalive(payload []byte) bool {
	return len(payload) >= 3 && payload[0] == envelopeVersion && payload[1] == envelopeKeepalive
}

func advertEnvelope(name string, src, group netip.Addr, a *vrrp.Advert) ([]byte, error) {
	b := make([]byte, 0, 3+len(name)+16+vrrp.HeaderLen+16*len(a.Addrs))
	b = append(b, envelopeVersion, envelopeAdvert, byte(len(name)))
	b = append(b, name...)
	s16 := src.As16()
	b = append(b, s16[:]...)
	return a.AppendMarshal(b, src, group)
}

// openEnvelope splits an envelope; ok is false for a keepalive.
func openEnvelope(b []byte) (name string, src netip.Addr, advert []byte, ok bool, err error) {
	if len(b) < 3 || b[0] != envelopeVersion || b[1] > envelopeAdvert {
		return "", netip.Addr{}, nil, false, errors.New("bad link envelope")
	}
	if b[1] == envelopeKeepalive {
		return "", netip.Addr{}, nil, false, nil
	}
	n := int(b[2])
	if len(b) < 3+n+16 {
		return "", netip.Addr{}, nil, false, errors.New("truncated link envelope")
	}
	name = string(b[3 : 3+n])
	src = netip.AddrFrom16([16]byte(b[3+n : 3+n+16])).Unmap()
	return name, src, b[3+n+16:], true, nil
}

func (in *instance) status(node string) control.InstanceStatus {
	m := in.machine
	st := control.InstanceStatus{
		Name: in.cfg.Name, VRID: in.cfg.VRID, Interface: in.cfg.Interface,
		State: m.State().String(), Priority: int(m.Priority()), AdvertInterval: in.cfg.AdvertInterval.D(),
		LastTransition: in.lastTransition, LastReason: in.lastReason,
	}
	if m.Stopping() {
		st.State += " (handing over)"
	}
	if a := m.MasterAddr(); a.IsValid() {
		st.Master = a.String()
	}
	for _, v := range in.cfg.VIPs {
		st.VIPs = append(st.VIPs, v.String())
	}
	st.Links = append(st.Links, in.io.Links...)
	return st
}
