package heartbeat

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// socatPair starts `socat pty,raw,echo=0,link=A pty,raw,echo=0,link=B` and
// returns once both links exist; the pair goes away at cleanup (or when
// stop is called).
type socatPair struct {
	a, b string
	cmd  *exec.Cmd
	once sync.Once
}

func startSocat(t *testing.T, a, b string) *socatPair {
	t.Helper()
	path, err := exec.LookPath("socat")
	if err != nil {
		t.Skip("serial link tests need socat for PTY pairs (apt-get install -y socat)")
	}
	p := &socatPair{a: a, b: b}
	p.cmd = exec.Command(path, "pty,raw,echo=0,link="+a, "pty,raw,echo=0,link="+b)
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.stop)
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, ea := os.Stat(a)
		_, eb := os.Stat(b)
		if ea == nil && eb == nil {
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("socat did not create %s and %s", a, b)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// stop kills this socat (by its pid) and waits for it.
func (p *socatPair) stop() {
	p.once.Do(func() {
		_ = p.cmd.Process.Kill()
		_ = p.cmd.Wait()
		os.Remove(p.a) // SIGKILL leaves the links behind
		os.Remove(p.b)
	})
}

// tamperLine is a serial line with a man in the middle:
//
//	link A — pty A ═socat═ pty A2 — relay — pty B2 ═socat═ pty B — link B
//
// The relay (this test) copies bytes both ways and can insert bytes or
// flip one inside the next chunk, like line noise.
type tamperLine struct {
	A, B    string
	a2, b2  *os.File
	mu      sync.Mutex
	inject  [2][]byte // inserted before the next chunk; 0: A→B, 1: B→A
	corrupt [2]bool   // flip a bit in the middle of the next chunk
	wg      sync.WaitGroup
}

func newTamperLine(t *testing.T) *tamperLine {
	dir := t.TempDir()
	l := &tamperLine{A: filepath.Join(dir, "A"), B: filepath.Join(dir, "B")}
	startSocat(t, l.A, filepath.Join(dir, "A2"))
	startSocat(t, filepath.Join(dir, "B2"), l.B)
	l.a2, l.b2 = openRaw(t, filepath.Join(dir, "A2")), openRaw(t, filepath.Join(dir, "B2"))
	l.wg.Add(2)
	go l.pump(0, l.a2, l.b2)
	go l.pump(1, l.b2, l.a2)
	t.Cleanup(func() {
		l.a2.Close()
		l.b2.Close()
		l.wg.Wait()
	})
	return l
}

func openRaw(t *testing.T, path string) *os.File {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR|syscall.O_NOCTTY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	rc, _ := f.SyscallConn()
	var terr error
	_ = rc.Control(func(fd uintptr) {
		tio, err := unix.IoctlGetTermios(int(fd), unix.TCGETS)
		if err != nil {
			terr = err
			return
		}
		tio.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
		tio.Oflag &^= unix.OPOST
		tio.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
		tio.Cflag = tio.Cflag&^(unix.CSIZE|unix.PARENB) | unix.CS8
		tio.Cc[unix.VMIN], tio.Cc[unix.VTIME] = 1, 0
		terr = unix.IoctlSetTermios(int(fd), unix.TCSETS, tio)
	})
	if terr != nil {
		t.Fatal(terr)
	}
	return f
}

func (l *tamperLine) pump(dir int, from, to *os.File) {
	defer l.wg.Done()
	buf := make([]byte, 8192)
	for {
		n, err := from.Read(buf)
		if err != nil {
			return
		}
		chunk := buf[:n]
		l.mu.Lock()
		pre := l.inject[dir]
		l.inject[dir] = nil
		if l.corrupt[dir] && n >= 40 {
			i := n / 2
			for chunk[i] == 0x00 || chunk[i] == 0x01 { // keep the delimiters where they are
				i++
			}
			chunk[i] ^= 0x01
			l.corrupt[dir] = false
		}
		l.mu.Unlock()
		if _, err := to.Write(append(pre, chunk...)); err != nil {
			return
		}
	}
}

func (l *tamperLine) injectNext(dir int, b []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.inject[dir] = append(l.inject[dir], b...)
}

func (l *tamperLine) corruptNext(dir int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.corrupt[dir] = true
}

func newSerialPair(t *testing.T, devA, devB string, interval time.Duration, ra, rb *recorder) (*SerialLink, *SerialLink) {
	t.Helper()
	mk := func(id, peer, dev string, r *recorder) *SerialLink {
		l, err := NewSerialLink(SerialConfig{
			Name: "ser0", NodeID: id, PeerID: peer, Device: dev, Baud: 115200,
			Key: testKey, Interval: interval, OnReceive: r.onReceive, OnHealth: r.onHealth,
		})
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	return mk("lb1", "lb2", devA, ra), mk("lb2", "lb1", devB, rb)
}

func TestSerialLinkPTY(t *testing.T) {
	dir := t.TempDir()
	startSocat(t, filepath.Join(dir, "a"), filepath.Join(dir, "b"))
	ra, rb := newRecorder(), newRecorder()
	const interval = 10 * time.Millisecond
	a, b := newSerialPair(t, filepath.Join(dir, "a"), filepath.Join(dir, "b"), interval, ra, rb)
	if !a.Authenticated() {
		t.Error("link with a key says it is not authenticated")
	}
	sa, sb := startSender(a, interval, "a"), startSender(b, interval, "b")
	ra.waitHealth(t, true, 2*time.Second)
	rb.waitHealth(t, true, 2*time.Second)
	waitFor(t, 5*time.Second, "30 frames each way", func() bool {
		return len(ra.received()) >= 30 && len(rb.received()) >= 30
	})
	for i, m := range rb.received()[:30] {
		if m.From != "lb1" || string(m.Payload) != fmt.Sprintf("a-%d", i) || m.Seq != uint64(i+1) || m.Link != "ser0" {
			t.Fatalf("b got %+v", m)
		}
	}
	// b stops: a goes down after DownAfter and up again when b resumes.
	sb.halt()
	down := ra.waitHealth(t, false, 2*time.Second)
	lat := down.Since.Sub(down.LastRx)
	t.Logf("serial link down %v after the last frame (DownAfter %v)", lat, down.DownAfter)
	if lat < a.DownAfter() {
		t.Errorf("down after %v, before DownAfter %v", lat, a.DownAfter())
	}
	sb = startSender(b, interval, "b")
	ra.waitHealth(t, true, 2*time.Second)
	sa.halt()
	sb.halt()
	h := a.Health()
	if h.DropTotal() != 0 || h.TxErrors != 0 || h.TxDropped != 0 {
		t.Errorf("clean line, yet: %+v", h)
	}
	t.Logf("a: %v, garbage bytes %d", h, h.GarbageBytes)
	for _, l := range []*SerialLink{a, b} {
		if err := l.Close(); err != nil {
			t.Error(err)
		}
		if err := l.Send(nil); !errors.Is(err, ErrClosed) {
			t.Errorf("Send after Close: %v", err)
		}
	}
	checkNoLinkGoroutines(t)
}

// TestSerialLinkNoise: garbage between frames is survived and counted; a
// corrupted frame is dropped and the next one arrives.
func TestSerialLinkNoise(t *testing.T) {
	line := newTamperLine(t)
	ra, rb := newRecorder(), newRecorder()
	a, b := newSerialPair(t, line.A, line.B, 10*time.Millisecond, ra, rb)
	defer a.Close()
	defer b.Close()

	sent := 0
	send := func() {
		t.Helper()
		sent++
		if err := a.Send(fmt.Appendf(nil, "advert %d", sent)); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 2*time.Second, fmt.Sprintf("frame %d at b", sent), func() bool {
			r := rb.received()
			return len(r) > 0 && r[len(r)-1].Seq == uint64(sent)
		})
	}
	bad := func(h LinkHealth) uint64 {
		return h.Drops[DropBadCRC] + h.Drops[DropBadFraming] + h.Drops[DropTruncated]
	}
	send()
	send()

	for i, garbage := range [][]byte{
		[]byte("line noise without zero bytes \xff\xfe\x80"),
		[]byte("\x00\x00\x07junk\x00more junk\x00\x00"),
		[]byte{0x02, 0x41, 0xff, 0x01},
	} {
		before := b.Health()
		line.injectNext(0, garbage)
		send()
		h := b.Health()
		if bad(h) <= bad(before) || h.GarbageBytes <= before.GarbageBytes {
			t.Fatalf("garbage %d not counted: before %+v after %+v", i, before, h)
		}
		t.Logf("garbage %q: drops %v, garbage bytes +%d", garbage, h.Drops, h.GarbageBytes-before.GarbageBytes)
	}

	before := b.Health()
	line.corruptNext(0)
	sent++ // this one is lost
	if err := a.Send([]byte("corrupted on the way")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, "corrupt frame dropped", func() bool { return bad(b.Health()) > bad(before) })
	send()
	var seqs []uint64
	for _, m := range rb.received() {
		seqs = append(seqs, m.Seq)
	}
	if fmt.Sprint(seqs) != "[1 2 3 4 5 7]" {
		t.Errorf("b received sequence numbers %v, want [1 2 3 4 5 7]", seqs)
	}
	if h := b.Health(); h.Drops[DropBadMAC] != 0 || h.RxFrames != 6 {
		t.Errorf("b: %+v", h)
	}
	// And the other direction is unaffected.
	if err := b.Send([]byte("reply")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, "reply at a", func() bool { return len(ra.received()) == 1 })
}

// TestSerialLinkReopen: when the device goes away (socat exits), the link
// notices, goes down, and reopens the device by path when it comes back.
func TestSerialLinkReopen(t *testing.T) {
	dir := t.TempDir()
	pa, pb := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	p := startSocat(t, pa, pb)
	ra, rb := newRecorder(), newRecorder()
	a, b := newSerialPair(t, pa, pb, 10*time.Millisecond, ra, rb)
	defer a.Close()
	defer b.Close()
	sa := startSender(a, 10*time.Millisecond, "a")
	defer sa.halt()
	rb.waitHealth(t, true, 2*time.Second)

	p.stop()
	rb.waitHealth(t, false, 2*time.Second)
	waitFor(t, 2*time.Second, "device error reported", func() bool { return b.Health().LastError != "" })
	t.Logf("while gone: %q", b.Health().LastError)
	waitFor(t, 2*time.Second, "Send refuses", func() bool { return errors.Is(a.Send(nil), ErrNotOpen) })

	startSocat(t, pa, pb) // new PTYs behind the same paths
	h := rb.waitHealth(t, true, 10*time.Second)
	t.Logf("reopened; b up again: %v", h)
}

// TestSerialLinkStuckLine: nobody reads the other end, so the line fills.
// Send never blocks (the queue drops the oldest frames) and Close still
// returns at once, leaving no goroutine behind.
func TestSerialLinkStuckLine(t *testing.T) {
	dir := t.TempDir()
	startSocat(t, filepath.Join(dir, "a"), filepath.Join(dir, "b"))
	a, err := NewSerialLink(SerialConfig{Name: "ser0", NodeID: "lb1", Device: filepath.Join(dir, "a"), Interval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if a.Authenticated() {
		t.Error("a link without a key claims to be authenticated")
	}
	start := time.Now()
	payload := make([]byte, MaxPayload)
	for range 2000 {
		err := a.Send(payload)
		if err != nil && !errors.Is(err, ErrQueueFull) {
			t.Fatal(err)
		}
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("2000 Sends took %v", d)
	}
	waitFor(t, 3*time.Second, "queue overflow", func() bool { return a.Health().TxDropped > 0 })
	time.Sleep(100 * time.Millisecond) // let the writer block on the full line
	start = time.Now()
	if err := a.Close(); err != nil {
		t.Error(err)
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("Close took %v with a stuck line", d)
	}
	h := a.Health()
	t.Logf("stuck line: tx %d frames, dropped %d, errors %d (%s)", h.TxFrames, h.TxDropped, h.TxErrors, h.LastError)
	checkNoLinkGoroutines(t)
}

func TestSerialConfigErrors(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "plain")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		cfg  SerialConfig
	}{
		{"missing device", SerialConfig{Name: "s", NodeID: "lb1", Device: filepath.Join(dir, "nope"), Interval: time.Second}},
		{"not a terminal", SerialConfig{Name: "s", NodeID: "lb1", Device: file, Interval: time.Second}},
		{"no device", SerialConfig{Name: "s", NodeID: "lb1", Interval: time.Second}},
		{"short key", SerialConfig{Name: "s", NodeID: "lb1", Device: file, Key: []byte("x"), Interval: time.Second}},
		{"bad baud", SerialConfig{Name: "s", NodeID: "lb1", Device: file, Baud: 10, Interval: time.Second}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := NewSerialLink(tc.cfg)
			if err == nil {
				l.Close()
				t.Fatal("accepted")
			}
			t.Log(err)
		})
	}
}

// TestTrackerSpacing: on a slow line the down-after follows the airtime of
// the frames received, not the configured interval.
func TestTrackerSpacing(t *testing.T) {
	var st counters
	var got []bool
	tr := newTracker("serial", &common{name: "s", interval: 10 * time.Millisecond, onHealth: func(h LinkHealth) { got = append(got, h.Up) }}, &st)
	now := time.Now()
	tr.valid(now, 0)
	if h := tr.snapshot(); !h.Up || h.DownAfter != 35*time.Millisecond {
		t.Fatalf("%+v", h)
	}
	tr.valid(now, 100*time.Millisecond) // a frame that took 100 ms on the line
	if h := tr.snapshot(); h.DownAfter != DownAfter(100*time.Millisecond, 3) {
		t.Fatalf("down-after %v with 100ms frames", h.DownAfter)
	}
	tr.expire(now.Add(300 * time.Millisecond))
	if h := tr.snapshot(); !h.Up {
		t.Fatal("down before 3 airtimes")
	}
	tr.expire(now.Add(350 * time.Millisecond))
	tr.expire(now.Add(400 * time.Millisecond)) // no second report
	if fmt.Sprint(got) != "[true false]" {
		t.Fatalf("reports %v", got)
	}
}

func TestDownAfter(t *testing.T) {
	for _, tc := range []struct {
		interval time.Duration
		misses   int
		want     time.Duration
	}{
		{time.Millisecond, 0, 4 * time.Millisecond},
		{10 * time.Millisecond, 3, 35 * time.Millisecond},
		{time.Second, 5, 5500 * time.Millisecond},
	} {
		if got := DownAfter(tc.interval, tc.misses); got != tc.want {
			t.Errorf("DownAfter(%v, %d) = %v, want %v", tc.interval, tc.misses, got, tc.want)
		}
	}
}
