package heartbeat

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"math/rand/v2"
	"testing"
)

func TestCOBSVectors(t *testing.T) {
	seq := func(from, to int) []byte {
		var b []byte
		for i := from; i <= to; i++ {
			b = append(b, byte(i))
		}
		return b
	}
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	// The examples of the COBS article (Wikipedia), delimiters removed.
	for i, tc := range []struct{ in, out []byte }{
		{[]byte{}, []byte{0x01}},
		{[]byte{0x00}, []byte{0x01, 0x01}},
		{[]byte{0x00, 0x00}, []byte{0x01, 0x01, 0x01}},
		{[]byte{0x00, 0x11, 0x00}, []byte{0x01, 0x02, 0x11, 0x01}},
		{[]byte{0x11, 0x22, 0x00, 0x33}, []byte{0x03, 0x11, 0x22, 0x02, 0x33}},
		{[]byte{0x11, 0x22, 0x33, 0x44}, []byte{0x05, 0x11, 0x22, 0x33, 0x44}},
		{[]byte{0x11, 0x00, 0x00, 0x00}, []byte{0x02, 0x11, 0x01, 0x01, 0x01}},
		{seq(1, 254), cat([]byte{0xFF}, seq(1, 254))},
		{seq(0, 254), cat([]byte{0x01, 0xFF}, seq(1, 254))},
		{seq(1, 255), cat([]byte{0xFF}, seq(1, 254), []byte{0x02, 0xFF})},
		{cat(seq(2, 255), []byte{0}), cat([]byte{0xFF}, seq(2, 255), []byte{0x01, 0x01})},
		{cat(seq(3, 255), []byte{0, 1}), cat([]byte{0xFE}, seq(3, 255), []byte{0x02, 0x01})},
	} {
		got := cobsEncode(nil, tc.in, nil)
		if !bytes.Equal(got, tc.out) {
			t.Errorf("vector %d: encode\n got %x\nwant %x", i, got, tc.out)
		}
		dec, ok := cobsDecodeInPlace(bytes.Clone(tc.out))
		if !ok || !bytes.Equal(dec, tc.in) {
			t.Errorf("vector %d: decode %x -> %x %v", i, tc.out, dec, ok)
		}
		// Splitting the input between the two arguments changes nothing.
		for k := 0; k <= len(tc.in); k += 1 + len(tc.in)/7 {
			if g := cobsEncode(nil, tc.in[:k], tc.in[k:]); !bytes.Equal(g, tc.out) {
				t.Errorf("vector %d split at %d: %x", i, k, g)
			}
		}
	}
	for _, bad := range [][]byte{{0x05, 1, 2}, {0x02}, {0xFF, 1}} {
		if _, ok := cobsDecodeInPlace(bytes.Clone(bad)); ok {
			t.Errorf("invalid %x decoded", bad)
		}
	}
	if MaxSerialChunk != len(cobsEncode(nil, bytes.Repeat([]byte{1}, MaxFrameSize+crcLen), nil)) {
		t.Errorf("MaxSerialChunk %d is not the longest encoding", MaxSerialChunk)
	}
}

type deframed struct {
	frame []byte
	drop  DropReason
	raw   int
}

func deframeAll(d *Deframer, chunks ...[]byte) []deframed {
	var out []deframed
	for _, c := range chunks {
		d.Feed(c, func(f []byte, r DropReason, raw int) {
			out = append(out, deframed{bytes.Clone(f), r, raw})
		})
	}
	return out
}

func testFrames(tb testing.TB, n int) [][]byte {
	s := mustSealer(tb, "lb2")
	var out [][]byte
	for i := range n {
		p := bytes.Repeat([]byte{byte(i), 0, 0xFF}, 1+i*37%300) // zeros and 0xFF runs
		b, _ := s.Seal(nil, p[:min(len(p), MaxPayload)])
		out = append(out, b)
	}
	return out
}

func TestSerialFrameRoundTrip(t *testing.T) {
	frames := testFrames(t, 20)
	frames = append(frames, bytes.Repeat([]byte{0xAB}, MaxFrameSize)) // longest, no zeros
	var stream []byte
	for _, f := range frames {
		stream = AppendSerialFrame(stream, f)
	}
	for _, chunk := range []int{1, 2, 3, 7, 254, 255, 4096, len(stream)} {
		d := NewDeframer()
		var parts [][]byte
		for i := 0; i < len(stream); i += chunk {
			parts = append(parts, stream[i:min(i+chunk, len(stream))])
		}
		got := deframeAll(d, parts...)
		if len(got) != len(frames) {
			t.Fatalf("chunk %d: %d results, want %d", chunk, len(got), len(frames))
		}
		for i, g := range got {
			if g.drop != DropNone || !bytes.Equal(g.frame, frames[i]) {
				t.Fatalf("chunk %d, frame %d: %v", chunk, i, g.drop)
			}
		}
		if d.Pending() != 0 {
			t.Fatalf("pending %d", d.Pending())
		}
	}
}

func TestSerialResync(t *testing.T) {
	fr := testFrames(t, 3)
	enc := func(i int) []byte { return AppendSerialFrame(nil, fr[i]) }
	corrupt := func(b []byte, at int) []byte { b = bytes.Clone(b); b[at] ^= 0x10; return b }
	long := bytes.Repeat([]byte{0x55}, 3*MaxSerialChunk)
	tests := []struct {
		name   string
		stream [][]byte
		want   []DropReason // in order; DropNone = a good frame
	}{
		{"garbage before", [][]byte{[]byte("line noise!"), enc(0)}, []DropReason{DropBadFraming, DropNone}},
		{"garbage between", [][]byte{enc(0), []byte("\x03ab"), enc(1)}, []DropReason{DropNone, DropTruncated, DropNone}},
		{"garbage with zeros between", [][]byte{enc(0), []byte("\x00\x05zz\x00\xff\x00"), enc(1)}, []DropReason{DropNone, DropBadFraming, DropBadFraming, DropNone}},
		{"joined mid-frame", [][]byte{enc(0)[40:], enc(1)}, []DropReason{DropBadCRC, DropNone}},
		{"corrupted frame", [][]byte{enc(0), corrupt(enc(1), 60), enc(2)}, []DropReason{DropNone, DropBadCRC, DropNone}},
		{"corrupted code byte", [][]byte{corrupt(enc(0), 1), enc(1)}, []DropReason{dropCorrupt, DropNone}},
		{"dropped byte", [][]byte{append(enc(0)[:50:50], enc(0)[51:]...), enc(1)}, []DropReason{dropCorrupt, DropNone}},
		{"frame cut short", [][]byte{enc(0)[:70], enc(1)}, []DropReason{dropCorrupt, DropNone}},
		{"endless noise", [][]byte{long, enc(2)}, []DropReason{DropOversized, DropNone}},
		{"only delimiters", [][]byte{{0, 0, 0, 0}, enc(0), {0, 0}}, []DropReason{DropNone}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			stream := bytes.Join(tc.stream, nil)
			for _, step := range []int{1, 5, 64, len(stream)} {
				d := NewDeframer()
				var parts [][]byte
				for i := 0; i < len(stream); i += step {
					parts = append(parts, stream[i:min(i+step, len(stream))])
				}
				got := deframeAll(d, parts...)
				var reasons []DropReason
				for _, g := range got {
					reasons = append(reasons, g.drop)
					if g.drop == DropNone {
						if _, r := ParseFrame(g.frame); r != DropNone {
							t.Fatalf("a good chunk is not a frame: %v", r)
						}
					}
				}
				if !equalReasons(reasons, tc.want) {
					t.Fatalf("step %d: got %v, want %v", step, reasons, tc.want)
				}
				if cap(d.buf) != MaxSerialChunk {
					t.Fatalf("buffer grew to %d", cap(d.buf))
				}
			}
		})
	}
}

// dropCorrupt in a wanted list matches bad_crc or bad_framing: which one a
// damaged chunk gives depends on whether the damage hit a COBS code byte.
const dropCorrupt DropReason = 255

func equalReasons(got, want []DropReason) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if got[i] != want[i] && !(want[i] == dropCorrupt && (got[i] == DropBadCRC || got[i] == DropBadFraming)) {
			return false
		}
	}
	return true
}

// refDeframe is an independent, obviously-correct deframer: split at 0x00,
// decode COBS by the book, check the CRC.
func refDeframe(stream []byte) []deframed {
	var out []deframed
	chunks := bytes.Split(stream, []byte{0})
	for _, c := range chunks[:len(chunks)-1] { // the last piece is unfinished
		if len(c) == 0 {
			continue
		}
		if len(c) > MaxSerialChunk {
			out = append(out, deframed{nil, DropOversized, len(c)})
			continue
		}
		var dec []byte
		ok := true
		for i := 0; i < len(c); {
			code := int(c[i])
			if i+code > len(c) {
				ok = false
				break
			}
			dec = append(dec, c[i+1:i+code]...)
			i += code
			if code < 0xFF && i < len(c) {
				dec = append(dec, 0)
			}
		}
		switch {
		case !ok:
			out = append(out, deframed{nil, DropBadFraming, len(c)})
		case len(dec) <= 4:
			out = append(out, deframed{nil, DropTruncated, len(c)})
		case crc32.Checksum(dec[:len(dec)-4], crc32.MakeTable(crc32.Castagnoli)) != binary.BigEndian.Uint32(dec[len(dec)-4:]):
			out = append(out, deframed{nil, DropBadCRC, len(c)})
		default:
			out = append(out, deframed{dec[:len(dec)-4], DropNone, len(c)})
		}
	}
	return out
}

// FuzzSerialDeframe feeds arbitrary byte streams, in random chunkings, to
// the deframer. It must never panic, must agree exactly with refDeframe
// (so it never returns a frame whose CRC fails), must not depend on the
// chunking, and must never hold more than MaxSerialChunk bytes.
func FuzzSerialDeframe(f *testing.F) {
	fr := testFrames(f, 3)
	var good []byte
	for _, b := range fr {
		good = AppendSerialFrame(good, b)
	}
	f.Add(good, uint64(1))
	f.Add(append([]byte("noise\x00\x02"), good...), uint64(2))
	f.Add(good[:len(good)/2], uint64(3))
	f.Add(append(bytes.Repeat([]byte{7}, MaxSerialChunk+3), good...), uint64(4))
	f.Add([]byte{0, 1, 0, 2, 0xFF, 0}, uint64(5))
	f.Fuzz(func(t *testing.T, stream []byte, seed uint64) {
		want := refDeframe(stream)
		rng := rand.New(rand.NewPCG(seed, seed>>32))
		d := NewDeframer()
		var got []deframed
		emit := func(fr []byte, r DropReason, raw int) {
			if r == DropNone {
				if len(fr) == 0 || len(fr) > MaxFrameSize {
					t.Fatalf("frame of %d bytes", len(fr))
				}
				// Recheck the CRC from the stream's point of view: the
				// encoding of frame+CRC must occur in the stream.
				if !bytes.Contains(stream, AppendSerialFrame(nil, fr)[1:]) {
					var crc [4]byte
					binary.BigEndian.PutUint32(crc[:], crc32.Checksum(fr, castagnoli))
					t.Fatalf("returned frame %x (crc %x) does not come from the stream", fr, crc)
				}
			}
			got = append(got, deframed{bytes.Clone(fr), r, raw})
		}
		for rest := stream; len(rest) > 0; {
			n := 1 + rng.IntN(min(len(rest), 3000))
			d.Feed(rest[:n], emit)
			rest = rest[n:]
			if cap(d.buf) > MaxSerialChunk || len(d.buf) > MaxSerialChunk {
				t.Fatalf("buffer %d/%d exceeds %d", len(d.buf), cap(d.buf), MaxSerialChunk)
			}
		}
		if len(got) != len(want) {
			t.Fatalf("%d results, reference has %d", len(got), len(want))
		}
		for i := range got {
			if got[i].drop != want[i].drop || got[i].raw != want[i].raw || !bytes.Equal(got[i].frame, want[i].frame) {
				t.Fatalf("result %d: got %v/%d, reference %v/%d", i, got[i].drop, got[i].raw, want[i].drop, want[i].raw)
			}
		}
	})
}

func BenchmarkSerialFrame(b *testing.B) {
	fr := testFrames(b, 1)[0][:100]
	s := mustSealer(b, "lb2")
	fr, _ = s.Seal(nil, make([]byte, 40))
	buf := make([]byte, 0, MaxSerialFrameLen)
	d := NewDeframer()
	n := 0
	b.ReportAllocs()
	for b.Loop() {
		enc := AppendSerialFrame(buf[:0], fr)
		d.Feed(enc, func([]byte, DropReason, int) { n++ })
	}
	if n != b.N {
		b.Fatalf("%d frames for %d iterations", n, b.N)
	}
}
