package heartbeat

// # Serial devices, go.bug.st/serial and pseudo-terminals
//
// The device is opened twice, on purpose:
//
//  1. os.OpenFile(O_RDWR|O_NOCTTY|O_NONBLOCK). A terminal is pollable, so
//     this *os.File sits on Go's netpoller: reads and writes take
//     deadlines and Close interrupts them. All I/O goes through it.
//  2. go.bug.st/serial's Open, which configures the terminal (raw mode,
//     speed, 8N1, no RTS/CTS, no XON/XOFF; termios belongs to the terminal,
//     so it applies to descriptor 1 as well) and then sets TIOCEXCL, which
//     makes any later open by an unprivileged process fail with EBUSY.
//     This descriptor is kept open for the link's lifetime, and not used
//     for I/O.
//
// Why not the library's own Read/Write? Its Read is fine (Close wakes it
// through a self-pipe), but its Write is a plain blocking write(2): when the
// other end stops reading (a PTY peer, or flow control), Write blocks and
// the library's Close does not wake it. Measured: after 32 KiB into a PTY
// nobody reads, Write blocked and stayed blocked across Close. A link must
// never wedge the daemon or leak a goroutine on Close, hence (1).
//
// Pseudo-terminals (socat pty,raw,echo=0 pairs, used by the tests), as
// observed with go.bug.st/serial v1.8.0 on Linux 6.x:
//   - Open succeeds at every configured speed (9600..921600) and even at a
//     non-standard one (TCSETS2/BOTHER); a PTY accepts and ignores speeds.
//   - The modem-control ioctls (TIOCMGET/TIOCMSET) fail with ENOTTY, so
//     GetModemStatusBits/SetDTR/SetRTS fail, and Open itself fails if
//     Mode.InitialStatusBits is set. This link leaves it nil and uses no
//     modem lines.
//   - TIOCEXCL does not stop root from opening the device again.
//   - When the other side goes away (socat exits) reads return EOF and
//     writes EIO. The link then closes the device and reopens it by path
//     with a backoff (50 ms doubling to 2 s), as it does when a USB serial
//     adapter is unplugged; meanwhile Send returns ErrNotOpen.
//
// Sizing: a serial byte is 10 bits on the line (8N1). A frame with a
// 40-byte advert and a 3-byte node id is 116 bytes framed, i.e. 12 ms at
// 9600 baud and 1 ms at 115200. A send rate above what the line carries
// fills the send queue, which drops the oldest frames (TxDropped); the
// receiver stretches its down-after to the airtime of the frames it
// actually receives, so a slow line reads as slow, not as down.

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.bug.st/serial"
	"golang.org/x/sys/unix"
)

// Serial defaults.
const (
	DefaultBaud           = 115200
	DefaultSerialQueueLen = 16
	reopenMin             = 50 * time.Millisecond
	reopenMax             = 2 * time.Second
)

// publicSerialKey is the MAC key of serial links configured without a key:
// see SerialConfig.Key.
var publicSerialKey = []byte("hadirector serial heartbeat: no key configured")

// SerialConfig configures a serial link.
type SerialConfig struct {
	Name   string
	NodeID string
	PeerID string
	// Device is the terminal device path (the same on both nodes), e.g.
	// /dev/ttyS1.
	Device string
	// Baud is the line speed (0 means DefaultBaud).
	Baud int
	// Key is the HMAC key. The cluster config has no key for serial links
	// (a cable between two racks is physical and point to point), so it may
	// be nil: frames are then MACed with a fixed public key, which keeps
	// the sequence/epoch replay rules and the format identical to UDP but
	// authenticates nothing. Pass a key (≥ 16 bytes) to authenticate.
	Key    []byte
	Domain string
	// Interval, Misses, EpochTolerance, MaxClockSkew, OnReceive,
	// OnHealth: as in UDPConfig.
	Interval       time.Duration
	Misses         int
	EpochTolerance time.Duration
	MaxClockSkew   time.Duration
	OnReceive      func(Received)
	OnHealth       func(LinkHealth)
	// OnQuiet, if set, is called once per silence when an up link has
	// heard nothing for QuietAfter(Interval): before it is down.
	OnQuiet func(LinkHealth)
	// QueueLen is how many frames may wait for the line (0: default 16).
	QueueLen int
}

// SerialLink is a heartbeat link over a serial line.
type SerialLink struct {
	c      common
	device string
	baud   int
	authed bool
	sealer *Sealer
	opener *Opener
	stats  counters
	tr     *tracker

	mu   sync.Mutex
	port *serialPort // nil while the device is gone

	sendMu  sync.Mutex // guards sealBuf, keeps the queue in sequence order
	sealBuf []byte
	queue   chan txFrame

	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
	wg        sync.WaitGroup
}

type txFrame struct {
	buf  []byte
	plen int
}

var _ Link = (*SerialLink)(nil)

// NewSerialLink opens and configures the device and starts the link's
// goroutines (reader, writer, watchdog). The device must open now; later
// failures are retried.
func NewSerialLink(cfg SerialConfig) (*SerialLink, error) {
	c := common{
		name: cfg.Name, nodeID: cfg.NodeID, peerID: cfg.PeerID, domain: cfg.Domain,
		interval: cfg.Interval, misses: cfg.Misses,
		epochTolerance: cfg.EpochTolerance, maxSkew: cfg.MaxClockSkew,
		onReceive: cfg.OnReceive, onHealth: cfg.OnHealth, onQuiet: cfg.OnQuiet,
	}
	if err := checkCommon("serial", &c); err != nil {
		return nil, err
	}
	key, authed := cfg.Key, true
	if len(key) == 0 {
		key, authed = publicSerialKey, false
	} else if err := checkKey(key); err != nil {
		return nil, fmt.Errorf("heartbeat: serial link %s: %w", c.name, err)
	}
	baud := cfg.Baud
	if baud == 0 {
		baud = DefaultBaud
	}
	if baud < 50 || baud > 4_000_000 {
		return nil, fmt.Errorf("heartbeat: serial link %s: baud %d out of range", c.name, baud)
	}
	if cfg.Device == "" {
		return nil, fmt.Errorf("heartbeat: serial link %s: no device", c.name)
	}
	qlen := cfg.QueueLen
	if qlen <= 0 {
		qlen = DefaultSerialQueueLen
	}
	l := &SerialLink{c: c, device: cfg.Device, baud: baud, authed: authed, queue: make(chan txFrame, qlen)}
	var err error
	if l.sealer, err = newSealer(key, c.domain, c.nodeID); err != nil {
		return nil, err
	}
	if l.opener, err = newOpener(OpenerConfig{
		Key: key, Domain: c.domain, Self: c.nodeID, Peer: c.peerID,
		EpochTolerance: c.epochTolerance, MaxClockSkew: c.maxSkew,
	}); err != nil {
		return nil, err
	}
	if l.port, err = openSerialPort(cfg.Device, baud); err != nil {
		return nil, fmt.Errorf("heartbeat: serial link %s: %w", c.name, err)
	}
	l.tr = newTracker("serial", &l.c, &l.stats)
	l.wg.Add(2)
	go func() { defer l.wg.Done(); l.reader() }()
	go func() { defer l.wg.Done(); l.writer() }()
	return l, nil
}

// Name is the link's name.
func (l *SerialLink) Name() string { return l.c.name }

// Authenticated reports whether frames are MACed with a secret key.
func (l *SerialLink) Authenticated() bool { return l.authed }

// Epoch is this link's boot epoch.
func (l *SerialLink) Epoch() uint64 { return l.sealer.Epoch() }

// DownAfter is the nominal time the link stays up without valid frames
// (stretched to the line's airtime when frames take longer than Interval).
func (l *SerialLink) DownAfter() time.Duration { return l.tr.downAfter }

// Health returns a snapshot.
func (l *SerialLink) Health() LinkHealth { return l.tr.snapshot() }

// Airtime is how long n bytes take on the line (8N1: 10 bits a byte).
func (l *SerialLink) Airtime(n int) time.Duration {
	return time.Duration(n) * 10 * time.Second / time.Duration(l.baud)
}

// Send frames payload and queues it for the writer. It never blocks on the
// device. When the queue is full the oldest frame is dropped (TxDropped)
// and ErrQueueFull is returned, though this frame is queued.
func (l *SerialLink) Send(payload []byte) error {
	if l.closed.Load() {
		return ErrClosed
	}
	if len(payload) > MaxPayload {
		return ErrPayloadTooLarge
	}
	l.mu.Lock()
	open := l.port != nil
	l.mu.Unlock()
	if !open {
		l.stats.txErrors.Add(1)
		return ErrNotOpen
	}
	l.sendMu.Lock()
	defer l.sendMu.Unlock()
	frame, err := l.sealer.Seal(l.sealBuf[:0], payload)
	if err != nil {
		return err
	}
	l.sealBuf = frame[:0]
	tf := txFrame{buf: AppendSerialFrame(make([]byte, 0, MaxSerialFrameLen), frame), plen: len(payload)}
	select {
	case l.queue <- tf:
		return nil
	default:
	}
	select { // full: the freshest advert matters most
	case <-l.queue:
		l.stats.txDropped.Add(1)
	default:
	}
	select {
	case l.queue <- tf:
	default:
		l.stats.txDropped.Add(1)
	}
	return ErrQueueFull
}

// Close stops the goroutines and closes the device.
func (l *SerialLink) Close() error {
	l.closeOnce.Do(func() {
		l.closed.Store(true)
		l.tr.stop()
		l.mu.Lock()
		p := l.port
		l.port = nil
		l.mu.Unlock()
		if p != nil {
			l.closeErr = p.Close()
		}
		l.wg.Wait()
	})
	return l.closeErr
}

func (l *SerialLink) current() *serialPort {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.port
}

// dropPort closes p after an I/O error, unless that already happened (the
// reader and the writer may both fail on the same device).
func (l *SerialLink) dropPort(p *serialPort, err error) {
	l.mu.Lock()
	mine := l.port == p
	if mine {
		l.port = nil
	}
	l.mu.Unlock()
	if mine {
		l.tr.setErr(fmt.Errorf("%s: %w", l.device, err))
		_ = p.Close()
	}
}

// reopen waits and tries to open the device again until it succeeds (true)
// or the link is closed (false).
func (l *SerialLink) reopen() bool {
	backoff := reopenMin
	t := time.NewTimer(backoff)
	defer t.Stop()
	for {
		select {
		case <-l.tr.done:
			return false
		case <-t.C:
		}
		p, err := openSerialPort(l.device, l.baud)
		if err == nil {
			l.mu.Lock()
			if l.closed.Load() {
				l.mu.Unlock()
				_ = p.Close()
				return false
			}
			l.port = p
			l.mu.Unlock()
			return true
		}
		l.tr.setErr(fmt.Errorf("reopen: %w", err))
		backoff = min(2*backoff, reopenMax)
		t.Reset(backoff)
	}
}

func (l *SerialLink) reader() {
	buf := make([]byte, 4096)
	d := NewDeframer()
	var now time.Time
	deliver := func(frame []byte, drop DropReason, raw int) {
		if drop != DropNone {
			l.stats.drop(drop)
			l.stats.garbage.Add(uint64(raw))
			return
		}
		f, r := l.opener.Open(frame)
		if r != DropNone {
			l.stats.drop(r)
			return
		}
		l.stats.rxFrames.Add(1)
		l.stats.rxBytes.Add(uint64(len(f.Payload)))
		l.tr.valid(now, l.Airtime(raw+2))
		if l.c.onReceive != nil {
			l.c.onReceive(Received{
				Link: l.c.name, From: string(f.From), Payload: append([]byte(nil), f.Payload...),
				At: now, SentAt: time.Unix(0, f.SentAt), Epoch: f.Epoch, Seq: f.Seq,
			})
		}
	}
	for {
		p := l.current()
		if p == nil {
			if l.closed.Load() || !l.reopen() {
				return
			}
			d.Reset()
			continue
		}
		n, err := p.f.Read(buf)
		now = time.Now()
		if n > 0 {
			d.Feed(buf[:n], deliver)
		}
		if err != nil {
			if l.closed.Load() {
				return
			}
			if errors.Is(err, io.EOF) {
				err = errors.New("device hung up")
			}
			l.dropPort(p, err)
		}
	}
}

func (l *SerialLink) writer() {
	for {
		var tf txFrame
		select {
		case <-l.tr.done:
			return
		case tf = <-l.queue:
		}
		p := l.current()
		if p == nil {
			l.stats.txErrors.Add(1)
			continue
		}
		// Room for the frame in the output buffer normally appears within
		// its airtime; a second more means the line is stuck. A cut frame
		// is harmless: the next one starts with a delimiter.
		_ = p.f.SetWriteDeadline(time.Now().Add(time.Second + 2*l.Airtime(len(tf.buf))))
		if _, err := p.f.Write(tf.buf); err != nil {
			if l.closed.Load() {
				return
			}
			l.stats.txErrors.Add(1)
			l.tr.setErr(fmt.Errorf("%s: %w", l.device, err))
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				l.dropPort(p, err) // EIO etc.: the reader reopens it
			}
			continue
		}
		l.stats.txFrames.Add(1)
		l.stats.txBytes.Add(uint64(tf.plen))
	}
}

// serialPort is an open, configured terminal device (see the comment at
// the top of this file).
type serialPort struct {
	f    *os.File    // I/O, on the netpoller
	conf serial.Port // configuration and TIOCEXCL; no I/O
}

func openSerialPort(path string, baud int) (*serialPort, error) {
	f, err := os.OpenFile(path, os.O_RDWR|syscall.O_NOCTTY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	if err := isTerminal(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s is not a terminal device: %w", path, err)
	}
	conf, err := serial.Open(path, &serial.Mode{
		BaudRate: baud, DataBits: 8, Parity: serial.NoParity, StopBits: serial.OneStopBit,
	})
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	// Whatever sat in the input buffer predates us; drop it.
	_ = conf.ResetInputBuffer()
	if err := f.SetDeadline(time.Time{}); err != nil {
		f.Close()
		conf.Close()
		return nil, fmt.Errorf("%s: not pollable: %w", path, err)
	}
	return &serialPort{f: f, conf: conf}, nil
}

func isTerminal(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var terr error
	if err := rc.Control(func(fd uintptr) { _, terr = unix.IoctlGetTermios(int(fd), unix.TCGETS) }); err != nil {
		return err
	}
	return terr
}

// Close closes the I/O descriptor first, which wakes a blocked Read or
// Write, then the configuration one.
func (p *serialPort) Close() error {
	return errors.Join(p.f.Close(), p.conf.Close())
}
