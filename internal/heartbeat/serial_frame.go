package heartbeat

// Serial framing: a byte stream to frames and back.
//
// # Layout on the wire
//
//	0x00  COBS( frame || CRC-32C(frame) as 4 bytes big-endian )  0x00
//
// frame is the authenticated frame of frame.go (so a serial line gets the
// same authentication and replay protection as UDP). COBS (Consistent
// Overhead Byte Stuffing, Cheshire & Baker 1999) removes every 0x00 from the
// body at a cost of one byte per 254, so 0x00 only ever appears as a
// delimiter. Each frame is preceded and followed by a delimiter, so
// whatever came before it (line noise, a frame cut short when the sender
// timed out or restarted) ends at the leading 0x00 and costs only itself.
//
// # Receiving
//
// The Deframer splits the stream at 0x00 into chunks. Empty chunks (two
// delimiters in a row) are idle fill and ignored. Any other chunk is COBS
// decoded and its CRC checked; a chunk that fails is dropped and its bytes
// counted as garbage. A chunk that grows past the largest valid encoding
// is dropped at once and the rest of it, up to the next 0x00, is skipped
// without being buffered: memory stays bounded whatever the input.
//
// The CRC catches line noise (CRC-32C detects all burst errors up to 32
// bits and all 1-3 bit errors at these lengths); the MAC inside catches
// everything else, so the CRC is about cheap, precise counting (bad_crc vs
// bad_mac), not security.

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
)

const (
	serialDelim = 0x00
	crcLen      = 4
	// MaxSerialChunk is the longest COBS chunk (between delimiters) a
	// valid frame produces.
	MaxSerialChunk = MaxFrameSize + crcLen + (MaxFrameSize+crcLen)/254 + 1
	// MaxSerialFrameLen is the most bytes one frame takes on the line,
	// delimiters included.
	MaxSerialFrameLen = MaxSerialChunk + 2
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// AppendSerialFrame appends 0x00, the COBS encoding of frame followed by its
// CRC-32C, and 0x00 to dst.
func AppendSerialFrame(dst, frame []byte) []byte {
	var crc [crcLen]byte
	binary.BigEndian.PutUint32(crc[:], crc32.Checksum(frame, castagnoli))
	dst = append(dst, serialDelim)
	dst = cobsEncode(dst, frame, crc[:])
	return append(dst, serialDelim)
}

// cobsEncode appends the COBS encoding of a||b (no delimiter) to dst. It is
// the canonical encoding of the paper: a block of 254 non-zero bytes (code
// 0xFF) at the very end is not followed by an empty block.
func cobsEncode(dst []byte, a, b []byte) []byte {
	code := len(dst)
	dst = append(dst, 0)
	n := byte(1)
	for _, part := range [2][]byte{a, b} {
		for _, c := range part {
			if n == 0xFF { // block full: start the next one
				dst[code] = n
				code, n = len(dst), 1
				dst = append(dst, 0)
			}
			if c == 0 {
				dst[code] = n
				code, n = len(dst), 1
				dst = append(dst, 0)
				continue
			}
			dst = append(dst, c)
			n++
		}
	}
	dst[code] = n
	return dst
}

// cobsDecodeInPlace decodes a COBS chunk (no 0x00 inside) into its own
// storage and returns the decoded prefix, or false if the encoding is
// invalid (a code byte points past the end).
func cobsDecodeInPlace(b []byte) ([]byte, bool) {
	w := 0
	for r := 0; r < len(b); {
		code := int(b[r])
		if code == 0 {
			return nil, false // cannot happen for chunks split at 0x00
		}
		r++
		n := code - 1
		if r+n > len(b) {
			return nil, false
		}
		w += copy(b[w:], b[r:r+n])
		r += n
		if code != 0xFF && r < len(b) {
			b[w] = 0
			w++
		}
	}
	return b[:w], true
}

// Deframer turns a byte stream into CRC-checked frames. Not safe for
// concurrent use; memory use is bounded by MaxSerialChunk.
type Deframer struct {
	buf      []byte
	overflow bool // the current chunk is too long: skip to the next 0x00
	skipped  int  // bytes skipped in the current overflowing chunk
}

// NewDeframer returns a deframer whose buffer is allocated once.
func NewDeframer() *Deframer {
	return &Deframer{buf: make([]byte, 0, MaxSerialChunk)}
}

// Feed consumes p, which may hold any part of the stream (partial frames,
// several frames, noise). For each chunk that ends in p it calls fn once:
// with a CRC-checked frame and DropNone, or with nil and the reason the
// chunk was dropped. raw is the number of line bytes the chunk took (not
// counting delimiters). frame aliases the deframer's buffer and is valid
// only during the call.
func (d *Deframer) Feed(p []byte, fn func(frame []byte, drop DropReason, raw int)) {
	for len(p) > 0 {
		i := bytes.IndexByte(p, serialDelim)
		part := p
		if i >= 0 {
			part, p = p[:i], p[i+1:]
		} else {
			p = nil
		}
		switch {
		case d.overflow:
			d.skipped += len(part)
		case len(d.buf)+len(part) > MaxSerialChunk:
			d.overflow = true
			d.skipped = len(d.buf) + len(part)
			d.buf = d.buf[:0]
		default:
			d.buf = append(d.buf, part...)
		}
		if i >= 0 {
			d.endChunk(fn)
		}
	}
}

// Pending is how many bytes of an unfinished chunk are held.
func (d *Deframer) Pending() int { return len(d.buf) + d.skipped }

// Reset forgets an unfinished chunk (after the device was reopened).
func (d *Deframer) Reset() {
	d.buf, d.overflow, d.skipped = d.buf[:0], false, 0
}

func (d *Deframer) endChunk(fn func([]byte, DropReason, int)) {
	defer d.Reset()
	if d.overflow {
		fn(nil, DropOversized, d.skipped)
		return
	}
	raw := len(d.buf)
	if raw == 0 {
		return // idle: two delimiters in a row
	}
	dec, ok := cobsDecodeInPlace(d.buf)
	if !ok {
		fn(nil, DropBadFraming, raw)
		return
	}
	if len(dec) <= crcLen {
		fn(nil, DropTruncated, raw)
		return
	}
	body := dec[:len(dec)-crcLen]
	if crc32.Checksum(body, castagnoli) != binary.BigEndian.Uint32(dec[len(body):]) {
		fn(nil, DropBadCRC, raw)
		return
	}
	fn(body, DropNone, raw)
}
