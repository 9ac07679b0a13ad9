package connsync

// PeerChannel: the peer state channel between the two directors.
//
// It rides on an authenticated heartbeat UDP link (internal/heartbeat):
// HMAC-SHA256 over every datagram with a key derived from the key file and
// a domain of its own, a replay window, TTL 255 both ways, frames accepted
// only from the peer's address and node id. A frame with a bad MAC or a
// replayed one is dropped and counted by the link (Stats().Link.Drops);
// a message that authenticates but does not decode is dropped and counted
// here. Nothing the peer sends can crash the daemon or block it.
//
// Delivery: every interval this node sends a STATE; the entry list goes in
// PAGE messages when it changed, and again while the peer's STATE shows it
// does not hold the current list (ack ≠ gen), at most once an interval.
// So a lost datagram costs at most one interval, and a restarted peer
// learns everything within one interval of its first STATE.

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/hadirector/hadirector/internal/heartbeat"
)

// DefaultPeerPort is the peer channel's UDP port (the kernel's sync
// traffic uses 8848 and up).
const DefaultPeerPort = 8850

// DefaultPeerInterval is how often a STATE is sent.
const DefaultPeerInterval = time.Second

// PeerConfig configures a PeerChannel.
type PeerConfig struct {
	NodeID, PeerID string
	// Local and Peer are the two directors' addresses on the sync
	// interface; Port is used on both (0: DefaultPeerPort).
	Local, Peer netip.Addr
	Port        int
	// Key (≥ 16 bytes) and Domain: as for a heartbeat UDP link; both ends
	// must use the same.
	Key    []byte
	Domain string
	// Interval between STATE messages (0: DefaultPeerInterval). The
	// channel is down after 3 intervals without a valid message.
	Interval time.Duration
	// State returns this node's current state. It is called from the
	// channel's goroutine every interval and after Kick, never
	// concurrently.
	State func() PeerState
	// OnState gets the peer's state each time a STATE arrives whose entry
	// list is complete here. It must not block.
	OnState func(PeerState)
	// OnHealth is called when the channel goes up or down.
	OnHealth func(up bool)
	Log      *slog.Logger
}

// PeerStats is a snapshot for status.
type PeerStats struct {
	LocalAddr, PeerAddr netip.AddrPort
	Link                heartbeat.LinkHealth
	// Gen is this node's entry list generation; PeerHolds says the peer
	// acknowledged it.
	Gen       uint64
	PeerHolds bool
	// Peer is the peer's latest complete state (nil before the first)
	// and PeerAt when it arrived.
	Peer   *PeerState
	PeerAt time.Time
	// Message counts; DecodeErrors by reason.
	TxState, TxPages, RxState, RxPages uint64
	DecodeErrors                       map[string]uint64
	// Skipped counts entries left out of pages (service key too long).
	Skipped uint64
}

// PeerChannel exchanges PeerState with the other director.
type PeerChannel struct {
	cfg  PeerConfig
	link *heartbeat.UDPLink
	kick chan struct{}
	stop chan struct{}
	wg   sync.WaitGroup

	mu sync.Mutex
	// Sender side.
	gen          uint64
	sentEntries  []PeerEntry
	pages        [][]byte
	pagesSentGen uint64
	pagesSentAt  time.Time
	// Receiver side.
	peerEpoch uint64 // the peer's boot epoch (a restart resets what we hold)
	peerAck   uint64 // the peer's ack: the latest gen of ours it holds
	asmGen    uint64 // gen being assembled
	asm       map[int][]PeerEntry
	asmPages  int
	haveGen   uint64 // gen of the complete list in entries
	haveAny   bool
	entries   []PeerEntry
	peer      *PeerState
	peerAt    time.Time
	stats     PeerStats
}

// NewPeerChannel opens the link and starts sending.
func NewPeerChannel(cfg PeerConfig) (*PeerChannel, error) {
	if cfg.State == nil {
		return nil, errors.New("connsync: PeerConfig.State is nil")
	}
	if cfg.Port == 0 {
		cfg.Port = DefaultPeerPort
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultPeerInterval
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	p := &PeerChannel{cfg: cfg, kick: make(chan struct{}, 1), stop: make(chan struct{}),
		stats: PeerStats{DecodeErrors: map[string]uint64{}}}
	link, err := heartbeat.NewUDPLink(heartbeat.UDPConfig{
		Name: "peer-state", NodeID: cfg.NodeID, PeerID: cfg.PeerID,
		Local: cfg.Local, Peer: cfg.Peer, Port: cfg.Port, Key: cfg.Key, Domain: cfg.Domain + "/peer-state",
		Interval: cfg.Interval, Misses: 3,
		OnReceive: p.receive,
		OnHealth: func(h heartbeat.LinkHealth) {
			if cfg.OnHealth != nil {
				cfg.OnHealth(h.Up)
			}
		},
	})
	if err != nil {
		return nil, fmt.Errorf("peer state channel: %w", err)
	}
	p.link = link
	p.wg.Add(1)
	go p.run()
	return p, nil
}

// Kick sends this node's state now (it changed).
func (p *PeerChannel) Kick() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// Close stops the channel.
func (p *PeerChannel) Close() error {
	select {
	case <-p.stop:
		return nil
	default:
	}
	close(p.stop)
	p.wg.Wait()
	return p.link.Close()
}

// Stats returns a snapshot.
func (p *PeerChannel) Stats() PeerStats {
	p.mu.Lock()
	st := p.stats
	st.DecodeErrors = make(map[string]uint64, len(p.stats.DecodeErrors))
	for k, v := range p.stats.DecodeErrors {
		st.DecodeErrors[k] = v
	}
	st.Gen, st.PeerHolds = p.gen, p.peerAck == p.gen && p.gen != 0
	if p.peer != nil {
		cp := *p.peer
		cp.Entries = slices.Clone(cp.Entries)
		st.Peer, st.PeerAt = &cp, p.peerAt
	}
	p.mu.Unlock()
	st.LocalAddr, st.PeerAddr = p.link.LocalAddr(), p.link.PeerAddr()
	st.Link = p.link.Health()
	return st
}

func (p *PeerChannel) run() {
	defer p.wg.Done()
	t := time.NewTicker(p.cfg.Interval)
	defer t.Stop()
	for {
		p.send(time.Now())
		select {
		case <-p.stop:
			return
		case <-t.C:
		case <-p.kick:
		}
	}
}

// send sends a STATE, and the pages when the peer needs them.
func (p *PeerChannel) send(now time.Time) {
	st := p.cfg.State()
	sortEntries(st.Entries)
	p.mu.Lock()
	if p.gen == 0 || !slices.Equal(st.Entries, p.sentEntries) {
		if p.gen == 0 {
			// A restarted node must not reuse a gen its peer may still
			// hold from the previous run.
			p.gen = uint64(now.UnixNano())
		}
		p.gen++
		p.sentEntries = st.Entries
		var skipped int
		p.pages, skipped = encodePages(p.gen, st.Entries, heartbeat.MaxPayload)
		p.stats.Skipped += uint64(skipped)
	}
	msg := encodeState(stateMsg{Gen: p.gen, Ack: p.ackLocked(), Epoch: st.Epoch, Master: st.Master,
		Conns: st.Conns, Pages: len(p.pages)})
	var pages [][]byte
	if p.peerAck != p.gen && (p.pagesSentGen != p.gen || now.Sub(p.pagesSentAt) >= p.cfg.Interval) {
		pages = p.pages
		p.pagesSentGen, p.pagesSentAt = p.gen, now
	}
	p.stats.TxState++
	p.stats.TxPages += uint64(len(pages))
	p.mu.Unlock()
	// Pages first: the STATE that names their gen then finds them here.
	for _, pg := range pages {
		p.sendMsg(pg)
	}
	p.sendMsg(msg)
}

func (p *PeerChannel) sendMsg(b []byte) {
	if err := p.link.Send(b); err != nil && !errors.Is(err, heartbeat.ErrClosed) {
		p.cfg.Log.Debug("peer state not sent", "err", err)
	}
}

// ackLocked is the gen of the peer's list this node holds complete.
func (p *PeerChannel) ackLocked() uint64 {
	if !p.haveAny {
		return 0
	}
	return p.haveGen
}

// receive handles one authenticated payload (on the link's goroutine).
func (p *PeerChannel) receive(r heartbeat.Received) {
	m, err := decodePeerMsg(r.Payload)
	p.mu.Lock()
	if err != nil {
		p.stats.DecodeErrors[peerErrName(err)]++
		p.mu.Unlock()
		p.cfg.Log.Debug("peer state message dropped", "err", err)
		return
	}
	if r.Epoch != p.peerEpoch {
		// The peer (re)started: what we hold of its previous run is void.
		p.peerEpoch, p.haveAny, p.entries, p.asm = r.Epoch, false, nil, nil
	}
	var deliver *PeerState
	resend := false
	switch m := m.(type) {
	case stateMsg:
		p.stats.RxState++
		p.peerAck = m.Ack
		// The peer lacks our list: send it now rather than at the next
		// tick, unless it went out less than an interval ago (so two
		// nodes never answer each other in a loop).
		resend = m.Ack != p.gen && p.gen != 0 && r.At.Sub(p.pagesSentAt) >= p.cfg.Interval
		if m.Pages == 0 {
			p.haveGen, p.haveAny, p.entries = m.Gen, true, nil
		}
		if p.haveAny && p.haveGen == m.Gen {
			deliver = &PeerState{Epoch: m.Epoch, Master: m.Master, Conns: m.Conns, Entries: p.entries}
			p.peer, p.peerAt = deliver, r.At
		}
	case pageMsg:
		p.stats.RxPages++
		if m.Gen != p.asmGen || m.Pages != p.asmPages || p.asm == nil {
			p.asmGen, p.asmPages, p.asm = m.Gen, m.Pages, map[int][]PeerEntry{}
		}
		p.asm[m.Page] = m.Entries
		if len(p.asm) == p.asmPages {
			var all []PeerEntry
			for i := range p.asmPages {
				all = append(all, p.asm[i]...)
			}
			p.haveGen, p.haveAny, p.entries, p.asm = m.Gen, true, all, nil
		}
	}
	p.mu.Unlock()
	if deliver != nil && p.cfg.OnState != nil {
		p.cfg.OnState(*deliver)
	}
	if resend {
		p.Kick()
	}
}

func peerErrName(err error) string {
	for _, e := range []error{errPeerTruncated, errPeerVersion, errPeerType, errPeerMalformed} {
		if errors.Is(err, e) {
			return e.Error()
		}
	}
	return "other"
}
