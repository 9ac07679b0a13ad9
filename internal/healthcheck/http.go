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
	idle   net.Conn // the kept-alive connection between probes
	closed bool
}

// Close closes the kept-alive connection; the manager calls it when the
// probe stops.
func (c *httpChecker) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	if c.idle != nil {
		abort(c.idle)
		c.idle = nil
	}
	return nil
}

func (c *httpChecker) takeIdle() net.Conn {
	c.mu.Lock()
	defer c.mu.Unlock()
	conn := c.idle
	c.idle = nil
	return conn
}

// keep parks conn for the next probe; it reports false (and the caller
// closes conn) when the checker is closed or already has one.
func (c *httpChecker) keep(conn net.Conn) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.idle != nil {
		return false
	}
	_ = conn.SetDeadline(time.Time{})
	c.idle = conn
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
		if conn := c.takeIdle(); conn != nil {
			res, stale := c.exchange(ctx, conn, start, true)
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
	rw := conn
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
		rw = tc
	}
	res, _ := c.exchange(ctx, rw, start, false)
	return res
}

// exchange sends the request on conn and reads the verdict. The connection
// is closed afterwards, with RST like the TCP check (the probe never keeps
// a TIME_WAIT socket, whichever side closes first), unless it is kept
// alive for the next probe. stale reports that a reused connection failed
// before any byte of a response arrived: the server had closed it.
func (c *httpChecker) exchange(ctx context.Context, rw net.Conn, start time.Time, reused bool) (res Result, stale bool) {
	kept := false
	defer func() {
		if !kept {
			abort(rw)
		}
	}()
	if dl, ok := ctx.Deadline(); ok {
		_ = rw.SetDeadline(dl)
	}
	// Cancellation before the deadline (target removed, shutdown) unblocks
	// the exchange too.
	stop := context.AfterFunc(ctx, func() { _ = rw.SetDeadline(aLongTimeAgo) })
	defer stop()
	isStale := func(err error) bool {
		return reused && ctx.Err() == nil && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
			errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE))
	}

	if _, err := rw.Write(c.req); err != nil {
		return failed(start, "sending the request: "+ioError(ctx, err, start)), isStale(err)
	}
	br := readerPool.Get().(*bufio.Reader)
	br.Reset(rw)
	defer func() { br.Reset(nil); readerPool.Put(br) }()
	if c.keepAlive {
		if _, err := br.Peek(1); err != nil {
			return failed(start, "reading the response: "+ioError(ctx, err, start)), isStale(err)
		}
		res, kept = c.readKeepAlive(ctx, br, start)
		if kept && (br.Buffered() > 0 || !c.keep(rw)) {
			kept = false // bytes beyond the response, or nowhere to park it
		}
		return res, false
	}
	var code int
	if c.needBody {
		// The body is needed: parse the whole response (chunked
		// encoding, Content-Length).
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return failedNow(start, "reading the response: "+ioError(ctx, err, start))
		}
		code = resp.StatusCode
		if !c.statusOK(code) {
			return failedNow(start, "status "+strconv.Itoa(code)+", expected "+c.statusText)
		}
		if detail, ok := c.checkBody(ctx, resp.Body, start); !ok {
			return failedNow(start, detail)
		}
	} else {
		// Only the status matters: parse the status line, then skip
		// the headers without building a header map; no body.
		line, err := br.ReadSlice('\n')
		if err != nil {
			if errors.Is(err, bufio.ErrBufferFull) {
				return failedNow(start, "reading the response: malformed HTTP status line (too long)")
			}
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return failedNow(start, "reading the response: "+ioError(ctx, err, start))
		}
		var ok bool
		if code, ok = parseStatusLine(line); !ok {
			return failedNow(start, "reading the response: malformed HTTP status line "+strconv.QuoteToASCII(string(bytes.TrimSpace(line[:min(len(line), 64)]))))
		}
		if !c.statusOK(code) {
			return failedNow(start, "status "+strconv.Itoa(code)+", expected "+c.statusText)
		}
		if err := skipHeaders(br); err != nil {
			return failedNow(start, "reading the response headers: "+ioError(ctx, err, start))
		}
	}
	return Result{OK: true, Detail: "status " + strconv.Itoa(code), Duration: time.Since(start)}, false
}

// failedNow is a failed result that is a verdict (not a stale connection).
func failedNow(start time.Time, detail string) (Result, bool) { return failed(start, detail), false }

// readKeepAlive reads a whole response (the body too, so the connection can
// carry the next request) and says whether the connection may be kept.
func (c *httpChecker) readKeepAlive(ctx context.Context, br *bufio.Reader, start time.Time) (Result, bool) {
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return failed(start, "reading the response: "+ioError(ctx, err, start)), false
	}
	code := resp.StatusCode
	if !c.statusOK(code) {
		return failed(start, "status "+strconv.Itoa(code)+", expected "+c.statusText), false
	}
	if c.needBody {
		if detail, ok := c.checkBody(ctx, resp.Body, start); !ok {
			return failed(start, detail), false
		}
	}
	// Drain what is left of the body (bounded): the connection is reusable
	// only at the end of this response.
	n, err := io.Copy(io.Discard, io.LimitReader(resp.Body, int64(c.maxBody)+1))
	reusable := err == nil && n <= int64(c.maxBody) && !resp.Close
	return Result{OK: true, Detail: "status " + strconv.Itoa(code), Duration: time.Since(start)}, reusable
}

// maxHeaderBytes bounds the header block a check reads (net/http's
// default limit).
const maxHeaderBytes = 1 << 20

var errHeadersTooLong = errors.New("header block longer than 1 MiB")

// skipHeaders reads the header block up to its final empty line without
// parsing it: a response cut off in its headers fails the check.
func skipHeaders(br *bufio.Reader) error {
	total := 0
	atLineStart := true
	for {
		line, err := br.ReadSlice('\n')
		total += len(line)
		if total > maxHeaderBytes {
			return errHeadersTooLong
		}
		switch {
		case err == nil:
			if atLineStart && (len(line) == 1 || (len(line) == 2 && line[0] == '\r')) {
				return nil
			}
			atLineStart = true
		case errors.Is(err, bufio.ErrBufferFull):
			atLineStart = false // a long line: go on reading it
		case errors.Is(err, io.EOF):
			return io.ErrUnexpectedEOF
		default:
			return err
		}
	}
}

// parseStatusLine parses "HTTP/1.x NNN[ reason]\r\n" and returns the code.
func parseStatusLine(line []byte) (int, bool) {
	line = bytes.TrimRight(line, "\r\n")
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
