package heartbeat

// The authenticated heartbeat frame, shared by the UDP and serial links.
//
// # Layout (version 1, all integers big-endian)
//
//	offset  size  field
//	0       4     magic "HDHB"
//	4       1     version = 1
//	5       1     flags = 0 (reserved; a v1 receiver drops frames with any bit set)
//	6       1     sender id length L, 1..64
//	7       1     reserved = 0
//	8       8     boot epoch: random per Sealer (per link instance, so per process start)
//	16      8     sequence number: 1, 2, 3, ... within the epoch (0 is never sent)
//	24      8     send timestamp: the sender's wall clock, Unix nanoseconds (signed)
//	32      2     payload length P, 0..1024
//	34      L     sender id (the node name, opaque bytes)
//	34+L    P     payload
//	34+L+P  32    HMAC-SHA256(K_link, bytes 0 .. 34+L+P-1)
//
// Overhead is 66 + L bytes; the largest frame is 1154 bytes, so a frame
// never fragments, even at the IPv6 minimum MTU (1280 - 40 - 8 = 1232).
//
// K_link = HMAC-SHA256(key, "hadirector heartbeat v1\x00" + domain): the key
// from the key file is never used directly, and the domain (the link name,
// optionally prefixed by the cluster name) separates links and clusters
// that share a key file, so a frame captured on one link is worthless on
// another one.
//
// # Threat model
//
// The attacker sits on the path between the directors (it can read, drop,
// delay, reorder, replay and inject datagrams, or bytes on a serial line)
// but does not have the key. The key comes from a file (LoadKey refuses
// files that group or others may read) deployed to both directors.
//
//   - Forgery: every frame carries a full 32-byte HMAC-SHA256 tag over all
//     the bytes before it, compared in constant time (hmac.Equal). Without
//     the key no frame can be made or altered, including its sender id,
//     epoch, sequence number and timestamp.
//   - Replay: the receiver (Opener) keeps, per sender, the current epoch,
//     the highest sequence number accepted and a 64-frame sliding window
//     (RFC 4303 style). A frame is accepted once; frames more than 63 behind
//     the highest are refused. A frame with a new epoch (the sender
//     restarted) is accepted only if its timestamp is not older than the
//     last accepted frame's timestamp minus EpochTolerance; the last 8
//     epochs seen are remembered and never accepted again. A restarted peer
//     is thus accepted on its first frame, while frames captured in an
//     earlier life of the peer are refused.
//   - Reflection: a receiver refuses frames carrying its own node id, so
//     its own frames sent back to it are useless; with PeerID set it
//     accepts only the peer's id.
//   - Off-link injection (UDP): frames are sent with TTL/hop limit 255 and
//     accepted only with 255 (GTSM, RFC 5082), and only from the peer's
//     address and port: a remote host cannot reach the receiver even with
//     the key.
//
// What it does not stop: dropping or delaying frames (the link goes down,
// and that is reported); a replay of frames recorded earlier, right after
// the receiver itself starts with no state, until the first genuine frame
// arrives (set MaxClockSkew to bound the age of such frames by the
// receiver's clock, at the price of depending on synchronised clocks); and
// anyone holding the key. Timestamps order epochs of one sender against
// each other, and are compared with the sender's own earlier timestamps,
// so the directors' clocks need not agree unless MaxClockSkew is set.

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"sync"
	"sync/atomic"
	"time"
)

// Frame format constants.
const (
	FrameMagic   = "HDHB"
	FrameVersion = 1
	// MaxNodeIDLen is the longest sender id.
	MaxNodeIDLen = 64
	// MaxPayload is the largest payload a frame carries.
	MaxPayload = 1024
	// FrameHeaderLen is the fixed part before the sender id.
	FrameHeaderLen = 34
	// MACLen is the HMAC-SHA256 tag length (never truncated).
	MACLen = sha256.Size
	// MinFrameSize is the smallest valid frame (1-byte id, no payload).
	MinFrameSize = FrameHeaderLen + 1 + MACLen
	// MaxFrameSize is the largest valid frame.
	MaxFrameSize = FrameHeaderLen + MaxNodeIDLen + MaxPayload + MACLen
	// MinKeyLen is the shortest key NewSealer/NewOpener accept.
	MinKeyLen = 16
	// DefaultEpochTolerance: see OpenerConfig.EpochTolerance.
	DefaultEpochTolerance = time.Second

	keyLabel      = "hadirector heartbeat v1\x00"
	retiredEpochs = 8  // how many earlier epochs per sender are remembered
	maxSenders    = 16 // replay state entries kept (only authenticated senders create one)
	replayWindow  = 64
	offVersion    = 4
	offFlags      = 5
	offIDLen      = 6
	offReserved   = 7
	offEpoch      = 8
	offSeq        = 16
	offTimestamp  = 24
	offPayloadLen = 32
	maxKeyLen     = 4096
)

// DropReason says why a frame (or a datagram, or a chunk of a serial byte
// stream) was refused. Every reason is counted separately in Stats.
type DropReason uint8

// Drop reasons. DropNone means accepted.
const (
	DropNone        DropReason = iota
	DropTruncated              // shorter than its header or its declared lengths
	DropOversized              // longer than MaxFrameSize, or payload > MaxPayload
	DropBadMagic               // not "HDHB"
	DropBadVersion             // unknown version
	DropBadHeader              // reserved bits/bytes set, bad id length, seq 0, trailing bytes
	DropBadMAC                 // HMAC mismatch: wrong key, wrong domain, or tampering
	DropSelf                   // carries our own node id (reflected or looped back)
	DropWrongSender            // authenticated, but not the configured peer id
	DropReplay                 // duplicate of a frame already accepted (within the window)
	DropTooOld                 // sequence number behind the 64-frame window
	DropOldEpoch               // an earlier epoch of the sender (a restarted peer's old frames)
	DropStale                  // timestamp too far from our clock (MaxClockSkew)
	DropWrongSource            // UDP: not from the peer's address and port
	DropBadTTL                 // UDP: TTL / hop limit not 255, or not reported
	DropBadCRC                 // serial: CRC-32C mismatch
	DropBadFraming             // serial: invalid COBS encoding
	numDropReasons
)

var dropNames = [numDropReasons]string{
	DropNone:        "none",
	DropTruncated:   "truncated",
	DropOversized:   "oversized",
	DropBadMagic:    "bad_magic",
	DropBadVersion:  "bad_version",
	DropBadHeader:   "bad_header",
	DropBadMAC:      "bad_mac",
	DropSelf:        "self",
	DropWrongSender: "wrong_sender",
	DropReplay:      "replay",
	DropTooOld:      "too_old",
	DropOldEpoch:    "old_epoch",
	DropStale:       "stale",
	DropWrongSource: "wrong_source",
	DropBadTTL:      "bad_ttl",
	DropBadCRC:      "bad_crc",
	DropBadFraming:  "bad_framing",
}

// String is a short snake_case name, usable as a metric label.
func (r DropReason) String() string {
	if r < numDropReasons {
		return dropNames[r]
	}
	return fmt.Sprintf("drop(%d)", uint8(r))
}

// DropReasons lists every reason except DropNone.
func DropReasons() []DropReason {
	out := make([]DropReason, 0, numDropReasons-1)
	for r := DropNone + 1; r < numDropReasons; r++ {
		out = append(out, r)
	}
	return out
}

// Stats are a link's counters since it was created.
type Stats struct {
	RxFrames uint64 // valid frames delivered
	RxBytes  uint64 // their payload bytes
	TxFrames uint64 // frames handed to the socket / device
	TxBytes  uint64 // their payload bytes
	// TxErrors counts sends that failed (socket or device errors).
	TxErrors uint64
	// TxDropped counts frames dropped before sending (serial queue overflow).
	TxDropped uint64
	// GarbageBytes counts serial bytes that did not form a valid frame
	// (line noise, partial frames after a resync, injected bytes).
	GarbageBytes uint64
	// Drops counts refused frames by reason; only non-zero reasons appear.
	Drops map[DropReason]uint64
}

// DropTotal is the sum of Drops.
func (s Stats) DropTotal() uint64 {
	var n uint64
	for _, v := range s.Drops {
		n += v
	}
	return n
}

// counters is the lock-free form of Stats.
type counters struct {
	rxFrames, rxBytes, txFrames, txBytes, txErrors, txDropped, garbage atomic.Uint64
	drops                                                              [numDropReasons]atomic.Uint64
}

func (c *counters) drop(r DropReason) { c.drops[r].Add(1) }

func (c *counters) snapshot() Stats {
	s := Stats{
		RxFrames:     c.rxFrames.Load(),
		RxBytes:      c.rxBytes.Load(),
		TxFrames:     c.txFrames.Load(),
		TxBytes:      c.txBytes.Load(),
		TxErrors:     c.txErrors.Load(),
		TxDropped:    c.txDropped.Load(),
		GarbageBytes: c.garbage.Load(),
		Drops:        map[DropReason]uint64{},
	}
	for r := DropNone + 1; r < numDropReasons; r++ {
		if v := c.drops[r].Load(); v != 0 {
			s.Drops[r] = v
		}
	}
	return s
}

// deriveKey binds the shared key to a domain (link name, cluster).
func deriveKey(key []byte, domain string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(keyLabel))
	m.Write([]byte(domain))
	return m.Sum(nil)
}

func checkKey(key []byte) error {
	if len(key) < MinKeyLen {
		return fmt.Errorf("key is %d bytes, need at least %d (e.g. 32 random bytes)", len(key), MinKeyLen)
	}
	if len(key) > maxKeyLen {
		return fmt.Errorf("key is %d bytes, at most %d allowed", len(key), maxKeyLen)
	}
	return nil
}

func checkNodeID(id string) error {
	if id == "" {
		return errors.New("empty")
	}
	if len(id) > MaxNodeIDLen {
		return fmt.Errorf("%q is longer than %d bytes", id, MaxNodeIDLen)
	}
	return nil
}

// Sealer makes frames for one sender on one link. It is safe for
// concurrent use; frames leave Seal in sequence order.
type Sealer struct {
	mu    sync.Mutex
	id    string
	epoch uint64
	seq   uint64
	mac   hash.Hash
	now   func() time.Time
}

// NewSealer returns a sealer for node id nodeID with a fresh random epoch.
func NewSealer(key []byte, domain, nodeID string) (*Sealer, error) {
	if err := checkKey(key); err != nil {
		return nil, fmt.Errorf("heartbeat: %w", err)
	}
	return newSealer(key, domain, nodeID)
}

func newSealer(key []byte, domain, nodeID string) (*Sealer, error) {
	if err := checkNodeID(nodeID); err != nil {
		return nil, fmt.Errorf("heartbeat: node id: %w", err)
	}
	s := &Sealer{id: nodeID, mac: hmac.New(sha256.New, deriveKey(key, domain)), now: time.Now}
	s.epoch = randomEpoch()
	return s, nil
}

func randomEpoch() uint64 {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on Linux (getrandom)
	return binary.BigEndian.Uint64(b[:])
}

// Epoch is the sealer's current boot epoch.
func (s *Sealer) Epoch() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.epoch
}

// Seal appends one frame carrying payload to dst and returns it.
func (s *Sealer) Seal(dst, payload []byte) ([]byte, error) {
	if len(payload) > MaxPayload {
		return dst, ErrPayloadTooLarge
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seq++
	if s.seq == 0 { // 2^64 frames: start a new life rather than reuse a number
		s.epoch, s.seq = randomEpoch(), 1
	}
	start := len(dst)
	dst = append(dst, FrameMagic...)
	dst = append(dst, FrameVersion, 0, byte(len(s.id)), 0)
	dst = binary.BigEndian.AppendUint64(dst, s.epoch)
	dst = binary.BigEndian.AppendUint64(dst, s.seq)
	dst = binary.BigEndian.AppendUint64(dst, uint64(s.now().UnixNano()))
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(payload)))
	dst = append(dst, s.id...)
	dst = append(dst, payload...)
	s.mac.Reset()
	s.mac.Write(dst[start:])
	return s.mac.Sum(dst), nil
}

// Frame is a decoded frame. Payload and From alias the input of Open.
type Frame struct {
	From    []byte
	Epoch   uint64
	Seq     uint64
	SentAt  int64 // Unix nanoseconds, the sender's clock
	Payload []byte
	signed  []byte // the bytes the MAC covers
	mac     []byte
}

// ParseFrame checks a frame's structure and splits it, without verifying
// the MAC or the replay state (Opener.Open does both).
func ParseFrame(b []byte) (Frame, DropReason) {
	if len(b) > MaxFrameSize {
		return Frame{}, DropOversized
	}
	if len(b) < FrameHeaderLen {
		// A short datagram that is not even a header: say what we can.
		if len(b) >= len(FrameMagic) && string(b[:len(FrameMagic)]) != FrameMagic {
			return Frame{}, DropBadMagic
		}
		return Frame{}, DropTruncated
	}
	if string(b[:len(FrameMagic)]) != FrameMagic {
		return Frame{}, DropBadMagic
	}
	if b[offVersion] != FrameVersion {
		return Frame{}, DropBadVersion
	}
	idLen := int(b[offIDLen])
	plen := int(binary.BigEndian.Uint16(b[offPayloadLen:]))
	if b[offFlags] != 0 || b[offReserved] != 0 || idLen == 0 || idLen > MaxNodeIDLen {
		return Frame{}, DropBadHeader
	}
	if plen > MaxPayload {
		return Frame{}, DropOversized
	}
	end := FrameHeaderLen + idLen + plen
	switch {
	case len(b) < end+MACLen:
		return Frame{}, DropTruncated
	case len(b) > end+MACLen:
		return Frame{}, DropBadHeader // trailing bytes
	}
	f := Frame{
		From:    b[FrameHeaderLen : FrameHeaderLen+idLen],
		Epoch:   binary.BigEndian.Uint64(b[offEpoch:]),
		Seq:     binary.BigEndian.Uint64(b[offSeq:]),
		SentAt:  int64(binary.BigEndian.Uint64(b[offTimestamp:])),
		Payload: b[FrameHeaderLen+idLen : end],
		signed:  b[:end],
		mac:     b[end:],
	}
	if f.Seq == 0 {
		return Frame{}, DropBadHeader
	}
	return f, DropNone
}

// OpenerConfig configures a receiver.
type OpenerConfig struct {
	Key    []byte
	Domain string
	// Self is this node's id: frames carrying it are refused (DropSelf).
	Self string
	// Peer, if set, is the only sender id accepted (DropWrongSender).
	Peer string
	// EpochTolerance: a frame with a new epoch is accepted if its
	// timestamp ≥ the last accepted frame's timestamp - EpochTolerance
	// (the sender's clock may step back a little across a restart).
	// 0 means DefaultEpochTolerance; negative means no tolerance.
	EpochTolerance time.Duration
	// MaxClockSkew, if > 0, refuses (DropStale) a frame that starts a
	// sender's state (first contact or new epoch) when its timestamp is
	// further than this from the receiver's clock. It bounds replays after
	// the receiver restarts, but needs the directors' clocks to agree.
	// Frames within an established epoch are never checked against it.
	MaxClockSkew time.Duration
	// Now is the clock (tests); nil means time.Now.
	Now func() time.Time
}

// Opener verifies frames and keeps the replay state of each sender. It is
// safe for concurrent use.
type Opener struct {
	mu      sync.Mutex
	mac     hash.Hash
	sum     [MACLen]byte
	self    string
	peer    string
	tol     time.Duration
	skew    time.Duration
	now     func() time.Time
	senders map[string]*senderState
	tick    uint64 // LRU clock for senders
}

type senderState struct {
	epoch   uint64
	highest uint64 // highest sequence number accepted in epoch
	window  uint64 // bit i set: highest-i was accepted
	lastTS  int64  // timestamp of the frame that set highest
	retired [retiredEpochs]uint64
	nRet    int
	used    uint64
}

// NewOpener returns a receiver.
func NewOpener(cfg OpenerConfig) (*Opener, error) {
	if err := checkKey(cfg.Key); err != nil {
		return nil, fmt.Errorf("heartbeat: %w", err)
	}
	return newOpener(cfg)
}

func newOpener(cfg OpenerConfig) (*Opener, error) {
	if err := checkNodeID(cfg.Self); err != nil {
		return nil, fmt.Errorf("heartbeat: node id: %w", err)
	}
	o := &Opener{
		mac:     hmac.New(sha256.New, deriveKey(cfg.Key, cfg.Domain)),
		self:    cfg.Self,
		peer:    cfg.Peer,
		tol:     cfg.EpochTolerance,
		skew:    cfg.MaxClockSkew,
		now:     cfg.Now,
		senders: map[string]*senderState{},
	}
	switch {
	case o.tol == 0:
		o.tol = DefaultEpochTolerance
	case o.tol < 0:
		o.tol = 0
	}
	if o.now == nil {
		o.now = time.Now
	}
	return o, nil
}

// Open verifies b and updates the replay state. On success it returns the
// frame (aliasing b) and DropNone; otherwise the reason, and the state is
// unchanged. Checks run in this order: structure, MAC, sender id, replay.
func (o *Opener) Open(b []byte) (Frame, DropReason) {
	f, r := ParseFrame(b)
	if r != DropNone {
		return Frame{}, r
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.verifyMAC(f.signed, f.mac) {
		return Frame{}, DropBadMAC
	}
	// Comparisons against strings do not allocate.
	if string(f.From) == o.self {
		return Frame{}, DropSelf
	}
	if o.peer != "" && string(f.From) != o.peer {
		return Frame{}, DropWrongSender
	}
	if r := o.checkReplay(&f); r != DropNone {
		return Frame{}, r
	}
	return f, DropNone
}

// verifyMAC recomputes the tag and compares it in constant time.
func (o *Opener) verifyMAC(signed, tag []byte) bool {
	o.mac.Reset()
	o.mac.Write(signed)
	return hmac.Equal(o.mac.Sum(o.sum[:0]), tag)
}

func (o *Opener) checkReplay(f *Frame) DropReason {
	o.tick++
	st := o.senders[string(f.From)]
	if st == nil {
		if !o.fresh(f) {
			return DropStale
		}
		if len(o.senders) >= maxSenders {
			o.evict()
		}
		o.senders[string(f.From)] = &senderState{epoch: f.Epoch, highest: f.Seq, window: 1, lastTS: f.SentAt, used: o.tick}
		return DropNone
	}
	if f.Epoch != st.epoch {
		for i := range st.nRet {
			if st.retired[i] == f.Epoch {
				return DropOldEpoch
			}
		}
		if f.SentAt < st.lastTS-int64(o.tol) {
			return DropOldEpoch
		}
		if !o.fresh(f) {
			return DropStale
		}
		// The sender restarted: retire its old epoch, start over.
		copy(st.retired[1:], st.retired[:retiredEpochs-1])
		st.retired[0] = st.epoch
		st.nRet = min(st.nRet+1, retiredEpochs)
		st.epoch, st.highest, st.window, st.lastTS = f.Epoch, f.Seq, 1, f.SentAt
		st.used = o.tick
		return DropNone
	}
	if f.Seq > st.highest {
		if d := f.Seq - st.highest; d >= replayWindow {
			st.window = 1
		} else {
			st.window = st.window<<d | 1
		}
		st.highest, st.lastTS = f.Seq, f.SentAt
		st.used = o.tick
		return DropNone
	}
	d := st.highest - f.Seq
	if d >= replayWindow {
		return DropTooOld
	}
	if st.window&(1<<d) != 0 {
		return DropReplay
	}
	st.window |= 1 << d
	st.used = o.tick
	return DropNone
}

func (o *Opener) fresh(f *Frame) bool {
	if o.skew <= 0 {
		return true
	}
	d := o.now().UnixNano() - f.SentAt
	return d <= int64(o.skew) && d >= -int64(o.skew)
}

func (o *Opener) evict() {
	var victim string
	var oldest uint64 = ^uint64(0)
	for id, st := range o.senders {
		if st.used < oldest {
			victim, oldest = id, st.used
		}
	}
	delete(o.senders, victim)
}
