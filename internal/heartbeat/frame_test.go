package heartbeat

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"go/ast"
	"go/parser"
	"go/token"
	"hash"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var testKey = []byte("0123456789abcdef0123456789abcdef")

const testDomain = "lab/hb0"

// t0 is a fixed sender clock for deterministic timestamps.
var t0 = time.Date(2026, 11, 21, 5, 0, 0, 0, time.UTC)

func mustSealer(tb testing.TB, id string) *Sealer {
	tb.Helper()
	s, err := NewSealer(testKey, testDomain, id)
	if err != nil {
		tb.Fatal(err)
	}
	s.now = func() time.Time { return t0 }
	return s
}

func mustOpener(tb testing.TB, cfg OpenerConfig) *Opener {
	tb.Helper()
	if cfg.Key == nil {
		cfg.Key = testKey
	}
	if cfg.Domain == "" {
		cfg.Domain = testDomain
	}
	if cfg.Self == "" {
		cfg.Self = "lb1"
	}
	o, err := NewOpener(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return o
}

// sealAt seals payload with sequence number seq and timestamp ts.
func sealAt(tb testing.TB, s *Sealer, seq uint64, ts time.Time, payload []byte) []byte {
	tb.Helper()
	s.mu.Lock()
	s.seq = seq - 1
	s.now = func() time.Time { return ts }
	s.mu.Unlock()
	b, err := s.Seal(nil, payload)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// remac recomputes the MAC of a frame whose header was edited, so a test
// reaches the checks after the MAC.
func remac(b []byte) []byte {
	end := len(b) - MACLen
	h := newMAC(deriveKey(testKey, testDomain))
	h.Write(b[:end])
	return h.Sum(b[:end:end])
}

func newMAC(key []byte) hash.Hash { return hmac.New(sha256.New, key) }

func TestFrameRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name    string
		id      string
		payload []byte
	}{
		{"empty payload", "lb2", nil},
		{"advert", "lb2", []byte{0x31, 0x4d, 0x64, 0x01, 0x00, 0x64, 0x00, 0x00, 10, 77, 0, 100}},
		{"max payload", "lb2", bytes.Repeat([]byte{0xa5}, MaxPayload)},
		{"max id", strings.Repeat("n", MaxNodeIDLen), []byte("x")},
		{"zero bytes", "lb2", make([]byte, 100)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := mustSealer(t, tc.id)
			o := mustOpener(t, OpenerConfig{})
			b, err := s.Seal([]byte("prefix"), tc.payload)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(b, []byte("prefix")) {
				t.Fatal("Seal did not append")
			}
			b = b[len("prefix"):]
			if want := FrameHeaderLen + len(tc.id) + len(tc.payload) + MACLen; len(b) != want {
				t.Fatalf("frame is %d bytes, want %d", len(b), want)
			}
			f, r := o.Open(b)
			if r != DropNone {
				t.Fatalf("Open: %v", r)
			}
			if string(f.From) != tc.id || !bytes.Equal(f.Payload, tc.payload) || f.Seq != 1 ||
				f.Epoch != s.Epoch() || f.SentAt != t0.UnixNano() {
				t.Fatalf("got %+v", f)
			}
		})
	}
	if _, err := mustSealer(t, "x").Seal(nil, make([]byte, MaxPayload+1)); err != ErrPayloadTooLarge {
		t.Fatalf("oversized payload: %v", err)
	}
	if MaxFrameSize != 1154 {
		t.Fatalf("MaxFrameSize = %d; the doc comment says 1154", MaxFrameSize)
	}
}

// TestFrameLayout pins the byte layout documented in frame.go.
func TestFrameLayout(t *testing.T) {
	s := mustSealer(t, "lb2")
	b := sealAt(t, s, 0x0102030405060708, time.Unix(0, 0x1112131415161718), []byte("PAY"))
	want := []byte("HDHB\x01\x00\x03\x00")
	want = binary.BigEndian.AppendUint64(want, s.Epoch())
	want = append(want, 1, 2, 3, 4, 5, 6, 7, 8)
	want = append(want, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18)
	want = append(want, 0, 3)
	want = append(want, "lb2PAY"...)
	if !bytes.Equal(b[:len(want)], want) {
		t.Fatalf("header\n got %x\nwant %x", b[:len(want)], want)
	}
	h := newMAC(deriveKey(testKey, testDomain))
	h.Write(want)
	if !bytes.Equal(b[len(want):], h.Sum(nil)) || len(b) != len(want)+32 {
		t.Fatal("trailer is not HMAC-SHA256(derived key, everything before it)")
	}
}

func TestFrameDropReasons(t *testing.T) {
	good := func() []byte { return sealAt(t, mustSealer(t, "lb2"), 7, t0, []byte("advert")) }
	edit := func(f func(b []byte) []byte) func() []byte {
		return func() []byte { return f(good()) }
	}
	set := func(off int, v byte) func() []byte {
		return edit(func(b []byte) []byte { b[off] = v; return b })
	}
	tests := []struct {
		name  string
		frame func() []byte
		cfg   OpenerConfig
		want  DropReason
	}{
		{"good", good, OpenerConfig{}, DropNone},
		{"empty", func() []byte { return nil }, OpenerConfig{}, DropTruncated},
		{"short header", edit(func(b []byte) []byte { return b[:20] }), OpenerConfig{}, DropTruncated},
		{"short non-frame", func() []byte { return []byte("GET / HTTP/1.0") }, OpenerConfig{}, DropBadMagic},
		{"cut MAC", edit(func(b []byte) []byte { return b[:len(b)-1] }), OpenerConfig{}, DropTruncated},
		{"cut payload", edit(func(b []byte) []byte { return b[:FrameHeaderLen+4] }), OpenerConfig{}, DropTruncated},
		{"too long", func() []byte { return make([]byte, MaxFrameSize+1) }, OpenerConfig{}, DropOversized},
		{"payload length > max", edit(func(b []byte) []byte {
			binary.BigEndian.PutUint16(b[offPayloadLen:], MaxPayload+1)
			return b
		}), OpenerConfig{}, DropOversized},
		{"bad magic", set(0, 'X'), OpenerConfig{}, DropBadMagic},
		{"bad version", set(offVersion, 2), OpenerConfig{}, DropBadVersion},
		{"flags set", set(offFlags, 1), OpenerConfig{}, DropBadHeader},
		{"reserved set", set(offReserved, 1), OpenerConfig{}, DropBadHeader},
		{"id length 0", set(offIDLen, 0), OpenerConfig{}, DropBadHeader},
		{"id length 65", set(offIDLen, 65), OpenerConfig{}, DropBadHeader},
		{"trailing byte", edit(func(b []byte) []byte { return append(b, 0) }), OpenerConfig{}, DropBadHeader},
		{"seq 0", edit(func(b []byte) []byte {
			binary.BigEndian.PutUint64(b[offSeq:], 0)
			return remac(b)
		}), OpenerConfig{}, DropBadHeader},
		{"payload bit flipped", edit(func(b []byte) []byte { b[len(b)-MACLen-1] ^= 1; return b }), OpenerConfig{}, DropBadMAC},
		{"first MAC byte", edit(func(b []byte) []byte { b[len(b)-MACLen] ^= 0x80; return b }), OpenerConfig{}, DropBadMAC},
		{"last MAC byte", edit(func(b []byte) []byte { b[len(b)-1] ^= 1; return b }), OpenerConfig{}, DropBadMAC},
		{"seq edited", edit(func(b []byte) []byte { b[offSeq+7]++; return b }), OpenerConfig{}, DropBadMAC},
		{"wrong key", good, OpenerConfig{Key: []byte("another key, 16+ bytes long")}, DropBadMAC},
		{"wrong domain", good, OpenerConfig{Domain: "lab/hb1"}, DropBadMAC},
		{"own id (reflected)", good, OpenerConfig{Self: "lb2"}, DropSelf},
		{"not the peer", good, OpenerConfig{Peer: "lb3"}, DropWrongSender},
		{"the peer", good, OpenerConfig{Peer: "lb2"}, DropNone},
		{"stale on first contact", good, OpenerConfig{MaxClockSkew: time.Minute, Now: func() time.Time { return t0.Add(time.Hour) }}, DropStale},
		{"fresh on first contact", good, OpenerConfig{MaxClockSkew: time.Minute, Now: func() time.Time { return t0.Add(time.Second) }}, DropNone},
	}
	seen := map[DropReason]bool{}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := mustOpener(t, tc.cfg)
			_, r := o.Open(tc.frame())
			if r != tc.want {
				t.Fatalf("got %v, want %v", r, tc.want)
			}
			seen[r] = true
		})
	}
	// The replay reasons are covered by TestReplay*; the link reasons
	// (wrong_source, bad_ttl, bad_crc, bad_framing) by the link tests.
	for _, r := range []DropReason{DropTruncated, DropOversized, DropBadMagic, DropBadVersion, DropBadHeader, DropBadMAC, DropSelf, DropWrongSender, DropStale} {
		if !seen[r] {
			t.Errorf("no case produced %v", r)
		}
	}
}

func TestDropReasonNames(t *testing.T) {
	names := map[string]DropReason{}
	for _, r := range DropReasons() {
		s := r.String()
		if s == "" || strings.HasPrefix(s, "drop(") || strings.ContainsAny(s, " -") {
			t.Errorf("reason %d has name %q", r, s)
		}
		if o, dup := names[s]; dup {
			t.Errorf("%v and %v share the name %q", o, r, s)
		}
		names[s] = r
	}
	if len(names) != int(numDropReasons)-1 {
		t.Errorf("%d names for %d reasons", len(names), numDropReasons-1)
	}
	if s := DropReason(200).String(); s != "drop(200)" {
		t.Errorf("unknown reason: %q", s)
	}
}

func TestReplayWindow(t *testing.T) {
	type step struct {
		seq  uint64
		want DropReason
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"in order", []step{{1, DropNone}, {2, DropNone}, {3, DropNone}}},
		{"duplicate", []step{{1, DropNone}, {2, DropNone}, {2, DropReplay}, {1, DropReplay}, {3, DropNone}}},
		{"reorder within window", []step{{10, DropNone}, {8, DropNone}, {9, DropNone}, {8, DropReplay}, {9, DropReplay}, {11, DropNone}, {7, DropNone}}},
		{"window edge", []step{{100, DropNone}, {37, DropNone}, {36, DropTooOld}, {37, DropReplay}, {1, DropTooOld}}},
		{"jump beyond window", []step{{5, DropNone}, {200, DropNone}, {150, DropNone}, {5, DropTooOld}, {200, DropReplay}, {150, DropReplay}, {137, DropNone}, {136, DropTooOld}}},
		{"shift keeps bits", []step{{1, DropNone}, {3, DropNone}, {60, DropNone}, {1, DropReplay}, {2, DropNone}, {3, DropReplay}, {66, DropNone}, {3, DropReplay}, {2, DropTooOld}}},
		{"first frame is late in sequence", []step{{1000, DropNone}, {999, DropNone}, {1001, DropNone}, {999, DropReplay}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := mustSealer(t, "lb2")
			o := mustOpener(t, OpenerConfig{})
			frames := map[uint64][]byte{} // a replay is the very same bytes
			for i, st := range tc.steps {
				b := frames[st.seq]
				if b == nil {
					b = sealAt(t, s, st.seq, t0.Add(time.Duration(st.seq)*time.Millisecond), []byte("p"))
					frames[st.seq] = b
				}
				if _, r := o.Open(b); r != st.want {
					t.Fatalf("step %d (seq %d): got %v, want %v", i, st.seq, r, st.want)
				}
			}
		})
	}
}

func TestReplayEpochs(t *testing.T) {
	o := mustOpener(t, OpenerConfig{}) // tolerance 1s
	life1 := mustSealer(t, "lb2")
	old := sealAt(t, life1, 1, t0, []byte("old life"))
	unseen := sealAt(t, life1, 2, t0.Add(time.Millisecond), []byte("captured, never delivered"))
	expect := func(b []byte, want DropReason, what string) {
		t.Helper()
		if _, r := o.Open(b); r != want {
			t.Fatalf("%s: got %v, want %v", what, r, want)
		}
	}
	expect(old, DropNone, "first contact")
	expect(sealAt(t, life1, 3, t0.Add(2*time.Millisecond), nil), DropNone, "next frame")

	// The peer restarts: a new epoch with a newer timestamp is accepted on
	// its first frame, whatever its sequence number.
	life2 := mustSealer(t, "lb2")
	if life2.Epoch() == life1.Epoch() {
		t.Fatal("two sealers drew the same epoch")
	}
	expect(sealAt(t, life2, 1, t0.Add(3*time.Second), []byte("restarted")), DropNone, "restarted peer")
	expect(sealAt(t, life2, 2, t0.Add(3*time.Second+time.Millisecond), nil), DropNone, "restarted peer, next frame")

	// Frames of the previous life are refused, even never-seen ones, even
	// with a timestamp inside the tolerance.
	expect(unseen, DropOldEpoch, "captured frame of the old epoch")
	expect(sealAt(t, life1, 50, t0.Add(3*time.Second), nil), DropOldEpoch, "old epoch with a fresh timestamp (retired)")

	// An epoch never seen before, with a timestamp older than the last
	// accepted frame minus the tolerance, is a recording: refused.
	life0 := mustSealer(t, "lb2")
	expect(sealAt(t, life0, 9, t0.Add(-time.Hour), nil), DropOldEpoch, "recording from an earlier life")
	expect(sealAt(t, life0, 10, t0.Add(3*time.Second-1500*time.Millisecond), nil), DropOldEpoch, "1.5s older than the last frame")

	// A restart whose clock stepped back less than the tolerance is fine.
	life3 := mustSealer(t, "lb2")
	expect(sealAt(t, life3, 1, t0.Add(3*time.Second-500*time.Millisecond), nil), DropNone, "clock 0.5s behind, new epoch")
	// ... and the epoch it replaced is retired.
	expect(sealAt(t, life2, 3, t0.Add(4*time.Second), nil), DropOldEpoch, "life 2 after life 3")

	// Retired epochs are remembered up to retiredEpochs.
	lives := []*Sealer{}
	for i := range retiredEpochs + 2 {
		s := mustSealer(t, "lb2")
		lives = append(lives, s)
		expect(sealAt(t, s, 1, t0.Add(time.Duration(10+i)*time.Second), nil), DropNone, "restart")
	}
	// Newer than anything: only the retired list can refuse these.
	ts := t0.Add(100 * time.Second)
	for i := 1; i <= retiredEpochs; i++ {
		expect(sealAt(t, lives[i], 2, ts, nil), DropOldEpoch, "retired epoch")
	}
	// lives[0] was pushed out of the list; with a fresh timestamp (which
	// only the key holder can make) it is accepted as a new life.
	expect(sealAt(t, lives[0], 2, ts, nil), DropNone, "forgotten epoch, fresh timestamp")
}

func TestEpochToleranceAndSkew(t *testing.T) {
	// No tolerance: a new epoch must not be older at all.
	o := mustOpener(t, OpenerConfig{EpochTolerance: -1})
	a, b := mustSealer(t, "lb2"), mustSealer(t, "lb2")
	if _, r := o.Open(sealAt(t, a, 1, t0, nil)); r != DropNone {
		t.Fatal(r)
	}
	if _, r := o.Open(sealAt(t, b, 1, t0.Add(-time.Nanosecond), nil)); r != DropOldEpoch {
		t.Fatalf("older new epoch with no tolerance: %v", r)
	}
	// MaxClockSkew checks new epochs against the receiver's clock, not
	// frames within an epoch.
	now := t0
	o = mustOpener(t, OpenerConfig{MaxClockSkew: 10 * time.Second, Now: func() time.Time { return now }})
	if _, r := o.Open(sealAt(t, a, 1, t0, nil)); r != DropNone {
		t.Fatal(r)
	}
	now = t0.Add(time.Hour)
	if _, r := o.Open(sealAt(t, a, 2, t0.Add(time.Second), nil)); r != DropNone {
		t.Fatalf("same epoch, receiver clock far ahead: %v", r)
	}
	if _, r := o.Open(sealAt(t, b, 1, t0.Add(2*time.Second), nil)); r != DropStale {
		t.Fatalf("new epoch an hour behind the receiver: %v", r)
	}
	if _, r := o.Open(sealAt(t, b, 2, now.Add(-5*time.Second), nil)); r != DropNone {
		t.Fatalf("new epoch within skew: %v", r)
	}
}

func TestOpenerSendersBounded(t *testing.T) {
	o := mustOpener(t, OpenerConfig{})
	for i := range 3 * maxSenders {
		s := mustSealer(t, "n"+strings.Repeat("x", i%50)+string(rune('a'+i%26)))
		if _, r := o.Open(sealAt(t, s, 1, t0, nil)); r != DropNone {
			t.Fatal(r)
		}
	}
	if len(o.senders) > maxSenders {
		t.Fatalf("%d sender states kept, bound is %d", len(o.senders), maxSenders)
	}
}

func TestSealerSequence(t *testing.T) {
	s := mustSealer(t, "lb2")
	var last uint64
	for range 100 {
		b, _ := s.Seal(nil, nil)
		f, r := ParseFrame(b)
		if r != DropNone || f.Seq != last+1 {
			t.Fatalf("seq %d after %d (%v)", f.Seq, last, r)
		}
		last = f.Seq
	}
	// Wrapping 2^64 starts a new epoch instead of reusing sequence numbers.
	e := s.Epoch()
	s.mu.Lock()
	s.seq = ^uint64(0)
	s.mu.Unlock()
	b, _ := s.Seal(nil, nil)
	f, _ := ParseFrame(b)
	if f.Seq != 1 || f.Epoch == e {
		t.Fatalf("after wrap: seq %d epoch changed %v", f.Seq, f.Epoch != e)
	}
}

func TestKeyChecks(t *testing.T) {
	if _, err := NewSealer([]byte("short"), "d", "lb1"); err == nil {
		t.Error("short key accepted by NewSealer")
	}
	if _, err := NewOpener(OpenerConfig{Key: []byte("short"), Self: "lb1"}); err == nil {
		t.Error("short key accepted by NewOpener")
	}
	if _, err := NewSealer(testKey, "d", strings.Repeat("x", 65)); err == nil {
		t.Error("65-byte node id accepted")
	}
	if _, err := NewSealer(testKey, "d", ""); err == nil {
		t.Error("empty node id accepted")
	}
	if bytes.Equal(deriveKey(testKey, "a"), deriveKey(testKey, "b")) {
		t.Error("domains do not separate keys")
	}
}

// TestMACComparedInConstantTime checks the source: the MAC comparison is
// hmac.Equal (crypto/subtle underneath), and nothing in the package
// compares bytes with bytes.Equal or == on strings of MAC material.
func TestMACComparedInConstantTime(t *testing.T) {
	fset := token.NewFileSet()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Skip("package source not in the working directory (test binary run elsewhere)")
	}
	foundVerify := false
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		src, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		f, err := parser.ParseFile(fset, name, src, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.SelectorExpr:
				if x, ok := n.X.(*ast.Ident); ok && x.Name == "bytes" && (n.Sel.Name == "Equal" || n.Sel.Name == "Compare") {
					t.Errorf("%s: bytes.%s in non-test code; compare secrets with hmac.Equal", fset.Position(n.Pos()), n.Sel.Name)
				}
			case *ast.FuncDecl:
				if n.Name.Name != "verifyMAC" {
					return true
				}
				foundVerify = true
				usesHMACEqual := false
				ast.Inspect(n.Body, func(m ast.Node) bool {
					if s, ok := m.(*ast.SelectorExpr); ok {
						if x, ok := s.X.(*ast.Ident); ok && x.Name == "hmac" && s.Sel.Name == "Equal" {
							usesHMACEqual = true
						}
					}
					if b, ok := m.(*ast.BinaryExpr); ok && (b.Op == token.EQL || b.Op == token.NEQ) {
						t.Errorf("%s: == in verifyMAC", fset.Position(b.Pos()))
					}
					return true
				})
				if !usesHMACEqual {
					t.Errorf("verifyMAC does not use hmac.Equal")
				}
			}
			return true
		})
	}
	if !foundVerify {
		t.Fatal("no verifyMAC function found")
	}
	// And Open goes through verifyMAC: a frame that differs only in its
	// last MAC bit is refused.
	b := sealAt(t, mustSealer(t, "lb2"), 1, t0, nil)
	b[len(b)-1] ^= 1
	if _, r := mustOpener(t, OpenerConfig{}).Open(b); r != DropBadMAC {
		t.Fatal(r)
	}
}

func TestLoadKey(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, data []byte, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	key := bytes.Repeat([]byte{0, 0xff, 'a', '\n'}, 8)
	for _, tc := range []struct {
		name, path string
		ok         bool
	}{
		{"good", write("good", key, 0o600), true},
		{"read-only owner", write("ro", key, 0o400), true},
		{"group readable", write("grp", key, 0o640), false},
		{"world readable", write("world", key, 0o604), false},
		{"short", write("short", []byte("tooshort\n"), 0o600), false},
		{"huge", write("huge", make([]byte, 5000), 0o600), false},
		{"missing", filepath.Join(dir, "nope"), false},
		{"directory", dir, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := LoadKey(tc.path)
			if (err == nil) != tc.ok {
				t.Fatalf("err = %v, want ok=%v", err, tc.ok)
			}
			if tc.ok && !bytes.Equal(got, key) {
				t.Fatalf("key %x, want the file's exact bytes %x", got, key)
			}
		})
	}
}

// FuzzDecodeFrame feeds arbitrary bytes to the UDP frame decoder. It must
// never panic; whatever it accepts must be a well-formed frame that
// reassembles to the input, and accepting the same bytes twice is a replay.
func FuzzDecodeFrame(f *testing.F) {
	s := mustSealer(f, "lb2")
	for _, p := range [][]byte{nil, []byte("advert"), bytes.Repeat([]byte{0}, MaxPayload)} {
		b, _ := s.Seal(nil, p)
		f.Add(b)
		f.Add(b[:len(b)-1])
		f.Add(append(b, 0))
	}
	f.Add([]byte("HDHB"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		o := mustOpener(t, OpenerConfig{})
		in := bytes.Clone(data)
		fr, r := o.Open(data)
		if !bytes.Equal(in, data) {
			t.Fatal("Open modified its input")
		}
		if r >= numDropReasons {
			t.Fatalf("reason %d out of range", r)
		}
		pf, pr := ParseFrame(data)
		if pr != DropNone {
			if r != pr {
				t.Fatalf("ParseFrame says %v, Open says %v", pr, r)
			}
			return
		}
		// Structurally valid: reassemble it.
		re := []byte(FrameMagic)
		re = append(re, FrameVersion, 0, byte(len(pf.From)), 0)
		re = binary.BigEndian.AppendUint64(re, pf.Epoch)
		re = binary.BigEndian.AppendUint64(re, pf.Seq)
		re = binary.BigEndian.AppendUint64(re, uint64(pf.SentAt))
		re = binary.BigEndian.AppendUint16(re, uint16(len(pf.Payload)))
		re = append(re, pf.From...)
		re = append(re, pf.Payload...)
		re = append(re, pf.mac...)
		if !bytes.Equal(re, data) {
			t.Fatalf("frame does not reassemble:\n in %x\nout %x", data, re)
		}
		if r == DropNone {
			if !bytes.Equal(fr.Payload, pf.Payload) {
				t.Fatal("Open and ParseFrame disagree on the payload")
			}
			if _, r2 := o.Open(data); r2 != DropReplay {
				t.Fatalf("second Open of an accepted frame: %v, want replay", r2)
			}
		}
	})
}

func BenchmarkSeal(b *testing.B) {
	s := mustSealer(b, "lb2")
	payload := make([]byte, 40)
	buf := make([]byte, 0, MaxFrameSize)
	b.ReportAllocs()
	b.SetBytes(int64(len(payload)))
	for b.Loop() {
		if _, err := s.Seal(buf[:0], payload); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSealOpen(b *testing.B) {
	s := mustSealer(b, "lb2")
	o := mustOpener(b, OpenerConfig{})
	payload := make([]byte, 40)
	buf := make([]byte, 0, MaxFrameSize)
	b.ReportAllocs()
	b.SetBytes(int64(len(payload)))
	for b.Loop() {
		fr, _ := s.Seal(buf[:0], payload)
		if _, r := o.Open(fr); r != DropNone {
			b.Fatal(r)
		}
	}
}
