// Package heartbeat owns the extra links that carry adverts between the
// directors — UDP (HMAC-SHA256 authenticated, replay-protected) and serial
// (framed, checksummed) — and reports each link's health.
//
// A link moves opaque payloads (an encoded VRRP advert, at most MaxPayload
// bytes) and knows nothing of VRRP. It does not send on its own: the
// daemon's engine decides what to send and when, and calls Send. What the
// link does own is the liveness verdict: it is Up while a valid frame
// arrived within DownAfter (Misses × Interval + margin), and every change
// of that verdict is reported once, through OnHealth.
//
// # Wire formats
//
// Both link types carry the same authenticated frame (frame.go: magic,
// version, sender id, boot epoch, sequence number, timestamp, payload,
// HMAC-SHA256). UDP sends one frame per datagram, with TTL/hop limit 255
// that the receiver checks (GTSM, RFC 5082). A serial line carries the same
// frame with a CRC-32C appended, COBS-encoded between 0x00 delimiters
// (serial_frame.go).
//
// # Callbacks
//
// OnReceive and OnHealth are called on the link's own goroutines, one call
// at a time per link and per callback, in order. They must not block (hand
// the value to the engine through a buffered channel, for example), and
// must not call Close of the same link. They may call Health and Send.
package heartbeat

import (
	"errors"
	"fmt"
	"time"
)

// Link is one heartbeat path to the peer director.
type Link interface {
	// Name is the link's name from the config.
	Name() string
	// Send sends one payload (at most MaxPayload bytes) to the peer. It
	// never blocks for long: a UDP link writes one datagram; a serial link
	// queues the frame for its writer and drops the oldest queued frame
	// when the line cannot keep up.
	Send(payload []byte) error
	// Health is a snapshot of the link's state and counters.
	Health() LinkHealth
	// Close stops the link's goroutines and releases its socket or device.
	// It is idempotent.
	Close() error
}

// Received is one verified payload from the peer.
type Received struct {
	Link    string    // the link it came over
	From    string    // the sender's node id (authenticated)
	Payload []byte    // owned by the receiver: the link never touches it again
	At      time.Time // local receive time
	SentAt  time.Time // the sender's clock when it sealed the frame
	Epoch   uint64    // the sender's boot epoch
	Seq     uint64    // the frame's sequence number within Epoch
}

// LinkHealth is a snapshot of a link.
type LinkHealth struct {
	Name string
	Kind string // "udp" or "serial"
	// Up: a valid frame arrived within DownAfter. A new link is down until
	// its first valid frame.
	Up bool
	// Since is when Up last changed (the link's creation if it never did).
	Since time.Time
	// LastRx is when the last valid frame arrived (zero if none yet).
	LastRx time.Time
	// DownAfter is how long the link stays Up without valid frames.
	DownAfter time.Duration
	// Transitions counts Up changes since the link was created.
	Transitions uint64
	// LastError is the last send/receive/device error ("" if none), for
	// status displays.
	LastError string
	Stats
}

// String is a one-line summary for logs.
func (h LinkHealth) String() string {
	state := "down"
	if h.Up {
		state = "up"
	}
	return fmt.Sprintf("%s link %s %s (rx %d, tx %d, dropped %d)", h.Kind, h.Name, state, h.RxFrames, h.TxFrames, h.DropTotal())
}

// Errors returned by Send and the constructors.
var (
	// ErrClosed: the link was closed.
	ErrClosed = errors.New("heartbeat: link closed")
	// ErrPayloadTooLarge: the payload exceeds MaxPayload.
	ErrPayloadTooLarge = fmt.Errorf("heartbeat: payload larger than %d bytes", MaxPayload)
	// ErrQueueFull: a serial link dropped the oldest queued frame to make
	// room for this one (the new frame is queued; the error is a warning
	// that the line cannot keep up with the send rate).
	ErrQueueFull = errors.New("heartbeat: serial send queue full; oldest frame dropped")
	// ErrNotOpen: the serial device is currently not open (it vanished and
	// the link is trying to reopen it).
	ErrNotOpen = errors.New("heartbeat: serial device not open")
)

// Interval limits, as in the config ([[link]] interval).
const (
	MinInterval = time.Millisecond
	MaxInterval = 10 * time.Second
	// DefaultMisses is how many intervals without a valid frame make a link
	// down (plus the margin, see DownAfter).
	DefaultMisses = 3
)

// QuietAfter is how long an up link may stay silent before it counts as
// quiet (OnQuiet): one frame missed, with the same margin as DownAfter. A
// quiet link is not down; it is a hint that something may be wrong, early
// enough for a cheap check (see cmd's node-loss probe).
func QuietAfter(interval time.Duration) time.Duration {
	return interval + max(interval/2, time.Millisecond)
}

// DownAfter is how long a link with this interval stays up without valid
// frames: misses × interval plus a margin of half an interval (at least
// 1 ms) for scheduling jitter. misses ≤ 0 means DefaultMisses.
func DownAfter(interval time.Duration, misses int) time.Duration {
	if misses <= 0 {
		misses = DefaultMisses
	}
	return time.Duration(misses)*interval + max(interval/2, time.Millisecond)
}

// common holds the settings both link types share.
type common struct {
	name, nodeID, peerID, domain string
	interval                     time.Duration
	misses                       int
	epochTolerance, maxSkew      time.Duration
	onReceive                    func(Received)
	onHealth                     func(LinkHealth)
	onQuiet                      func(LinkHealth)
}

func checkCommon(kind string, c *common) error {
	if c.name == "" {
		return fmt.Errorf("heartbeat: %s link: empty name", kind)
	}
	if err := checkNodeID(c.nodeID); err != nil {
		return fmt.Errorf("heartbeat: %s link %s: node id: %w", kind, c.name, err)
	}
	if c.peerID != "" {
		if err := checkNodeID(c.peerID); err != nil {
			return fmt.Errorf("heartbeat: %s link %s: peer id: %w", kind, c.name, err)
		}
		if c.peerID == c.nodeID {
			return fmt.Errorf("heartbeat: %s link %s: peer id equals node id %q", kind, c.name, c.nodeID)
		}
	}
	if c.interval < MinInterval || c.interval > MaxInterval {
		return fmt.Errorf("heartbeat: %s link %s: interval %v outside %v..%v", kind, c.name, c.interval, MinInterval, MaxInterval)
	}
	if c.domain == "" {
		c.domain = c.name
	}
	return nil
}
