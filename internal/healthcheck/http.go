package healthcheck

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// DefaultMaxBody is how much of a response body an HTTP check reads when
// HTTPSpec.MaxBody is 0.
const DefaultMaxBody = 64 << 10

// StatusRange is an inclusive range of HTTP status codes; {200, 200} is one
// code.
type StatusRange struct{ Lo, Hi int }

func (r StatusRange) String() string {
	if r.Lo == r.Hi {
		return strconv.Itoa(r.Lo)
	}
	return strconv.Itoa(r.Lo) + "-" + strconv.Itoa(r.Hi)
}

// HTTPSpec checks a server with one HTTP GET (HTTPS if TLS).
//
// The whole exchange — connect, TLS handshake, request, status line,
// headers and the body bytes the check needs — is bounded by the probe's
// timeout, enforced as a deadline on the socket, so a server that trickles
// bytes fails at the timeout like one that never answers.
type HTTPSpec struct {
	Addr netip.AddrPort
	TLS  bool
	// Path of the request, starting with "/" (default "/"); it may carry a
	// query.
	Path string
	// Host is the Host header. Default: the address, without the port if
	// it is the scheme's default.
	Host string
	// ExpectStatus lists the healthy status codes (default 200-299).
	ExpectStatus []StatusRange
	// BodyRegex (RE2), if set, must match the first MaxBody bytes of the
	// body.
	BodyRegex string
	// BodySHA256, if set, is the hex SHA-256 digest the whole body must
	// have. A body longer than MaxBody fails: it cannot be verified.
	BodySHA256 string
	// MaxBody is the most body bytes read (default DefaultMaxBody). The
	// body is read only for BodyRegex or BodySHA256.
	MaxBody int
	// ServerName is sent as TLS SNI and verified against the certificate.
	// Default: Host's name if Host is set and not an IP address; otherwise
	// no SNI is sent (certificates are then verified against the address).
	ServerName string
	// VerifyTLS verifies the server's certificate chain and name. Off by
	// default, like keepalived's SSL_GET: see the package documentation.
	VerifyTLS bool
	// CAFile is a PEM file of the CAs to trust when VerifyTLS is set
	// (default: the system's roots).
	CAFile string
	// KeepAlive reuses one connection from probe to probe (HTTP/1.1
	// persistent connection) instead of opening one per probe, which costs
	// a fraction of the CPU at scale. A probe on a kept connection that the
	// server has closed (its idle timeout, a restart) retries once on a new
	// connection, so that is no failure. The trade-off: a server whose
	// listener is wedged while its established connections still work
	// looks healthy until the kept connection breaks.
	KeepAlive bool
}

// Key implements CheckSpec.
func (s HTTPSpec) Key() string {
	var b strings.Builder
	if s.TLS {
		b.WriteString("https|")
	} else {
		b.WriteString("http|")
	}
	b.WriteString(s.Addr.String())
	b.WriteString("|path=" + strconv.Quote(s.path()))
	b.WriteString("|host=" + strconv.Quote(s.host()))
	b.WriteString("|status=")
	for i, r := range normalizeStatus(s.ExpectStatus) {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(r.String())
	}
	b.WriteString("|re=" + strconv.Quote(s.BodyRegex))
	b.WriteString("|sha256=" + strings.ToLower(s.BodySHA256))
	b.WriteString("|max=" + strconv.Itoa(s.maxBody()))
	if s.TLS {
		b.WriteString("|sni=" + strconv.Quote(s.serverName()))
		fmt.Fprintf(&b, "|verify=%t|ca=%q", s.VerifyTLS, s.CAFile)
	}
	if s.KeepAlive {
		b.WriteString("|keepalive")
	}
	return b.String()
}

func (s HTTPSpec) path() string {
	if s.Path == "" {
		return "/"
	}
	return s.Path
}

func (s HTTPSpec) maxBody() int {
	if s.MaxBody <= 0 {
		return DefaultMaxBody
	}
	return s.MaxBody
}

func (s HTTPSpec) host() string {
	if s.Host != "" {
		return s.Host
	}
	if (!s.TLS && s.Addr.Port() == 80) || (s.TLS && s.Addr.Port() == 443) {
		if s.Addr.Addr().Is6() {
			return "[" + s.Addr.Addr().String() + "]"
		}
		return s.Addr.Addr().String()
	}
	return s.Addr.String()
}

// serverName is the SNI to send: "" for none.
func (s HTTPSpec) serverName() string {
	if s.ServerName != "" {
		return s.ServerName
	}
	if s.Host == "" {
		return ""
	}
	h := s.Host
	if hh, _, err := net.SplitHostPort(h); err == nil {
		h = hh
	}
	h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
	if _, err := netip.ParseAddr(h); err == nil {
		return ""
	}
	return h
}

// normalizeStatus sorts and merges the ranges; nil means 200-299.
func normalizeStatus(rs []StatusRange) []StatusRange {
	if len(rs) == 0 {
		return []StatusRange{{200, 299}}
	}
	out := slices.Clone(rs)
	slices.SortFunc(out, func(a, b StatusRange) int { return a.Lo - b.Lo })
	merged := out[:1]
	for _, r := range out[1:] {
		last := &merged[len(merged)-1]
		if r.Lo <= last.Hi+1 {
			last.Hi = max(last.Hi, r.Hi)
			continue
		}
		merged = append(merged, r)
	}
	return merged
}

func validHeaderValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < ' ' || c == 0x7f || c == ' ' {
			return false
		}
	}
	return true
}

// NewChecker implements CheckSpec.
func (s HTTPSpec) NewChecker(*Env) (Checker, error) {
	kind := "http"
	if s.TLS {
		kind = "https"
	}
	bad := func(format string, args ...any) (Checker, error) {
		return nil, fmt.Errorf("healthcheck: %s check of %s: %s", kind, s.Addr, fmt.Sprintf(format, args...))
	}
	if !s.Addr.IsValid() || s.Addr.Port() == 0 {
		return bad("need an IP address and a port")
	}
	path := s.path()
	if !strings.HasPrefix(path, "/") || !validHeaderValue(path) {
		return bad("path %q: must start with / and contain no spaces or control characters", path)
	}
	host := s.host()
	if !validHeaderValue(host) {
		return bad("host %q: contains spaces or control characters", host)
	}
	for _, r := range s.ExpectStatus {
		if r.Lo < 100 || r.Hi > 999 || r.Lo > r.Hi {
			return bad("expected status %d-%d: not a range of codes 100-999", r.Lo, r.Hi)
		}
	}
	c := &httpChecker{
		addr:     s.Addr.String(),
		status:   normalizeStatus(s.ExpectStatus),
		maxBody:  s.maxBody(),
		needBody: s.BodyRegex != "" || s.BodySHA256 != "",
	}
	c.statusText = StatusRangesString(c.status)
	if s.BodyRegex != "" {
		re, err := regexp.Compile(s.BodyRegex)
		if err != nil {
			return bad("body regex: %v", err)
		}
		c.re = re
	}
	if s.BodySHA256 != "" {
		d, err := hex.DecodeString(s.BodySHA256)
		if err != nil || len(d) != sha256.Size {
			return bad("body SHA-256 %q: not 64 hex digits", s.BodySHA256)
		}
		c.digest = d
	}
	if s.TLS {
		cfg := &tls.Config{
			ServerName:         s.serverName(),
			InsecureSkipVerify: !s.VerifyTLS,
			// No ClientSessionCache: every probe does a full handshake,
			// as a new client would.
		}
		if s.VerifyTLS && cfg.ServerName == "" {
			// Verify against the address (IP SANs); Go sends no SNI
			// for an IP.
			cfg.ServerName = s.Addr.Addr().String()
		}
		if s.CAFile != "" {
			pem, err := os.ReadFile(s.CAFile)
			if err != nil {
				return bad("CA file: %v", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return bad("CA file %s: no PEM certificates in it", s.CAFile)
			}
			cfg.RootCAs = pool
		}
		c.tls = cfg
	} else if s.ServerName != "" || s.VerifyTLS || s.CAFile != "" {
		return bad("ServerName, VerifyTLS and CAFile need TLS")
	}
	connection := "close"
	if s.KeepAlive {
		c.keepAlive, connection = true, "keep-alive"
	}
	c.req = []byte("GET " + path + " HTTP/1.1\r\n" +
		"Host: " + host + "\r\n" +
		"User-Agent: hadirector-healthcheck\r\n" +
		"Accept: */*\r\n" +
		"Connection: " + connection + "\r\n\r\n")
	return c, nil
}

// StatusRangesString formats ranges as "200-299,301".
func StatusRangesString(rs []StatusRange) string {
	var b strings.Builder
	for i, r := range rs {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(r.String())
	}
	return b.String()
}

type httpChecker struct {
	addr       string
	tls        *tls.Config // nil for plain HTTP
	req        []byte
	status     []StatusRange
	statusText string
	re         *regexp.Regexp
	digest     []byte
	maxBody    int
	needBody   bool
	keepAlive  bool

	mu     sync.Mutex
	idle   *httpConn // the kept-alive connection between probes
	busy   *httpConn // the connection of the exchange in flight
	closed bool
}

// httpConn is a check's connection.
type httpConn struct {
	conn net.Conn // *net.TCPConn, or *tls.Conn
	// rc is the raw connection of a plain TCP connection (nil with TLS):
	// the request is written and the answer awaited in one call of its
	// Read, through step (made once per connection, not per probe).
	rc   syscall.RawConn
	step func(fd uintptr) bool

	// step's arguments and results
	req, buf   []byte
	sent, n    int
	wrote      bool
	werr, rerr error
}

func newHTTPConn(conn net.Conn) *httpConn {
	hc := &httpConn{conn: conn}
	if tc, ok := conn.(*net.TCPConn); ok {
		if rc, err := tc.SyscallConn(); err == nil {
			hc.rc = rc
			hc.step = hc.rawStep
		}
	}
	return hc
}

// interrupt unblocks the exchange in flight on the connection.
func (hc *httpConn) interrupt() { _ = hc.conn.SetDeadline(aLongTimeAgo) }

// send writes req and reads the first bytes of the answer into buf. The
// read deadline must be set (and the write deadline too, with TLS).
//
// On a plain connection the write and the wait are one RawConn.Read: the
// write happens after the poller's read readiness is reset, so the
// goroutine parks at once and reads only once the answer is there — not
// a read that fails with EAGAIN first, as net.Conn.Read would do right
// after the write.
func (hc *httpConn) send(req, buf []byte, deadline time.Time) (n int, werr, rerr error) {
	if hc.rc == nil {
		if _, werr = hc.conn.Write(req); werr != nil {
			return 0, werr, nil
		}
		n, rerr = hc.conn.Read(buf)
		return n, nil, rerr
	}
	hc.req, hc.buf, hc.sent, hc.n, hc.wrote, hc.werr, hc.rerr = req, buf, 0, 0, false, nil, nil
	err := hc.rc.Read(hc.step)
	n, werr, rerr = hc.n, hc.werr, hc.rerr
	sent, wrote := hc.sent, hc.wrote
	hc.req, hc.buf, hc.werr, hc.rerr = nil, nil, nil, nil
	switch {
	case err != nil && !wrote:
		return 0, err, nil
	case err != nil:
		return 0, nil, err
	case werr != nil || rerr != nil:
		return n, werr, rerr
	case sent < len(req):
		// The socket's send buffer was full (it never is, with one
		// request at a time; but a write must not be lost): write the
		// rest blocking, then read as usual.
		_ = hc.conn.SetWriteDeadline(deadline)
		if _, werr = hc.conn.Write(req[sent:]); werr != nil {
			return 0, werr, nil
		}
		n, rerr = hc.conn.Read(buf)
		return n, nil, rerr
	}
	return n, nil, nil
}

// rawStep is the RawConn.Read callback of send: its first call writes the
// request and asks to wait for readability, the next ones read.
func (hc *httpConn) rawStep(fd uintptr) bool {
	if !hc.wrote {
		hc.wrote = true
		for hc.sent < len(hc.req) {
			m, err := syscall.Write(int(fd), hc.req[hc.sent:])
			switch err {
			case nil:
				hc.sent += m
				continue
			case syscall.EINTR:
				continue
			case syscall.EAGAIN:
			default:
				hc.werr = os.NewSyscallError("write", err)
			}
			return true // done, or the rest is written the ordinary way
		}
		return false // wait for the answer
	}
	for {
		m, err := syscall.Read(int(fd), hc.buf)
		switch err {
		case nil:
			hc.n = m
			if m == 0 {
				hc.rerr = io.EOF
			}
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false // a spurious wake-up
		}
		hc.rerr = os.NewSyscallError("read", err)
		return true
	}
}

// Close closes the kept-alive connection and interrupts an exchange in
// flight; the manager calls it when the probe stops.
func (c *httpChecker) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	if c.idle != nil {
		abort(c.idle.conn)
		c.idle = nil
	}
	if c.busy != nil {
		c.busy.interrupt()
	}
	return nil
}

func (c *httpChecker) takeIdle() *httpConn {
	c.mu.Lock()
	defer c.mu.Unlock()
	hc := c.idle
	c.idle = nil
	return hc
}

// begin registers hc as the connection in flight, for Close to interrupt;
// it reports false if the checker is closed.
func (c *httpChecker) begin(hc *httpConn) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false
	}
	c.busy = hc
	return true
}

// end unregisters hc and, if keep, parks it for the next probe; it
// reports whether it did (false: the caller closes hc).
func (c *httpChecker) end(hc *httpConn, keep bool) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.busy == hc {
		c.busy = nil
	}
	if !keep || c.closed || c.idle != nil {
		return false
	}
	// Its read deadline stays: harmless on an idle connection, and the
	// next probe sets its own.
	c.idle = hc
	return true
}

var httpDialer = net.Dialer{FallbackDelay: -1, KeepAlive: -1}

// aLongTimeAgo is a deadline in the past: setting it unblocks every pending
// read and write on a connection at once.
var aLongTimeAgo = time.Unix(1, 0)

var readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 1024) }}

var bodyPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

func (c *httpChecker) Check(ctx context.Context) Result {
	start := time.Now()
	if c.keepAlive {
		if hc := c.takeIdle(); hc != nil {
			res, stale := c.exchange(ctx, hc, start, true)
			if !stale {
				return res
			}
			// The server closed the kept connection meanwhile (its idle
			// timeout): not a verdict; ask again on a new one.
		}
	}
	conn, err := httpDialer.DialContext(ctx, "tcp", c.addr)
	if err != nil {
		return failed(start, "connect: "+dialError(ctx, err, start))
	}
	if c.tls != nil {
		tc := tls.Client(conn, c.tls)
		if dl, ok := ctx.Deadline(); ok {
			_ = conn.SetDeadline(dl)
		}
		stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(aLongTimeAgo) })
		err := tc.Handshake()
		stop()
		if err != nil {
			abort(conn)
			return failed(start, "tls handshake: "+ioError(ctx, err, start))
		}
		conn = tc
	}
	res, _ := c.exchange(ctx, newHTTPConn(conn), start, false)
	return res
}

// exchange sends the request on hc and reads the verdict. The connection
// is closed afterwards, with RST like the TCP check (the probe never keeps
// a TIME_WAIT socket, whichever side closes first), unless it is kept
// alive for the next probe. stale reports that a reused connection failed
// before any byte of a response arrived: the server had closed it.
//
// The probe's deadline is set on the socket. Cancellation before it
// (target removed, shutdown) interrupts the exchange too: through Close,
// which the Manager calls when it stops a probe, or through
// context.AfterFunc for a context that is not a Manager's round.
func (c *httpChecker) exchange(ctx context.Context, hc *httpConn, start time.Time, reused bool) (res Result, stale bool) {
	dl, _ := ctx.Deadline()
	if hc.rc != nil && !c.needBody {
		_ = hc.conn.SetReadDeadline(dl) // send writes without blocking
	} else {
		_ = hc.conn.SetDeadline(dl)
	}
	keep := false
	if !c.begin(hc) {
		abort(hc.conn)
		return failed(start, "canceled"), false
	}
	defer func() {
		if !c.end(hc, keep) {
			abort(hc.conn)
		}
	}()
	if _, ok := ctx.(*roundCtx); !ok {
		stop := context.AfterFunc(ctx, hc.interrupt)
		defer stop()
	}
	if c.needBody {
		return c.exchangeBody(ctx, hc.conn, start, reused, &keep)
	}

	bp := respBufPool.Get().(*[]byte)
	defer respBufPool.Put(bp)
	b := respReader{buf: *bp, src: hc.conn}
	n, werr, rerr := hc.send(c.req, b.buf, dl)
	if werr != nil {
		return failed(start, "sending the request: "+ioError(ctx, werr, start)), c.isStale(ctx, reused, werr)
	}
	if errors.Is(rerr, io.EOF) {
		rerr = io.ErrUnexpectedEOF
	}
	if rerr != nil {
		return failed(start, "reading the response: "+ioError(ctx, rerr, start)), c.isStale(ctx, reused, rerr)
	}
	b.w = n
	code, http11, err := b.readStatus()
	if err != nil {
		return failedNow(start, "reading the response: "+c.headError(ctx, err, start))
	}
	if !c.statusOK(code) {
		return failedNow(start, "status "+strconv.Itoa(code)+", expected "+c.statusText)
	}
	h, err := b.readHeaders(code, http11)
	if err != nil {
		return failedNow(start, "reading the response headers: "+c.headError(ctx, err, start))
	}
	res = Result{OK: true, Detail: "status " + strconv.Itoa(code)}
	if c.keepAlive && h.reusable {
		// Skip the body (bounded): the connection can carry the next
		// request only from the end of this response. A body that does
		// not come changes nothing to the verdict, only to the reuse.
		switch {
		case h.chunked:
			keep = b.skipChunked(int64(c.maxBody)) == nil
		case h.bodyLen <= int64(c.maxBody):
			keep = b.discard(h.bodyLen) == nil
		}
		keep = keep && b.buffered() == 0 // bytes beyond the response: do not trust the connection
	}
	res.Duration = time.Since(start)
	return res, false
}

// headError is the detail of a failure of readStatus or readHeaders.
func (c *httpChecker) headError(ctx context.Context, err error, start time.Time) string {
	var bad *badStatusError
	switch {
	case errors.As(err, &bad):
		return "malformed HTTP status line " + strconv.QuoteToASCII(string(bytes.TrimSpace(bad.line[:min(len(bad.line), 64)])))
	case errors.Is(err, errStatusTooLong):
		return err.Error()
	}
	return ioError(ctx, err, start)
}

// isStale: err, before any byte of the answer, says that the server had
// closed the reused connection.
func (c *httpChecker) isStale(ctx context.Context, reused bool, err error) bool {
	return reused && ctx.Err() == nil && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE))
}

// exchangeBody is exchange when the check needs the body: net/http parses
// the whole response (chunked encoding, Content-Length).
func (c *httpChecker) exchangeBody(ctx context.Context, rw net.Conn, start time.Time, reused bool, keep *bool) (res Result, stale bool) {
	if _, err := rw.Write(c.req); err != nil {
		return failed(start, "sending the request: "+ioError(ctx, err, start)), c.isStale(ctx, reused, err)
	}
	br := readerPool.Get().(*bufio.Reader)
	br.Reset(rw)
	defer func() { br.Reset(nil); readerPool.Put(br) }()
	if _, err := br.Peek(1); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return failed(start, "reading the response: "+ioError(ctx, err, start)), c.isStale(ctx, reused, err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return failedNow(start, "reading the response: "+ioError(ctx, err, start))
	}
	code := resp.StatusCode
	if !c.statusOK(code) {
		return failedNow(start, "status "+strconv.Itoa(code)+", expected "+c.statusText)
	}
	if detail, ok := c.checkBody(ctx, resp.Body, start); !ok {
		return failedNow(start, detail)
	}
	if c.keepAlive {
		// Drain what is left of the body (bounded): the connection is
		// reusable only at the end of this response.
		n, err := io.Copy(io.Discard, io.LimitReader(resp.Body, int64(c.maxBody)+1))
		*keep = err == nil && n <= int64(c.maxBody) && !resp.Close && br.Buffered() == 0
	}
	return Result{OK: true, Detail: "status " + strconv.Itoa(code), Duration: time.Since(start)}, false
}

// failedNow is a failed result that is a verdict (not a stale connection).
func failedNow(start time.Time, detail string) (Result, bool) { return failed(start, detail), false }

// maxHeaderBytes bounds the header block a check reads (net/http's
// default limit).
const maxHeaderBytes = 1 << 20

var errHeadersTooLong = errors.New("header block longer than 1 MiB")

// parseStatusLine parses "HTTP/1.x NNN[ reason]\r\n" and returns the code.
func parseStatusLine(line []byte) (int, bool) {
	line = trimEOL(line) // one "\n", then one "\r": "200\r\r\n" is no status line
	if len(line) < len("HTTP/1.1 200") || string(line[:7]) != "HTTP/1." ||
		line[7] < '0' || line[7] > '9' || line[8] != ' ' {
		return 0, false
	}
	code := 0
	for _, c := range line[9:12] {
		if c < '0' || c > '9' {
			return 0, false
		}
		code = code*10 + int(c-'0')
	}
	if code < 100 || (len(line) > 12 && line[12] != ' ') {
		return 0, false
	}
	return code, true
}

func (c *httpChecker) statusOK(code int) bool {
	for _, r := range c.status {
		if code >= r.Lo && code <= r.Hi {
			return true
		}
	}
	return false
}

// checkBody reads up to maxBody bytes (one more to detect a longer body)
// and applies the regex and the digest.
func (c *httpChecker) checkBody(ctx context.Context, body io.Reader, start time.Time) (string, bool) {
	bp := bodyPool.Get().(*[]byte)
	defer bodyPool.Put(bp)
	buf := (*bp)[:0]
	limit := c.maxBody + 1
	for len(buf) < limit {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, min(cap(buf), limit-len(buf)))
		}
		n, err := body.Read(buf[len(buf):min(cap(buf), limit)])
		buf = buf[:len(buf)+n]
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			*bp = buf[:0]
			return "reading the body: " + ioError(ctx, err, start), false
		}
	}
	*bp = buf[:0]
	truncated := len(buf) > c.maxBody
	if truncated {
		buf = buf[:c.maxBody]
	}
	if c.digest != nil {
		if truncated {
			return fmt.Sprintf("body longer than %d bytes: cannot check its SHA-256", c.maxBody), false
		}
		sum := sha256.Sum256(buf)
		if subtle.ConstantTimeCompare(sum[:], c.digest) != 1 {
			return "body SHA-256 " + hex.EncodeToString(sum[:]) + " does not match", false
		}
	}
	if c.re != nil && !c.re.Match(buf) {
		where := "body"
		if truncated {
			where = fmt.Sprintf("first %d bytes of the body", c.maxBody)
		}
		return where + " does not match " + strconv.Quote(c.re.String()) + bodyExcerpt(buf), false
	}
	return "", true
}

func bodyExcerpt(b []byte) string {
	const n = 64
	if len(b) > n {
		b = b[:n]
	}
	b = bytes.TrimSpace(b)
	return " (body starts " + strconv.QuoteToASCII(string(b)) + ")"
}
