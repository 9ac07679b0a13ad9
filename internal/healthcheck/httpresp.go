package healthcheck

import (
	"bytes"
	"errors"
	"io"
	"sync"
)

// respBufSize is the size of the buffer an HTTP check reads a response
// into when it needs no body: the longest status line it accepts, and the
// longest header line whose meaning it takes into account.
const respBufSize = 1024

var respBufPool = sync.Pool{New: func() any { b := make([]byte, respBufSize); return &b }}

// respReader reads a response from src through a fixed buffer, without
// allocating: the parser of an HTTP check that needs only the status, and
// the framing of the body to skip it on a kept-alive connection.
type respReader struct {
	buf  []byte // buf[r:w] is read and not yet consumed
	r, w int
	src  io.Reader
}

var errLineTooLong = errors.New("line longer than the buffer")

// fill reads more into the buffer, moving the unconsumed bytes to its
// start. A read of nothing is io.EOF.
func (b *respReader) fill() error {
	if b.r > 0 {
		b.w = copy(b.buf, b.buf[b.r:b.w])
		b.r = 0
	}
	if b.w == len(b.buf) {
		return errLineTooLong
	}
	n, err := b.src.Read(b.buf[b.w:])
	b.w += n
	if n > 0 {
		return nil
	}
	if err == nil {
		err = io.EOF
	}
	return err
}

// line returns the next line, with its "\n". If the buffer fills up
// without one, it returns the partial line and errLineTooLong (what
// follows of the line is still to be read: see skipLine). At the end of
// the input before a "\n", io.ErrUnexpectedEOF.
func (b *respReader) line() ([]byte, error) {
	for {
		if i := bytes.IndexByte(b.buf[b.r:b.w], '\n'); i >= 0 {
			l := b.buf[b.r : b.r+i+1]
			b.r += i + 1
			return l, nil
		}
		if b.r == 0 && b.w == len(b.buf) {
			b.r = b.w
			return b.buf, errLineTooLong
		}
		if err := b.fill(); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
}

// skipLine discards the rest of a line that line reported too long,
// counting the bytes into *total; it fails once *total exceeds limit.
func (b *respReader) skipLine(total *int, limit int) error {
	for {
		if i := bytes.IndexByte(b.buf[b.r:b.w], '\n'); i >= 0 {
			*total += i + 1
			b.r += i + 1
			return nil
		}
		*total += b.w - b.r
		b.r = b.w
		if *total > limit {
			return errHeadersTooLong
		}
		if err := b.fill(); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
	}
}

// discard skips n bytes of the input.
func (b *respReader) discard(n int64) error {
	for {
		k := int64(b.w - b.r)
		if k >= n {
			b.r += int(n)
			return nil
		}
		n -= k
		b.r = b.w
		if err := b.fill(); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
	}
}

// buffered is how many bytes were read beyond what was consumed.
func (b *respReader) buffered() int { return b.w - b.r }

// respHead is what an HTTP check takes from a response's head.
type respHead struct {
	code int
	// reusable: the connection may carry another request once the body
	// (bodyLen bytes, or chunked) is skipped. False whenever the framing is
	// anything but plain: HTTP/1.0 without "Connection: keep-alive",
	// "Connection: close", a body delimited by the end of the connection,
	// conflicting or malformed framing headers, a header line too long to
	// be read whole, folded lines, a 1xx status.
	reusable bool
	chunked  bool
	bodyLen  int64
}

var errStatusTooLong = errors.New("malformed HTTP status line (too long)")

// badStatusError is a status line that is not HTTP/1.x's.
type badStatusError struct{ line []byte }

func (e *badStatusError) Error() string { return "malformed HTTP status line" }

// readStatus reads the status line: the code, and whether the version is
// HTTP/1.1 (else 1.0). It fails on a malformed or too long line, or a
// response cut off.
func (b *respReader) readStatus() (code int, http11 bool, err error) {
	line, err := b.line()
	if err != nil {
		if errors.Is(err, errLineTooLong) {
			return 0, false, errStatusTooLong
		}
		return 0, false, err
	}
	code, ok := parseStatusLine(line)
	if !ok {
		return 0, false, &badStatusError{line: line}
	}
	return code, line[7] == '1', nil
}

// readHeaders reads the header block up to its final empty line, without
// keeping it: only the framing of the body (Content-Length,
// Transfer-Encoding, Connection) is looked at. It fails on a header block
// cut off or longer than maxHeaderBytes; other oddities of the headers
// only make the connection not reusable.
func (b *respReader) readHeaders(code int, http11 bool) (h respHead, err error) {
	h.code = code
	framingOK := true
	closeConn, keepAlive := false, false
	haveLen := false
	total := 0
	for {
		l, err := b.line()
		total += len(l)
		if errors.Is(err, errLineTooLong) {
			framingOK = false // whatever it said, it is not taken into account
			if err := b.skipLine(&total, maxHeaderBytes); err != nil {
				return h, err
			}
			continue
		}
		if err != nil {
			return h, err
		}
		if total > maxHeaderBytes {
			return h, errHeadersTooLong
		}
		l = trimEOL(l)
		if len(l) == 0 {
			break
		}
		if l[0] == ' ' || l[0] == '\t' {
			framingOK = false // obsolete line folding
			continue
		}
		colon := bytes.IndexByte(l, ':')
		if colon <= 0 || !validFieldName(l[:colon]) {
			framingOK = false
			continue
		}
		name, value := l[:colon], trimOWS(l[colon+1:])
		switch {
		case asciiEqualFold(name, "content-length"):
			n, ok := parseContentLength(value)
			if !ok || haveLen {
				framingOK = false
			}
			h.bodyLen, haveLen = n, true
		case asciiEqualFold(name, "transfer-encoding"):
			if !asciiEqualFold(value, "chunked") || h.chunked {
				framingOK = false
			}
			h.chunked = true
		case asciiEqualFold(name, "connection"):
			for len(value) > 0 {
				tok := value
				if i := bytes.IndexByte(value, ','); i >= 0 {
					tok, value = value[:i], value[i+1:]
				} else {
					value = nil
				}
				tok = trimOWS(tok)
				switch {
				case asciiEqualFold(tok, "close"):
					closeConn = true
				case asciiEqualFold(tok, "keep-alive"):
					keepAlive = true
				}
			}
		}
	}
	switch {
	case code < 200: // a 1xx is followed by the final response
	case !framingOK || closeConn || (!http11 && !keepAlive):
	case h.chunked && haveLen:
	case code == 204 || code == 304: // no body
		h.reusable, h.bodyLen, h.chunked = true, 0, false
	case h.chunked || haveLen:
		h.reusable = true
	}
	return h, nil
}

// skipChunked skips a chunked body and its trailers; it fails if the body
// is longer than limit or malformed. Its lines must end with CRLF (as
// net/http's reader wants: a bare LF is an error there).
func (b *respReader) skipChunked(limit int64) error {
	var size int64
	for {
		l, err := b.crlfLine()
		if err != nil {
			return err
		}
		if i := bytes.IndexByte(l, ';'); i >= 0 {
			l = l[:i] // chunk extensions
		}
		l = trimOWS(l)
		n, ok := parseHex(l)
		if !ok {
			return errBadChunk
		}
		if n == 0 {
			break
		}
		if size += n; size > limit {
			return errBodyTooLong
		}
		if err := b.discard(n); err != nil {
			return err
		}
		if l, err := b.crlfLine(); err != nil {
			return err
		} else if len(l) != 0 {
			return errBadChunk
		}
	}
	total := 0
	for { // trailers
		l, err := b.crlfLine()
		if err != nil {
			return err
		}
		if total += len(l) + 2; total > maxHeaderBytes {
			return errHeadersTooLong
		}
		if len(l) == 0 {
			return nil
		}
	}
}

// crlfLine returns the next line without its CRLF; a line that ends
// with a bare LF is errBadChunk.
func (b *respReader) crlfLine() ([]byte, error) {
	l, err := b.line()
	if err != nil {
		return nil, err
	}
	if len(l) < 2 || l[len(l)-2] != '\r' {
		return nil, errBadChunk
	}
	return l[:len(l)-2], nil
}

var (
	errBadChunk    = errors.New("malformed chunked encoding")
	errBodyTooLong = errors.New("body longer than the limit")
)

func trimEOL(l []byte) []byte {
	if n := len(l); n > 0 && l[n-1] == '\n' {
		l = l[:n-1]
	}
	if n := len(l); n > 0 && l[n-1] == '\r' {
		l = l[:n-1]
	}
	return l
}

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// asciiEqualFold reports whether b equals the lower-case ASCII s, ignoring
// ASCII case.
func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

// validFieldName: a token (RFC 9110 section 5.1).
func validFieldName(b []byte) bool {
	for _, c := range b {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case bytes.IndexByte([]byte("!#$%&'*+-.^_`|~"), c) >= 0:
		default:
			return false
		}
	}
	return len(b) > 0
}

// parseContentLength parses 1*DIGIT, at most 18 digits.
func parseContentLength(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// parseHex parses a chunk size, at most 15 hex digits.
func parseHex(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 15 {
		return 0, false
	}
	var n int64
	for _, c := range b {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		n = n<<4 | int64(c)
	}
	return n, true
}
