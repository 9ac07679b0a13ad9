package heartbeat

// Process liveness: a TCP connection between the two directors' daemons
// whose only job is to break when the peer's process dies.
//
// # Why
//
// VRRP and the heartbeat links notice a dead master after DownAfter
// (3 × interval + margin). When only the master's *process* dies (SIGKILL,
// a crash, the OOM killer) and its host lives on, the host's kernel closes
// the process's sockets at once: a TCP connection held between the two
// daemons then delivers a FIN (or an RST) to the peer within a round trip.
// Liveness holds that connection and reports the FIN as LivenessLost:
// about half a millisecond from kill(2) to the event between two network
// namespaces of one host, the dying process's teardown included
// (BenchmarkLivenessKillToLost). Each connection is also held on a high
// descriptor (fdpin.go), so that the dying kernel releases it before the
// process's packet sockets, each of which waits for an RCU grace period.
// The engine may treat Lost from the master
// like a priority-0 advert and take over at once; Bye, Down and Connected
// call for nothing (the adverts and the timers decide as usual).
//
// # What Lost means, and what it does not
//
// LivenessLost means exactly: "the peer's kernel closed the established,
// authenticated connection without a bye", i.e. the peer process exited
// or closed it (a crash, a kill, Close without Bye, or a protocol error it
// detected); or a new instance of the peer authenticated while the old
// connection was still open here (ErrPeerRestarted). Nothing else produces
// it:
//   - Host death, power loss, a kernel panic, a cut cable: no FIN is ever
//     sent, so no Lost comes. The connection just sits there (half-open)
//     and Up stays true. That case stays with the VRRP / heartbeat timers.
//     If the link comes back while the dead process's kernel is still
//     retransmitting its FIN, Lost arrives then, late.
//   - A hung (deadlocked, SIGSTOPped) process keeps its sockets open: no
//     Lost. Liveness detects death, not hangs.
//   - Idleness never breaks the connection: nothing is sent after the
//     handshake, SO_KEEPALIVE is off and no timeout applies to an
//     established connection (LivenessConfig.Keepalive turns TCP
//     keepalive and TCP_USER_TIMEOUT on; their expiry is reported as
//     LivenessDown, never as Lost).
//   - Settling two connections into one (see "Who dials") never produces
//     an event.
//   - A graceful stop (Bye) sends an authenticated "bye" before closing:
//     the peer reports LivenessBye, not Lost; the VRRP priority-0 advert
//     handles the handover.
//   - A connection that never completed the handshake never produces an
//     event when it closes.
//   - The sockets are close-on-exec (Go's default), so a hook script the
//     daemon spawned cannot keep the connection open after the daemon
//     dies.
//
// Up therefore means "an authenticated connection to the peer's current
// process is believed open", not "the peer is alive": only the heartbeat
// timers can say the latter.
//
// # Who dials
//
// Both nodes listen on Local:Port, and both dial Peer:Port whenever they
// have no established connection (the first attempt at once, then with a
// backoff of BackoffMin doubling up to BackoffMax). So whichever side
// restarts, the restarted process dials the survivor on start-up and is
// Connected one round trip plus the handshake later; neither side waits
// for a backoff timer to expire. Neither side dials while connected.
//
// Two connections can exist at once: both sides dialed at the same moment,
// or one side lost its connection while the other did not notice. The node
// with the lower NodeID (bytewise) is the arbiter; a connection is
// established only when the arbiter says so (ACCEPT), so both ends always
// agree on the one established connection. The arbiter decides, for each
// newly authenticated connection:
//   - no established connection: accept it;
//   - the established one is from an earlier instance of the peer (the
//     peer process restarted and the old connection is half-open): report
//     Lost (Err = ErrPeerRestarted), then accept the new one (Connected);
//   - otherwise it sends PROBE on the established connection. A PROBE_ACK
//     means the peer still holds it: the new one is a duplicate and is
//     closed (the peer never established it, so closing it is silent). An
//     RST means the peer's socket is gone but the peer process is alive
//     (it just authenticated the new connection): the new connection
//     replaces the old one, with no event. No answer within ProbeTimeout:
//     the new one is closed.
//
// A live Liveness never closes an established connection without a BYE,
// except in Close (which is meant to look like a crash to the peer) and on
// a protocol violation by the peer.
//
// # Handshake
//
// Every connection, whichever side dialed it, is authenticated both ways
// before it counts for anything. Messages are type (1 byte), body length
// (1 byte), body. With Kl = HMAC-SHA256(key, "hadirector heartbeat v1\0" +
// "liveness v1\0" + Domain) (the key file's key is never used directly, and
// the label keeps it apart from every UDP link's key):
//
//	I → R  HELLO      "HDLV", version 1, nonce_I (32), instance_I (8), id_I
//	R → I  CHALLENGE  nonce_R (32), instance_R (8), id_R,
//	                  mac_R = HMAC(Kl, "…responder\0" || T)
//	I → R  PROOF      mac_I = HMAC(Kl, "…initiator\0" || T)
//
// T is the HELLO message followed by the CHALLENGE message up to mac_R, so
// both MACs cover both fresh nonces, both node ids, both instance ids and
// the version; the labels make a responder's MAC useless as an initiator's.
// The initiator checks mac_R before it sends anything that proves the key;
// the responder checks mac_I. The responder refuses a HELLO whose id is not
// PeerID (counted as an authentication failure); the listener refuses a
// connection from any address other than Peer before reading a byte
// (Refused) and resets it. The unauthenticated phase is bounded by
// HandshakeTimeout, and at most 8 inbound handshakes run at once.
//
// After the handshake, the session key Ks = HMAC(Kl, "…session\0" || T ||
// mac_R) authenticates the few messages that follow (ACCEPT, PROBE,
// PROBE_ACK, BYE): each carries HMAC(Ks, direction || sequence number ||
// type), the sequence number counted per direction, so a message can be
// neither forged, reflected, replayed nor moved to another connection.
// There are no periodic messages: a connection carries its handshake, an
// ACCEPT, at the end perhaps a BYE, and a PROBE with its answer only when
// a second connection shows up.
//
// The instance id is random per NewLiveness (per process start): it tells a
// restarted peer from a second connection of the same process.
//
// # Threat model
//
// As for the UDP link: an attacker on the path without the key. It cannot
// make a connection count (no Connected), forge a bye (which would turn a
// crash into a "graceful stop"), or make a connection from an address
// other than Peer count. It can forge a FIN or an RST (it sees the
// sequence numbers) and so cause a false Lost — but an on-path attacker
// can equally drop the VRRP adverts and make the backup take over, so this
// gives it nothing new. Off the path, RFC 5961 (Linux's challenge ACKs)
// makes blind resets impractical.
//
// # Namespaces
//
// The listener is created in the network namespace of the thread that
// calls NewLiveness, and so are the connections it dials later, although
// they are made on other threads: each dial runs on a locked thread that
// is moved into that namespace (setns, which needs CAP_SYS_ADMIN) when it
// is not already there, i.e. only when NewLiveness ran in another
// namespace than the process's (tests with netlab's Node.Do).

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"net"
	"net/netip"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultLivenessPort is the TCP port of the liveness connection: the
// number of the UDP heartbeat port (IANA's "ha-cluster" is registered for
// TCP and UDP).
const DefaultLivenessPort = DefaultUDPPort

// Liveness defaults (see LivenessConfig).
const (
	DefaultLivenessDialTimeout      = time.Second
	DefaultLivenessHandshakeTimeout = time.Second
	DefaultLivenessProbeTimeout     = 500 * time.Millisecond
	DefaultLivenessByeTimeout       = time.Second
	DefaultLivenessBackoffMin       = 10 * time.Millisecond
	DefaultLivenessBackoffMax       = time.Second
	// DefaultLivenessDomain is used when LivenessConfig.Domain is empty.
	DefaultLivenessDomain = "liveness"
)

// LivenessKind is what happened to the peer.
type LivenessKind uint8

// Liveness event kinds.
const (
	// LivenessConnected: an authenticated connection to the peer's
	// process is established.
	LivenessConnected LivenessKind = iota + 1
	// LivenessLost: the established connection was closed by the peer's
	// kernel (FIN or RST) without a bye: the peer process died (or closed
	// the connection without saying bye). Err is io.EOF,
	// io.ErrUnexpectedEOF or ECONNRESET; or ErrPeerRestarted when a new
	// instance of the peer connected while the old connection was still
	// open on this side (half-open: the old process is gone).
	LivenessLost
	// LivenessBye: the peer said bye (a graceful stop) and closed.
	LivenessBye
	// LivenessDown: the established connection ended without evidence of
	// the peer's death: a timeout (Keepalive's, or the kernel giving up
	// retransmitting), a protocol violation, or another socket error. Err
	// says which.
	LivenessDown
)

var livenessKindNames = [...]string{
	LivenessConnected: "connected",
	LivenessLost:      "lost",
	LivenessBye:       "bye",
	LivenessDown:      "down",
}

// String is a short lower-case name, usable as a metric label.
func (k LivenessKind) String() string {
	if int(k) < len(livenessKindNames) && livenessKindNames[k] != "" {
		return livenessKindNames[k]
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// LivenessEvent is one change of the peer's state.
type LivenessEvent struct {
	Peer string // the peer's node id
	Kind LivenessKind
	// At is when it was seen: for Lost, Bye and Down the moment the
	// connection's read returned; for Connected the moment of
	// establishment.
	At  time.Time
	Err error // the cause for Lost and Down; nil otherwise
	// Instance is the peer process's random instance id (a new one per
	// start), for logs.
	Instance uint64
}

// String is a one-line summary for logs.
func (e LivenessEvent) String() string {
	s := fmt.Sprintf("liveness: peer %s (instance %016x) %s", e.Peer, e.Instance, e.Kind)
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Liveness errors.
var (
	// ErrPeerRestarted is the Err of a Lost event reported because a new
	// instance of the peer authenticated while the connection to its
	// previous instance was still open here.
	ErrPeerRestarted = errors.New("heartbeat: liveness: the peer restarted while its old connection was still open here")
	// ErrByeUnconfirmed: Bye sent the bye but the peer did not close the
	// connection within ByeTimeout (it may still have received it).
	ErrByeUnconfirmed = errors.New("heartbeat: liveness: bye not confirmed by the peer")
)

// LivenessConfig configures a Liveness endpoint.
type LivenessConfig struct {
	// NodeID and PeerID are the two directors' node names (1..64 bytes,
	// different). The one that sorts first is the arbiter (see the file
	// documentation); both ends must use the same pair.
	NodeID, PeerID string
	// Local is this director's address; the listener is bound to it (not
	// to the wildcard) and connections are dialed from it. Peer is the
	// other director's address on the same network, same family. An IPv6
	// link-local address needs its zone ("fe80::1%eth1"). Connections
	// from any other address than Peer are refused.
	Local, Peer netip.Addr
	// Port is the TCP port on both ends; 0 means DefaultLivenessPort.
	Port int
	// Key is the shared key (LoadKey; the same file as a UDP link may
	// use), at least MinKeyLen bytes.
	Key []byte
	// Domain separates uses of the key; both ends must use the same.
	// The daemon passes "<cluster>/liveness". "" means
	// DefaultLivenessDomain.
	Domain string
	// OnPeer receives the events, on the endpoint's own goroutine, one at
	// a time and in order. It must not block, and must not call Bye or
	// Close (it may call Up and Stats). Nil discards events. No event is
	// delivered once Bye or Close has been called.
	OnPeer func(LivenessEvent)
	// DialTimeout bounds one connection attempt (0: 1 s).
	DialTimeout time.Duration
	// HandshakeTimeout bounds the unauthenticated phase of a connection
	// (0: 1 s).
	HandshakeTimeout time.Duration
	// BackoffMin and BackoffMax bound the delay between connection
	// attempts while not connected (0: 10 ms and 1 s). The delay starts at
	// BackoffMin and doubles after each failed attempt.
	BackoffMin, BackoffMax time.Duration
	// ProbeTimeout is how long the arbiter waits for the answer to a
	// PROBE (0: 500 ms).
	ProbeTimeout time.Duration
	// ByeTimeout bounds Bye's wait for the peer to confirm (0: 1 s).
	ByeTimeout time.Duration
	// Keepalive, if > 0, makes a connection to an unreachable peer end:
	// TCP keepalive probes after Keepalive of silence, every Keepalive,
	// and TCP_USER_TIMEOUT = 4 × Keepalive (which also bounds data left
	// unacknowledged, when keepalive does not probe); the end is reported
	// as LivenessDown (ETIMEDOUT), never as Lost. Whole seconds (the
	// kernel's unit), at least 1 s. The default 0 keeps both off: an idle
	// connection then never times out, and a half-open one (peer host
	// gone) stays Up until the peer comes back (ECONNRESET or a new
	// instance: Lost) or, if a message was left unacknowledged, until the
	// kernel gives up retransmitting (net.ipv4.tcp_retries2, about 15
	// minutes: Down).
	Keepalive time.Duration
}

// LivenessStats are an endpoint's state and counters.
type LivenessStats struct {
	Up bool
	// Since is when Up last changed (creation if never).
	Since time.Time
	// Instance is this endpoint's instance id; PeerInstance the peer's, as
	// of the last established connection (0 if none yet).
	Instance, PeerInstance uint64
	// Events reported, by kind.
	Connects, Losts, Byes, Downs uint64
	// Dials counts connection attempts, DialErrors the failed ones.
	Dials, DialErrors uint64
	// Accepted counts inbound connections from Peer.
	Accepted uint64
	// Refused counts inbound connections from other addresses.
	Refused uint64
	// Overflows counts inbound connections closed because too many
	// handshakes were in progress.
	Overflows uint64
	// AuthFailures counts handshakes that failed authentication: a wrong
	// MAC (another key or domain) or a wrong node id.
	AuthFailures uint64
	// HandshakeErrors counts other failed handshakes: malformed, another
	// version, timed out, or closed half-way (e.g. by a peer whose key
	// differs, which checked ours first).
	HandshakeErrors uint64
	// Handshakes counts successful handshakes.
	Handshakes uint64
	// Duplicates counts authenticated connections closed because another
	// one was established; Probes the PROBEs sent for them; Switches the
	// established connections replaced silently by another one to the same
	// peer instance.
	Duplicates, Probes, Switches uint64
}

// Wire format.
const (
	lvMagic    = "HDLV"
	lvVersion  = 1
	lvNonceLen = 32
	lvMaxBody  = 255
	lvHdrLen   = 2

	lvHello     byte = 1
	lvChallenge byte = 2
	lvProof     byte = 3
	lvAccept    byte = 4
	lvProbe     byte = 5
	lvProbeAck  byte = 6
	lvBye       byte = 7

	lvDirInitiator byte = 'I'
	lvDirResponder byte = 'R'

	lvKeyLabel  = "liveness v1\x00" // prefixes Domain in deriveKey
	lvLabelResp = "hadirector liveness v1 responder\x00"
	lvLabelInit = "hadirector liveness v1 initiator\x00"
	lvLabelSess = "hadirector liveness v1 session\x00"

	lvMaxPending   = 8 // inbound handshakes at once
	lvWriteTimeout = time.Second
)

var (
	errLvAuth     = errors.New("authentication failed")
	errLvProto    = errors.New("protocol error")
	errLvStopping = errors.New("stopping")
)

// Liveness is one director's end of the liveness connection. Create it with
// NewLiveness; stop it with Bye (graceful) or Close.
type Liveness struct {
	cfg      LivenessConfig
	p        lvParams
	arbiter  bool
	local    netip.AddrPort
	peer     netip.AddrPort
	network  string
	ln       net.Listener
	dialer   net.Dialer
	ns       *lvNetns
	ctx      context.Context // canceled by Close: aborts dials
	cancel   context.CancelFunc
	instance uint64

	inbox     chan lvEvent
	byeReq    chan chan lvByeReply
	quit      chan struct{}
	ownerDone chan struct{}
	stopping  atomic.Bool // Bye or Close called: no more dials, accepts or events
	closeOnce sync.Once
	closeErr  error
	wg        sync.WaitGroup

	mu      sync.Mutex // guards conns, closed, pending
	conns   map[*lconn]struct{}
	closed  bool
	pending int // inbound handshakes in progress

	up       atomic.Bool
	smu      sync.Mutex // guards since, peerInst (never held during callbacks)
	since    time.Time
	peerInst uint64
	st       lvCounters

	// Owned by the owner goroutine (run).
	est, cand, dialC *lconn
	dialing          bool
	backoff          time.Duration
	dialTimer        *time.Timer
	probeTimer       *time.Timer
	byeWait          *lconn
	byeDone          chan struct{}
}

type lvCounters struct {
	connects, losts, byes, downs, dials, dialErrors, accepted, refused, overflows,
	authFailures, handshakeErrors, handshakes, duplicates, probes, switches atomic.Uint64
}

// lvParams are what a handshake needs.
type lvParams struct {
	kl         []byte // Kl
	self, peer string
	inst       uint64
	stopping   *atomic.Bool // nil: never
}

// lconn is one TCP connection to the peer.
type lconn struct {
	nc     net.Conn
	dialed bool // we are the initiator
	pin    int  // a duplicate of nc's socket on a high descriptor (fdpin.go); 0: none

	closeOnce sync.Once

	wmu     sync.Mutex // serialises writes after the first handshake message
	sess    *lvSession // set (under wmu) once Ks is known
	byeSent bool       // under wmu

	peerInst uint64 // set by the handshake, read by the owner after evAuthed

	// owner-only
	authed bool
	est    bool
	// staleInst: the instance whose established connection was lost
	// while this one was still in its handshake (0: none; instances are
	// never 0). If this one turns out to be from that same, dead, process
	// it is dropped, never established.
	staleInst uint64
}

// stale says whether c, authenticated, is from a process already lost.
func (c *lconn) stale() bool { return c.staleInst != 0 && c.peerInst == c.staleInst }

type lvEventKind uint8

const (
	evDialFailed lvEventKind = iota + 1
	evDialed
	evAuthed
	evMsg
	evClosed
)

// lvEvent is what the connection goroutines tell the owner.
type lvEvent struct {
	kind lvEventKind
	c    *lconn
	typ  byte
	err  error
	at   time.Time
}

type lvByeReply struct {
	done <-chan struct{} // closed when the peer closed the connection (nil: nothing to wait for)
	err  error
}

// NewLiveness binds the listener to Local:Port and starts connecting to the
// peer. It returns at once; the first event comes when the peer is reached.
func NewLiveness(cfg LivenessConfig) (*Liveness, error) {
	if err := checkNodeID(cfg.NodeID); err != nil {
		return nil, fmt.Errorf("heartbeat: liveness: node id: %w", err)
	}
	if err := checkNodeID(cfg.PeerID); err != nil {
		return nil, fmt.Errorf("heartbeat: liveness: peer id: %w", err)
	}
	if cfg.NodeID == cfg.PeerID {
		return nil, fmt.Errorf("heartbeat: liveness: peer id equals node id %q", cfg.NodeID)
	}
	if err := checkKey(cfg.Key); err != nil {
		return nil, fmt.Errorf("heartbeat: liveness: %w", err)
	}
	if cfg.Port == 0 {
		cfg.Port = DefaultLivenessPort
	}
	if cfg.Port < 1 || cfg.Port > 65535 {
		return nil, fmt.Errorf("heartbeat: liveness: port %d out of range", cfg.Port)
	}
	if cfg.Domain == "" {
		cfg.Domain = DefaultLivenessDomain
	}
	for _, d := range []struct {
		v   *time.Duration
		def time.Duration
		n   string
	}{
		{&cfg.DialTimeout, DefaultLivenessDialTimeout, "dial timeout"},
		{&cfg.HandshakeTimeout, DefaultLivenessHandshakeTimeout, "handshake timeout"},
		{&cfg.BackoffMin, DefaultLivenessBackoffMin, "minimum backoff"},
		{&cfg.BackoffMax, DefaultLivenessBackoffMax, "maximum backoff"},
		{&cfg.ProbeTimeout, DefaultLivenessProbeTimeout, "probe timeout"},
		{&cfg.ByeTimeout, DefaultLivenessByeTimeout, "bye timeout"},
	} {
		switch {
		case *d.v < 0:
			return nil, fmt.Errorf("heartbeat: liveness: negative %s %v", d.n, *d.v)
		case *d.v == 0:
			*d.v = d.def
		}
	}
	if cfg.BackoffMin > cfg.BackoffMax {
		return nil, fmt.Errorf("heartbeat: liveness: minimum backoff %v above maximum %v", cfg.BackoffMin, cfg.BackoffMax)
	}
	if cfg.Keepalive < 0 || (cfg.Keepalive > 0 && (cfg.Keepalive < time.Second || cfg.Keepalive%time.Second != 0)) {
		return nil, fmt.Errorf("heartbeat: liveness: keepalive %v: want 0 (off) or whole seconds ≥ 1s", cfg.Keepalive)
	}
	local, peer, err := livenessAddrs(cfg.Local, cfg.Peer)
	if err != nil {
		return nil, err
	}

	ctx, cancel := context.WithCancel(context.Background())
	l := &Liveness{
		cfg:       cfg,
		arbiter:   cfg.NodeID < cfg.PeerID,
		local:     netip.AddrPortFrom(local, uint16(cfg.Port)),
		peer:      netip.AddrPortFrom(peer, uint16(cfg.Port)),
		network:   "tcp6",
		ctx:       ctx,
		cancel:    cancel,
		instance:  randomInstance(),
		inbox:     make(chan lvEvent, 64),
		byeReq:    make(chan chan lvByeReply),
		quit:      make(chan struct{}),
		ownerDone: make(chan struct{}),
		conns:     map[*lconn]struct{}{},
		since:     time.Now(),
		backoff:   cfg.BackoffMin,
	}
	if local.Is4() {
		l.network = "tcp4"
	}
	l.p = lvParams{
		kl:   deriveKey(cfg.Key, lvKeyLabel+cfg.Domain),
		self: cfg.NodeID, peer: cfg.PeerID, inst: l.instance, stopping: &l.stopping,
	}
	keep := net.KeepAliveConfig{Enable: false}
	keepPeriod := time.Duration(-1)
	if cfg.Keepalive > 0 {
		keep = net.KeepAliveConfig{Enable: true, Idle: cfg.Keepalive, Interval: cfg.Keepalive, Count: 3}
		keepPeriod = cfg.Keepalive
	}
	l.dialer = net.Dialer{
		LocalAddr:       net.TCPAddrFromAddrPort(netip.AddrPortFrom(local, 0)),
		KeepAlive:       keepPeriod,
		KeepAliveConfig: keep,
	}
	lc := net.ListenConfig{
		KeepAlive:       keepPeriod,
		KeepAliveConfig: keep,
		Control: func(_, _ string, rc syscall.RawConn) error {
			// Go sets SO_REUSEADDR on listeners already; say it anyway:
			// a restarted daemon must rebind at once, whatever its old
			// connections' TIME_WAIT state.
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
			})
			return errors.Join(err, serr)
		},
	}
	ln, err := lc.Listen(ctx, l.network, l.local.String())
	if err != nil {
		cancel()
		return nil, fmt.Errorf("heartbeat: liveness: %w", err)
	}
	l.ln = ln
	l.ns = captureNetns()
	l.dialTimer = time.NewTimer(0) // the first attempt at once
	l.probeTimer = time.NewTimer(time.Hour)
	l.probeTimer.Stop()
	l.wg.Add(2)
	go l.run()
	go l.acceptLoop()
	return l, nil
}

func livenessAddrs(local, peer netip.Addr) (netip.Addr, netip.Addr, error) {
	local, peer = local.Unmap(), peer.Unmap()
	switch {
	case !local.IsValid() || !peer.IsValid() || local.IsUnspecified() || peer.IsUnspecified():
		return local, peer, fmt.Errorf("heartbeat: liveness: need a local and a peer unicast address (have %v, %v)", local, peer)
	case local.Is4() != peer.Is4():
		return local, peer, fmt.Errorf("heartbeat: liveness: local %v and peer %v are of different families", local, peer)
	case local.IsMulticast() || peer.IsMulticast():
		return local, peer, errors.New("heartbeat: liveness: multicast address")
	}
	if peer.Zone() == "" && local.Zone() != "" && peer.IsLinkLocalUnicast() {
		peer = peer.WithZone(local.Zone())
	}
	// Resolve zone names now, in the caller's namespace (see udp.go).
	for _, a := range []*netip.Addr{&local, &peer} {
		if z := a.Zone(); z != "" {
			if _, err := strconv.Atoi(z); err != nil {
				ifi, err := net.InterfaceByName(z)
				if err != nil {
					return local, peer, fmt.Errorf("heartbeat: liveness: zone of %v: %w", *a, err)
				}
				*a = a.WithZone(strconv.Itoa(ifi.Index))
			}
		}
	}
	if local.WithZone("") == peer.WithZone("") {
		return local, peer, fmt.Errorf("heartbeat: liveness: local and peer are both %v", local)
	}
	return local, peer, nil
}

func randomInstance() uint64 {
	for {
		if v := randomEpoch(); v != 0 {
			return v
		}
	}
}

// Up reports whether an authenticated connection to the peer is
// established (see the file documentation for what that does and does not
// mean).
func (l *Liveness) Up() bool { return l.up.Load() }

// Addr is the listener's address.
func (l *Liveness) Addr() netip.AddrPort { return l.local }

// Instance is this endpoint's random instance id.
func (l *Liveness) Instance() uint64 { return l.instance }

// Stats returns a snapshot.
func (l *Liveness) Stats() LivenessStats {
	l.smu.Lock()
	since, pi := l.since, l.peerInst
	l.smu.Unlock()
	c := &l.st
	return LivenessStats{
		Up: l.up.Load(), Since: since, Instance: l.instance, PeerInstance: pi,
		Connects: c.connects.Load(), Losts: c.losts.Load(), Byes: c.byes.Load(), Downs: c.downs.Load(),
		Dials: c.dials.Load(), DialErrors: c.dialErrors.Load(),
		Accepted: c.accepted.Load(), Refused: c.refused.Load(), Overflows: c.overflows.Load(),
		AuthFailures: c.authFailures.Load(), HandshakeErrors: c.handshakeErrors.Load(), Handshakes: c.handshakes.Load(),
		Duplicates: c.duplicates.Load(), Probes: c.probes.Load(), Switches: c.switches.Load(),
	}
}

// Bye is the graceful stop: it sends an authenticated bye on the
// connection (and on any connection still in its handshake), waits up to
// ByeTimeout for the peer to close it (the peer reports LivenessBye, not
// Lost), then closes everything like Close. Without an established
// connection it just closes. It returns ErrByeUnconfirmed (joined with any
// write error) if the peer did not confirm; the endpoint is closed either
// way. Calling it after Bye or Close returns ErrClosed.
func (l *Liveness) Bye() error {
	if !l.stopping.CompareAndSwap(false, true) {
		return ErrClosed
	}
	reply := make(chan lvByeReply, 1)
	var r lvByeReply
	select {
	case l.byeReq <- reply:
		r = <-reply
	case <-l.ownerDone:
	}
	err := r.err
	if r.done != nil {
		t := time.NewTimer(l.cfg.ByeTimeout)
		select {
		case <-r.done:
		case <-t.C:
			err = errors.Join(err, ErrByeUnconfirmed)
		case <-l.ownerDone:
		}
		t.Stop()
	}
	return errors.Join(err, l.close())
}

// Close stops the endpoint: it closes the listener and every connection
// (without a bye, so the peer reports LivenessLost, as for a crash: use Bye
// for a graceful stop) and waits for its goroutines. It is idempotent.
func (l *Liveness) Close() error {
	l.stopping.Store(true)
	return l.close()
}

func (l *Liveness) close() error {
	l.closeOnce.Do(func() {
		l.closeErr = l.ln.Close()
		l.cancel()
		close(l.quit)
		l.wg.Wait()
		l.ns.close()
	})
	return l.closeErr
}

// report hands an event to the owner; after Close it is dropped.
func (l *Liveness) report(ev lvEvent) {
	select {
	case l.inbox <- ev:
	case <-l.quit:
	}
}

// register records a new connection; it closes it and returns false when
// the endpoint is closed or (inbound) too many handshakes are running.
func (l *Liveness) register(c *lconn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		c.close()
		return false
	}
	if !c.dialed {
		if l.pending >= lvMaxPending {
			l.st.overflows.Add(1)
			c.close()
			return false
		}
		l.pending++
	}
	l.conns[c] = struct{}{}
	return true
}

func (l *Liveness) handshakeDone(c *lconn) {
	if c.dialed {
		return
	}
	l.mu.Lock()
	l.pending--
	l.mu.Unlock()
}

func (l *Liveness) acceptLoop() {
	defer l.wg.Done()
	for {
		nc, err := l.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			select { // e.g. EMFILE: do not spin
			case <-l.quit:
				return
			case <-time.After(10 * time.Millisecond):
			}
			continue
		}
		ra, _ := nc.RemoteAddr().(*net.TCPAddr)
		if ra == nil || ra.AddrPort().Addr().Unmap().WithZone("") != l.peer.Addr().WithZone("") {
			l.st.refused.Add(1)
			if tc, ok := nc.(*net.TCPConn); ok {
				_ = tc.SetLinger(0) // reset, not a polite close
			}
			nc.Close()
			continue
		}
		if l.stopping.Load() {
			nc.Close()
			continue
		}
		l.setUserTimeout(nc)
		c := &lconn{nc: nc, pin: pinHigh(nc)}
		if !l.register(c) {
			continue
		}
		l.st.accepted.Add(1)
		l.wg.Go(func() { l.serve(c) })
	}
}

func (l *Liveness) dial() {
	defer l.wg.Done()
	ctx, cancel := context.WithTimeout(l.ctx, l.cfg.DialTimeout)
	defer cancel()
	var nc net.Conn
	err := l.ns.do(func() (err error) {
		nc, err = l.dialer.DialContext(ctx, l.network, l.peer.String())
		return err
	})
	l.st.dials.Add(1)
	if err != nil {
		if nc != nil {
			nc.Close()
		}
		l.st.dialErrors.Add(1)
		l.report(lvEvent{kind: evDialFailed, err: err})
		return
	}
	l.setUserTimeout(nc)
	c := &lconn{nc: nc, dialed: true, pin: pinHigh(nc)}
	if !l.register(c) {
		l.report(lvEvent{kind: evDialFailed, err: ErrClosed})
		return
	}
	l.report(lvEvent{kind: evDialed, c: c})
	l.serve(c)
}

// setUserTimeout sets TCP_USER_TIMEOUT when Keepalive is on: keepalive
// alone does not probe while data is unacknowledged.
func (l *Liveness) setUserTimeout(nc net.Conn) {
	tc, ok := nc.(*net.TCPConn)
	if l.cfg.Keepalive <= 0 || !ok {
		return
	}
	if rc, err := tc.SyscallConn(); err == nil {
		_ = rc.Control(func(fd uintptr) {
			_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(4*l.cfg.Keepalive/time.Millisecond))
		})
	}
}

// serve runs one connection: the handshake, then the reader.
func (l *Liveness) serve(c *lconn) {
	_ = c.nc.SetDeadline(time.Now().Add(l.cfg.HandshakeTimeout))
	var err error
	if c.dialed {
		err = c.initiate(&l.p)
	} else {
		err = c.respond(&l.p)
	}
	l.handshakeDone(c)
	if err != nil {
		switch {
		case errors.Is(err, errLvStopping), l.stopping.Load():
		case errors.Is(err, errLvAuth):
			l.st.authFailures.Add(1)
		default:
			l.st.handshakeErrors.Add(1)
		}
		l.report(lvEvent{kind: evClosed, c: c, err: err, at: time.Now()})
		return
	}
	_ = c.nc.SetDeadline(time.Time{})
	l.st.handshakes.Add(1)
	l.report(lvEvent{kind: evAuthed, c: c})
	var buf [lvHdrLen + lvMaxBody]byte
	for {
		typ, err := c.readSealed(&buf)
		at := time.Now()
		if err != nil {
			l.report(lvEvent{kind: evClosed, c: c, err: err, at: at})
			return
		}
		l.report(lvEvent{kind: evMsg, c: c, typ: typ, at: at})
	}
}

// run is the owner goroutine: it alone changes the connection state and
// calls OnPeer.
func (l *Liveness) run() {
	defer l.wg.Done()
	defer close(l.ownerDone)
	for {
		select {
		case ev := <-l.inbox:
			l.handle(ev)
		case <-l.dialTimer.C:
			l.startDial()
		case <-l.probeTimer.C:
			if l.cand != nil { // no answer: keep the established one
				l.duplicate(l.cand)
			}
		case reply := <-l.byeReq:
			reply <- l.sayBye()
		case <-l.quit:
			l.shutdown()
			return
		}
	}
}

func (l *Liveness) shutdown() {
	l.mu.Lock()
	l.closed = true
	for c := range l.conns {
		c.close()
	}
	l.mu.Unlock()
	l.dialTimer.Stop()
	l.probeTimer.Stop()
	l.est, l.cand = nil, nil
	l.setUp(false, time.Now(), 0)
}

func (l *Liveness) handle(ev lvEvent) {
	c := ev.c
	switch ev.kind {
	case evDialFailed:
		l.dialing = false
		l.scheduleDial()
	case evDialed:
		l.dialC = c
	case evAuthed:
		c.authed = true
		if l.stopping.Load() || c.stale() {
			l.drop(c)
			return
		}
		if l.arbiter {
			l.arbitrate(c)
		}
	case evMsg:
		l.message(c, ev.typ, ev.at)
	case evClosed:
		l.closed1(c, ev.err, ev.at)
	}
}

// arbitrate decides about a newly authenticated connection (arbiter only).
func (l *Liveness) arbitrate(c *lconn) {
	switch {
	case l.est == nil:
		l.establish(c, true)
	case l.est.peerInst != c.peerInst:
		// The peer restarted; its old connection is half-open here.
		old := l.est
		l.drop(old)
		l.lost(LivenessLost, time.Now(), old.peerInst, ErrPeerRestarted)
		l.establish(c, true)
	case l.cand != nil:
		l.duplicate(c)
	default:
		l.cand = c
		l.st.probes.Add(1)
		_ = l.est.send(lvProbe) // on error the reader reports the close
		l.probeTimer.Reset(l.cfg.ProbeTimeout)
	}
}

// establish makes c the established connection (sending ACCEPT when we are
// the arbiter) and reports Connected if notify.
func (l *Liveness) establish(c *lconn, notify bool) {
	if l.arbiter {
		_ = c.send(lvAccept) // on error the reader reports the close: Lost follows
	}
	if l.cand != nil && l.cand != c && l.cand.peerInst != c.peerInst {
		l.drop(l.cand)
	}
	if l.cand == c {
		l.cand = nil
		l.probeTimer.Stop()
	}
	c.est = true
	l.est = c
	if c == l.dialC {
		l.dialC, l.dialing = nil, false
	}
	l.backoff = l.cfg.BackoffMin
	if !notify {
		l.st.switches.Add(1)
		return
	}
	now := time.Now()
	l.setUp(true, now, c.peerInst)
	l.emit(LivenessConnected, now, c.peerInst, nil)
}

// duplicate closes an authenticated connection that will not be used.
func (l *Liveness) duplicate(c *lconn) {
	l.st.duplicates.Add(1)
	l.drop(c)
}

// drop closes c and forgets it as est/cand/dialC, with no event.
func (l *Liveness) drop(c *lconn) {
	c.close()
	c.est = false
	if l.est == c {
		l.est = nil
	}
	if l.cand == c {
		l.cand = nil
		l.probeTimer.Stop()
	}
	if l.dialC == c {
		l.dialC, l.dialing = nil, false
		l.scheduleDial()
	}
}

func (l *Liveness) message(c *lconn, typ byte, at time.Time) {
	switch typ {
	case lvAccept:
		if l.arbiter || !c.authed || c.est || c.stale() || l.stopping.Load() {
			return
		}
		switch {
		case l.est == nil:
			l.establish(c, true)
		case l.est.peerInst == c.peerInst:
			l.drop(l.est) // the arbiter moved on; it no longer holds the old one
			l.establish(c, false)
		default:
			old := l.est
			l.drop(old)
			l.lost(LivenessLost, at, old.peerInst, ErrPeerRestarted)
			l.establish(c, true)
		}
	case lvProbe:
		if !l.arbiter && c == l.est {
			_ = c.send(lvProbeAck)
		}
	case lvProbeAck:
		if l.arbiter && c == l.est && l.cand != nil {
			l.duplicate(l.cand)
		}
	case lvBye:
		if c == l.byeWait && l.byeDone != nil { // both said bye at once
			close(l.byeDone)
			l.byeDone = nil
		}
		if l.stopping.Load() {
			return
		}
		if l.est != nil && l.est.peerInst == c.peerInst {
			old := l.est
			l.drop(old)
			if l.cand != nil {
				l.drop(l.cand)
			}
			l.lost(LivenessBye, at, old.peerInst, nil)
		}
		if c != l.est {
			l.drop(c)
		}
	}
}

// closed1 handles the end of connection c (read error, EOF, failed
// handshake, or our own Close of it).
func (l *Liveness) closed1(c *lconn, err error, at time.Time) {
	l.mu.Lock()
	delete(l.conns, c)
	l.mu.Unlock()
	c.close()
	if c == l.byeWait && l.byeDone != nil {
		close(l.byeDone)
		l.byeDone = nil
	}
	wasEst := c == l.est
	switch {
	case c == l.cand:
		l.cand = nil
		l.probeTimer.Stop()
	case wasEst:
		l.est = nil
		c.est = false
	}
	if c == l.dialC {
		l.dialC, l.dialing = nil, false
		if !wasEst {
			l.scheduleDial()
		}
	}
	if !wasEst || l.stopping.Load() {
		return
	}
	if l.arbiter && l.cand != nil && l.cand.peerInst == c.peerInst {
		// The peer's socket is gone (our PROBE got an RST) but the peer
		// process is alive: it just authenticated the candidate.
		l.establish(l.cand, false)
		return
	}
	if l.cand != nil {
		l.drop(l.cand)
	}
	// A dying peer's kernel closes its sockets one by one, and another
	// connection of the same process may carry a finished handshake:
	// establishing it would report Connected, then a second Lost, for a
	// process that is gone. Close those already known to be from it;
	// those still in their handshake are dropped if they turn out to be
	// (a new instance's connection is kept: it may be established on the
	// peer's side already).
	l.mu.Lock()
	for o := range l.conns {
		switch {
		case o == c:
		case o.authed && o.peerInst == c.peerInst:
			o.close()
		case !o.authed:
			o.staleInst = c.peerInst
		}
	}
	l.mu.Unlock()
	kind := LivenessDown
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) {
		kind = LivenessLost
	}
	l.lost(kind, at, c.peerInst, err)
}

// lost reports the end of the established connection (Lost, Bye or Down)
// and starts reconnecting.
func (l *Liveness) lost(kind LivenessKind, at time.Time, inst uint64, err error) {
	l.setUp(false, at, inst)
	l.emit(kind, at, inst, err)
	l.backoff = l.cfg.BackoffMin
	l.scheduleDial()
}

func (l *Liveness) setUp(up bool, at time.Time, inst uint64) {
	if l.up.Swap(up) == up {
		return
	}
	l.smu.Lock()
	l.since = at
	if inst != 0 {
		l.peerInst = inst
	}
	l.smu.Unlock()
}

func (l *Liveness) emit(kind LivenessKind, at time.Time, inst uint64, err error) {
	if l.stopping.Load() {
		return
	}
	switch kind {
	case LivenessConnected:
		l.st.connects.Add(1)
	case LivenessLost:
		l.st.losts.Add(1)
	case LivenessBye:
		l.st.byes.Add(1)
	case LivenessDown:
		l.st.downs.Add(1)
	}
	if l.cfg.OnPeer != nil {
		l.cfg.OnPeer(LivenessEvent{Peer: l.cfg.PeerID, Kind: kind, At: at, Err: err, Instance: inst})
	}
}

// scheduleDial arms the next connection attempt, if one is needed, after
// the current backoff, which then doubles (up to BackoffMax).
func (l *Liveness) scheduleDial() {
	if l.stopping.Load() || l.est != nil || l.dialing {
		return
	}
	l.dialTimer.Reset(l.backoff)
	l.backoff = min(2*l.backoff, l.cfg.BackoffMax)
}

func (l *Liveness) startDial() {
	if l.stopping.Load() || l.est != nil || l.dialing {
		return
	}
	l.dialing = true
	l.wg.Add(1)
	go l.dial()
}

// sayBye sends BYE on every connection that has a session key, and
// arranges for Bye to wait for the established one to be closed by the
// peer.
func (l *Liveness) sayBye() lvByeReply {
	l.mu.Lock()
	conns := make([]*lconn, 0, len(l.conns))
	for c := range l.conns {
		conns = append(conns, c)
	}
	l.mu.Unlock()
	var r lvByeReply
	for _, c := range conns {
		err := c.sendBye()
		if c == l.est && err != nil {
			r.err = fmt.Errorf("heartbeat: liveness: bye: %w", err)
		}
	}
	if l.est != nil && r.err == nil {
		l.byeWait = l.est
		l.byeDone = make(chan struct{})
		r.done = l.byeDone
	}
	return r
}

// --- connection and wire format ---

// close closes the connection and its pin, once: the FIN leaves when both
// are closed.
func (c *lconn) close() {
	c.closeOnce.Do(func() {
		if c.pin > 0 {
			_ = unix.Close(c.pin)
		}
		_ = c.nc.Close()
	})
}

// send writes one sealed message (post-handshake).
func (c *lconn) send(typ byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.sess == nil || c.byeSent {
		return errLvStopping
	}
	return c.writeLocked(c.sess.seal(typ))
}

func (c *lconn) sendBye() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.sess == nil || c.byeSent {
		return nil
	}
	c.byeSent = true
	return c.writeLocked(c.sess.seal(lvBye))
}

func (c *lconn) writeLocked(msg []byte) error {
	_ = c.nc.SetWriteDeadline(time.Now().Add(lvWriteTimeout))
	_, err := c.nc.Write(msg)
	return err
}

// readSealed reads one post-handshake message and checks its MAC.
func (c *lconn) readSealed(buf *[lvHdrLen + lvMaxBody]byte) (byte, error) {
	typ, raw, err := readLvMsg(c.nc, buf)
	if err != nil {
		return 0, err
	}
	switch typ {
	case lvAccept, lvProbe, lvProbeAck, lvBye:
	default:
		return 0, fmt.Errorf("%w: unexpected message type %d", errLvProto, typ)
	}
	if !c.sess.open(typ, raw[lvHdrLen:]) {
		return 0, fmt.Errorf("%w: bad MAC on message type %d", errLvProto, typ)
	}
	return typ, nil
}

// readLvMsg reads one message: type, length, body. raw aliases buf.
func readLvMsg(r io.Reader, buf *[lvHdrLen + lvMaxBody]byte) (typ byte, raw []byte, err error) {
	if _, err := io.ReadFull(r, buf[:lvHdrLen]); err != nil {
		return 0, nil, err
	}
	n := lvHdrLen + int(buf[1])
	if _, err := io.ReadFull(r, buf[lvHdrLen:n]); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, err
	}
	return buf[0], buf[:n], nil
}

func lvMAC(key []byte, label string, parts ...[]byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(label))
	for _, p := range parts {
		m.Write(p)
	}
	return m.Sum(nil)
}

// initiate runs the initiator's side of the handshake.
func (c *lconn) initiate(p *lvParams) error {
	var nonce [lvNonceLen]byte
	_, _ = rand.Read(nonce[:])
	hello := make([]byte, lvHdrLen, lvHdrLen+lvMaxBody)
	hello[0] = lvHello
	hello = append(hello, lvMagic...)
	hello = append(hello, lvVersion)
	hello = append(hello, nonce[:]...)
	hello = binary.BigEndian.AppendUint64(hello, p.inst)
	hello = append(hello, byte(len(p.self)))
	hello = append(hello, p.self...)
	hello[1] = byte(len(hello) - lvHdrLen)
	if _, err := c.nc.Write(hello); err != nil {
		return err
	}
	var buf [lvHdrLen + lvMaxBody]byte
	typ, raw, err := readLvMsg(c.nc, &buf)
	if err != nil {
		return err
	}
	if typ != lvChallenge {
		return fmt.Errorf("%w: message type %d, want a challenge", errLvProto, typ)
	}
	body := raw[lvHdrLen:]
	const fixed = lvNonceLen + 8 + 1
	if len(body) < fixed+1+MACLen || len(body) != fixed+int(body[fixed-1])+MACLen {
		return fmt.Errorf("%w: malformed challenge", errLvProto)
	}
	inst := binary.BigEndian.Uint64(body[lvNonceLen:])
	id := body[fixed : len(body)-MACLen]
	if string(id) != p.peer {
		return fmt.Errorf("%w: the peer says it is node %q, want %q", errLvAuth, id, p.peer)
	}
	signed, tag := raw[:len(raw)-MACLen], raw[len(raw)-MACLen:]
	if !hmac.Equal(lvMAC(p.kl, lvLabelResp, hello, signed), tag) {
		return fmt.Errorf("%w: the peer's challenge MAC does not match (another key or domain)", errLvAuth)
	}
	if inst == 0 {
		return fmt.Errorf("%w: instance 0", errLvProto)
	}
	proof := append([]byte{lvProof, MACLen}, lvMAC(p.kl, lvLabelInit, hello, signed)...)
	ks := lvMAC(p.kl, lvLabelSess, hello, signed, tag)
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if p.stopping != nil && p.stopping.Load() {
		return errLvStopping
	}
	if _, err := c.nc.Write(proof); err != nil {
		return err
	}
	c.sess = newLvSession(ks, true)
	c.peerInst = inst
	return nil
}

// respond runs the responder's side of the handshake.
func (c *lconn) respond(p *lvParams) error {
	var hbuf [lvHdrLen + lvMaxBody]byte
	typ, hello, err := readLvMsg(c.nc, &hbuf)
	if err != nil {
		return err
	}
	body := hello[lvHdrLen:]
	if typ != lvHello || len(body) < len(lvMagic)+1 || string(body[:len(lvMagic)]) != lvMagic {
		return fmt.Errorf("%w: not a liveness hello", errLvProto)
	}
	if v := body[len(lvMagic)]; v != lvVersion {
		return fmt.Errorf("%w: version %d, want %d", errLvProto, v, lvVersion)
	}
	const fixed = len(lvMagic) + 1 + lvNonceLen + 8 + 1
	if len(body) < fixed+1 || len(body) != fixed+int(body[fixed-1]) {
		return fmt.Errorf("%w: malformed hello", errLvProto)
	}
	inst := binary.BigEndian.Uint64(body[len(lvMagic)+1+lvNonceLen:])
	if id := body[fixed:]; string(id) != p.peer {
		return fmt.Errorf("%w: the peer says it is node %q, want %q", errLvAuth, id, p.peer)
	}
	if inst == 0 {
		return fmt.Errorf("%w: instance 0", errLvProto)
	}
	var nonce [lvNonceLen]byte
	_, _ = rand.Read(nonce[:])
	ch := make([]byte, lvHdrLen, lvHdrLen+lvMaxBody)
	ch[0] = lvChallenge
	ch = append(ch, nonce[:]...)
	ch = binary.BigEndian.AppendUint64(ch, p.inst)
	ch = append(ch, byte(len(p.self)))
	ch = append(ch, p.self...)
	ch[1] = byte(len(ch) - lvHdrLen + MACLen)
	tag := lvMAC(p.kl, lvLabelResp, hello, ch)
	wantProof := lvMAC(p.kl, lvLabelInit, hello, ch)
	ks := lvMAC(p.kl, lvLabelSess, hello, ch, tag)
	ch = append(ch, tag...)
	if err := func() error {
		c.wmu.Lock()
		defer c.wmu.Unlock()
		if p.stopping != nil && p.stopping.Load() {
			return errLvStopping
		}
		if _, err := c.nc.Write(ch); err != nil {
			return err
		}
		// From here the initiator may consider the connection established
		// (when it is the arbiter): Bye must be able to say bye on it.
		c.sess = newLvSession(ks, false)
		c.peerInst = inst
		return nil
	}(); err != nil {
		return err
	}
	var buf [lvHdrLen + lvMaxBody]byte
	typ, raw, err := readLvMsg(c.nc, &buf)
	if err != nil {
		return err
	}
	if typ != lvProof || len(raw) != lvHdrLen+MACLen {
		return fmt.Errorf("%w: message type %d (%d bytes), want a proof", errLvProto, typ, len(raw))
	}
	if !hmac.Equal(wantProof, raw[lvHdrLen:]) {
		return fmt.Errorf("%w: the peer's proof MAC does not match (another key or domain)", errLvAuth)
	}
	return nil
}

// lvSession authenticates the post-handshake messages of one connection.
type lvSession struct {
	txMAC, rxMAC hash.Hash // HMAC(Ks); tx under lconn.wmu, rx by the reader only
	txDir, rxDir byte
	txSeq, rxSeq uint64
	rxSum        [MACLen]byte
}

func newLvSession(ks []byte, initiator bool) *lvSession {
	s := &lvSession{txMAC: hmac.New(sha256.New, ks), rxMAC: hmac.New(sha256.New, ks),
		txDir: lvDirResponder, rxDir: lvDirInitiator}
	if initiator {
		s.txDir, s.rxDir = lvDirInitiator, lvDirResponder
	}
	return s
}

func lvTag(h hash.Hash, dir byte, seq uint64, typ byte, dst []byte) []byte {
	var b [10]byte
	b[0] = dir
	binary.BigEndian.PutUint64(b[1:], seq)
	b[9] = typ
	h.Reset()
	h.Write(b[:])
	return h.Sum(dst)
}

// seal returns the next message of type typ.
func (s *lvSession) seal(typ byte) []byte {
	msg := lvTag(s.txMAC, s.txDir, s.txSeq, typ, []byte{typ, MACLen})
	s.txSeq++
	return msg
}

// open checks the MAC of the next received message.
func (s *lvSession) open(typ byte, body []byte) bool {
	if len(body) != MACLen || !hmac.Equal(lvTag(s.rxMAC, s.rxDir, s.rxSeq, typ, s.rxSum[:0]), body) {
		return false
	}
	s.rxSeq++
	return true
}

// --- network namespace of the dialed sockets ---

// lvNetns is the network namespace NewLiveness was called in.
type lvNetns struct {
	fd       int
	dev, ino uint64 // identify the namespace
}

func captureNetns() *lvNetns {
	fd, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil // no /proc: stay in whatever namespace dials run in
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil
	}
	return &lvNetns{fd: fd, dev: st.Dev, ino: st.Ino}
}

func (n *lvNetns) close() {
	if n != nil {
		unix.Close(n.fd)
	}
}

// do runs fn on a thread inside the namespace (fn's sockets stay there).
// The thread is entered into the namespace with setns only when it is
// not already there (the normal case for a daemon), so that needs
// privileges only when NewLiveness ran in another namespace than the
// process. (Comparing with /proc/self/ns/net instead would be wrong: the
// main thread itself may have been moved by a locked goroutine.)
func (n *lvNetns) do(fn func() error) error {
	if n == nil {
		return fn()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("network namespace: %w", err)
			return
		}
		defer unix.Close(orig)
		var st unix.Stat_t
		if err := unix.Fstat(orig, &st); err == nil && st.Dev == n.dev && st.Ino == n.ino {
			err := fn()
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		if err := unix.Setns(n.fd, unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter the network namespace: %w", err)
			return
		}
		ferr := fn()
		if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
			// Leave the thread locked: Go discards it when this
			// goroutine ends, instead of reusing it in the wrong namespace.
			errc <- errors.Join(ferr, fmt.Errorf("leave the network namespace: %w", err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}
