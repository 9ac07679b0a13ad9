package healthcheck

import (
	"bufio"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/pem"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const okBody = "hello world status=green"

func testMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, okBody) })
	mux.HandleFunc("/fail", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "down", http.StatusServiceUnavailable) })
	mux.HandleFunc("/redirect", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/ok", http.StatusFound) })
	mux.HandleFunc("/host", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "host="+r.Host) })
	mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, strings.Repeat("a", 100<<10)+"MARKER")
	})
	mux.HandleFunc("/chunked", func(w http.ResponseWriter, r *http.Request) {
		for i := 0; i < 3; i++ {
			io.WriteString(w, "part ")
			w.(http.Flusher).Flush()
		}
		io.WriteString(w, "MARKER")
	})
	return mux
}

func addrPort(t *testing.T, hostport string) netip.AddrPort {
	t.Helper()
	ap, err := netip.ParseAddrPort(hostport)
	if err != nil {
		t.Fatal(err)
	}
	return ap
}

// freePort returns a loopback address on which nothing listens.
func freePort(t *testing.T) netip.AddrPort {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ap := addrPort(t, l.Addr().String())
	l.Close()
	return ap
}

func sha(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

func TestHTTPCheck(t *testing.T) {
	noLeak(t)
	srv := httptest.NewServer(testMux())
	t.Cleanup(srv.Close)
	addr := addrPort(t, srv.Listener.Addr().String())
	refused := freePort(t)

	tests := []struct {
		name   string
		spec   HTTPSpec
		ok     bool
		detail string
	}{
		{"healthy", HTTPSpec{Path: "/ok"}, true, "status 200"},
		{"default path 404", HTTPSpec{}, false, "status 404, expected 200-299"},
		{"wrong status", HTTPSpec{Path: "/fail"}, false, "status 503, expected 200-299"},
		{"expected 503", HTTPSpec{Path: "/fail", ExpectStatus: []StatusRange{{503, 503}}}, true, "status 503"},
		{"redirect not followed", HTTPSpec{Path: "/redirect"}, false, "status 302, expected 200-299"},
		{"redirect expected", HTTPSpec{Path: "/redirect", ExpectStatus: []StatusRange{{200, 200}, {301, 302}}}, true, "status 302"},
		{"ranges listed", HTTPSpec{Path: "/fail", ExpectStatus: []StatusRange{{200, 200}, {300, 399}}}, false, "expected 200,300-399"},
		{"body regex", HTTPSpec{Path: "/ok", BodyRegex: `status=(green|yellow)`}, true, "status 200"},
		{"body regex mismatch", HTTPSpec{Path: "/ok", BodyRegex: `status=red`}, false, `body does not match "status=red" (body starts "hello world status=green")`},
		{"digest", HTTPSpec{Path: "/ok", BodySHA256: sha(okBody)}, true, "status 200"},
		{"digest upper case", HTTPSpec{Path: "/ok", BodySHA256: strings.ToUpper(sha(okBody))}, true, "status 200"},
		{"digest mismatch", HTTPSpec{Path: "/ok", BodySHA256: sha("other")}, false, "body SHA-256 " + sha(okBody) + " does not match"},
		{"regex and digest", HTTPSpec{Path: "/ok", BodyRegex: "green", BodySHA256: sha(okBody)}, true, "status 200"},
		{"host header default", HTTPSpec{Path: "/host", BodyRegex: `^host=` + strings.ReplaceAll(addr.String(), ".", `\.`) + `$`}, true, ""},
		{"host header sent", HTTPSpec{Path: "/host", Host: "www.example.com", BodyRegex: `^host=www\.example\.com$`}, true, ""},
		{"chunked body", HTTPSpec{Path: "/chunked", BodyRegex: `part part part MARKER`}, true, ""},
		{"marker beyond MaxBody", HTTPSpec{Path: "/big", BodyRegex: `MARKER`}, false, "first 65536 bytes of the body does not match"},
		{"marker within MaxBody", HTTPSpec{Path: "/big", BodyRegex: `MARKER`, MaxBody: 200 << 10}, true, ""},
		{"digest of a body over MaxBody", HTTPSpec{Path: "/big", BodySHA256: sha("x")}, false, "body longer than 65536 bytes: cannot check its SHA-256"},
		{"refused", HTTPSpec{Addr: refused}, false, "connect: connection refused"},
	}
	for _, tc := range tests {
		for _, keep := range []bool{false, true} {
			name := tc.name
			if keep {
				name += "/keepalive"
			}
			t.Run(name, func(t *testing.T) {
				if !tc.spec.Addr.IsValid() {
					tc.spec.Addr = addr
				}
				tc.spec.KeepAlive = keep
				c := newChecker(t, tc.spec, nil)
				defer closeChecker(c)
				for range 2 { // with keepalive, the second one reuses the connection if it may
					res, took := runCheck(t, c, time.Second)
					wantResult(t, res, tc.ok, tc.detail)
					wantWithin(t, took, time.Second)
					if res.Duration <= 0 {
						t.Errorf("Duration %v", res.Duration)
					}
				}
			})
		}
	}
}

// TestHTTPKeepAlive: one connection serves probe after probe; a connection
// the server closed while idle is no failure; a server that says
// "Connection: close" gets a new connection each time; a dead server
// fails; Close releases the kept connection.
func TestHTTPKeepAlive(t *testing.T) {
	noLeak(t)
	var opened, closed atomic.Int64
	srv := httptest.NewUnstartedServer(testMux())
	srv.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		switch st {
		case http.StateNew:
			opened.Add(1)
		case http.StateClosed, http.StateHijacked:
			closed.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	addr := addrPort(t, srv.Listener.Addr().String())

	c := newChecker(t, HTTPSpec{Addr: addr, Path: "/ok", KeepAlive: true}, nil)
	for range 5 {
		res, _ := runCheck(t, c, time.Second)
		wantResult(t, res, true, "status 200")
	}
	if n := opened.Load(); n != 1 {
		t.Errorf("5 probes opened %d connections, want 1", n)
	}

	// The server drops idle connections: the next probe retries on a new
	// one, and passes.
	srv.Config.SetKeepAlivesEnabled(false)
	srv.CloseClientConnections()
	waitFor(t, time.Second, "the server closed the kept connection", func() bool { return closed.Load() == 1 })
	res, _ := runCheck(t, c, time.Second)
	wantResult(t, res, true, "status 200")
	// Keep-alives off: the server answers "Connection: close", so every
	// probe opens its own connection.
	before := opened.Load()
	for range 3 {
		res, _ := runCheck(t, c, time.Second)
		wantResult(t, res, true, "status 200")
	}
	if n := opened.Load() - before; n != 3 {
		t.Errorf("with Connection: close, 3 probes opened %d connections, want 3", n)
	}

	// Keep-alives on again; Close releases the kept connection.
	srv.Config.SetKeepAlivesEnabled(true)
	res, _ = runCheck(t, c, time.Second)
	wantResult(t, res, true, "status 200")
	// (Counted as connections still open on the server: the closes of the
	// earlier "Connection: close" ones may still be on their way.)
	waitFor(t, 5*time.Second, "one connection open, the kept one", func() bool { return opened.Load()-closed.Load() == 1 })
	closeChecker(c)
	waitFor(t, 5*time.Second, "Close closed the kept connection", func() bool { return opened.Load() == closed.Load() })

	// A dead server fails the probe, kept connection or not.
	c2 := newChecker(t, HTTPSpec{Addr: addr, Path: "/ok", KeepAlive: true}, nil)
	defer closeChecker(c2)
	res, _ = runCheck(t, c2, time.Second)
	wantResult(t, res, true, "status 200")
	srv.Close()
	res, _ = runCheck(t, c2, time.Second)
	wantResult(t, res, false, "connect: connection refused")
}

func TestHTTPSpecErrors(t *testing.T) {
	a := netip.MustParseAddrPort("192.0.2.1:80")
	for _, tc := range []struct {
		name string
		spec HTTPSpec
		want string
	}{
		{"no address", HTTPSpec{}, "need an IP address and a port"},
		{"no port", HTTPSpec{Addr: netip.AddrPortFrom(a.Addr(), 0)}, "need an IP address and a port"},
		{"relative path", HTTPSpec{Addr: a, Path: "health"}, "must start with /"},
		{"path with CRLF", HTTPSpec{Addr: a, Path: "/x\r\nX-Evil: 1"}, "must start with /"},
		{"host with space", HTTPSpec{Addr: a, Host: "a b"}, "contains spaces"},
		{"bad status", HTTPSpec{Addr: a, ExpectStatus: []StatusRange{{299, 200}}}, "not a range"},
		{"bad regex", HTTPSpec{Addr: a, BodyRegex: "("}, "body regex"},
		{"bad digest", HTTPSpec{Addr: a, BodySHA256: "abcd"}, "not 64 hex digits"},
		{"SNI without TLS", HTTPSpec{Addr: a, ServerName: "x"}, "need TLS"},
		{"missing CA file", HTTPSpec{Addr: a, TLS: true, VerifyTLS: true, CAFile: "/nonexistent/ca.pem"}, "CA file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.spec.NewChecker(nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err %v; want one containing %q", err, tc.want)
			}
		})
	}
}

func TestHTTPSpecKey(t *testing.T) {
	a := netip.MustParseAddrPort("192.0.2.1:80")
	same := []HTTPSpec{
		{Addr: a},
		{Addr: a, Path: "/", Host: "192.0.2.1", ExpectStatus: []StatusRange{{200, 299}}, MaxBody: DefaultMaxBody},
		{Addr: a, ExpectStatus: []StatusRange{{250, 299}, {200, 249}}},
	}
	for _, s := range same[1:] {
		if s.Key() != same[0].Key() {
			t.Errorf("keys differ:\n%s\n%s", s.Key(), same[0].Key())
		}
	}
	different := []HTTPSpec{
		{Addr: a, Path: "/x"},
		{Addr: a, Host: "h"},
		{Addr: a, TLS: true},
		{Addr: a, BodyRegex: "x"},
		{Addr: a, BodySHA256: sha("x")},
		{Addr: a, ExpectStatus: []StatusRange{{200, 200}}},
		{Addr: netip.MustParseAddrPort("192.0.2.1:81")},
	}
	seen := map[string]bool{same[0].Key(): true}
	for _, s := range different {
		if seen[s.Key()] {
			t.Errorf("key %s not distinct", s.Key())
		}
		seen[s.Key()] = true
	}
}

// tlsServer starts an HTTPS server that records the SNI of each handshake.
func tlsServer(t *testing.T) (srv *httptest.Server, caFile string, sni func() []string) {
	t.Helper()
	var mu sync.Mutex
	var names []string
	srv = httptest.NewUnstartedServer(testMux())
	srv.TLS = &tls.Config{GetConfigForClient: func(hi *tls.ClientHelloInfo) (*tls.Config, error) {
		mu.Lock()
		names = append(names, hi.ServerName)
		mu.Unlock()
		return nil, nil
	}}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // failed handshakes are the point
	srv.StartTLS()
	t.Cleanup(srv.Close)
	caFile = filepath.Join(t.TempDir(), "ca.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(caFile, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	return srv, caFile, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), names...)
	}
}

func TestHTTPSCheck(t *testing.T) {
	noLeak(t)
	srv, caFile, sni := tlsServer(t)
	addr := addrPort(t, srv.Listener.Addr().String())
	// httptest's certificate is for example.com, 127.0.0.1 and ::1.
	tests := []struct {
		name    string
		spec    HTTPSpec
		ok      bool
		detail  string
		wantSNI string
	}{
		{"no verification by default", HTTPSpec{Path: "/ok"}, true, "status 200", ""},
		{"wrong status over TLS", HTTPSpec{Path: "/fail"}, false, "status 503", ""},
		{"verify: unknown CA", HTTPSpec{Path: "/ok", VerifyTLS: true}, false, "tls handshake: ", ""},
		{"verify against the address", HTTPSpec{Path: "/ok", VerifyTLS: true, CAFile: caFile}, true, "status 200", ""},
		{"verify with SNI", HTTPSpec{Path: "/ok", VerifyTLS: true, CAFile: caFile, ServerName: "example.com"}, true, "status 200", "example.com"},
		{"verify: wrong name", HTTPSpec{Path: "/ok", VerifyTLS: true, CAFile: caFile, ServerName: "wrong.example.net"}, false, "tls handshake: ", "wrong.example.net"},
		{"SNI sent unverified", HTTPSpec{Path: "/ok", ServerName: "sni.example.org"}, true, "status 200", "sni.example.org"},
		{"SNI from the Host header", HTTPSpec{Path: "/host", Host: "www.example.com:8443", BodyRegex: `^host=www\.example\.com:8443$`}, true, "", "www.example.com"},
		{"no SNI for an IP Host", HTTPSpec{Path: "/ok", Host: "127.0.0.1"}, true, "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.spec.Addr, tc.spec.TLS = addr, true
			before := len(sni())
			res, took := runCheck(t, newChecker(t, tc.spec, nil), time.Second)
			wantResult(t, res, tc.ok, tc.detail)
			wantWithin(t, took, time.Second)
			names := sni()
			if len(names) != before+1 {
				t.Fatalf("server saw %d handshakes; want 1 (a fresh connection per probe)", len(names)-before)
			}
			if got := names[len(names)-1]; got != tc.wantSNI {
				t.Errorf("server saw SNI %q; want %q", got, tc.wantSNI)
			}
		})
	}
	t.Run("verify: unknown CA detail", func(t *testing.T) {
		res, _ := runCheck(t, newChecker(t, HTTPSpec{Addr: addr, TLS: true, VerifyTLS: true}, nil), time.Second)
		if !strings.Contains(res.Detail, "certificate") {
			t.Errorf("detail %q does not name the certificate problem", res.Detail)
		}
	})
}

// misbehave starts a TCP server that runs serve on each connection.
func misbehave(t *testing.T, serve func(net.Conn)) netip.AddrPort {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	done := make(chan struct{})
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() { defer wg.Done(); serve(c) }()
		}
	}()
	t.Cleanup(func() {
		close(done)
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	_ = done
	return addrPort(t, l.Addr().String())
}

// trickle writes s one byte every 100ms until done or the peer is gone.
func trickle(s string) func(net.Conn) {
	return func(c net.Conn) {
		defer c.Close()
		buf := make([]byte, 4096)
		_, _ = c.Read(buf)
		for i := 0; i < len(s); i++ {
			if _, err := c.Write([]byte{s[i]}); err != nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

func TestHTTPCheckMisbehavingServers(t *testing.T) {
	noLeak(t)
	const timeout = 500 * time.Millisecond
	longBody := strings.Repeat("x", 100)
	fastHeadersSlowBody := func(c net.Conn) {
		defer c.Close()
		buf := make([]byte, 4096)
		_, _ = c.Read(buf)
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
		trickle(longBody)(c)
	}
	silent := func(c net.Conn) {
		defer c.Close()
		_, _ = io.Copy(io.Discard, c) // reads the request, never answers
	}
	tests := []struct {
		name   string
		serve  func(net.Conn)
		spec   HTTPSpec
		detail string
	}{
		{"trickled status line", trickle("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"), HTTPSpec{}, "reading the response: timeout after"},
		{"trickled body", fastHeadersSlowBody, HTTPSpec{BodyRegex: "y"}, "reading the body: timeout after"},
		{"accepts, never answers", silent, HTTPSpec{}, "reading the response: timeout after"},
		{"accepts, never answers TLS", silent, HTTPSpec{TLS: true}, "tls handshake: timeout after"},
		{"garbage", func(c net.Conn) {
			defer c.Close()
			io.WriteString(c, "SSH-2.0-OpenSSH_9.2\r\n\r\n")
		}, HTTPSpec{}, `reading the response: malformed HTTP status line "SSH-2.0-OpenSSH_9.2"`},
		{"garbage, body wanted", func(c net.Conn) {
			defer c.Close()
			io.WriteString(c, "SSH-2.0-OpenSSH_9.2\r\n\r\n")
		}, HTTPSpec{BodyRegex: "x"}, "reading the response: malformed HTTP"},
		{"reset", func(c net.Conn) {
			c.(*net.TCPConn).SetLinger(0)
			c.Close()
		}, HTTPSpec{}, "connection reset by peer"},
		{"closed before the headers end", func(c net.Conn) {
			defer c.Close()
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Le")
		}, HTTPSpec{}, "reading the response headers: "},
		{"closed before the headers end, body wanted", func(c net.Conn) {
			defer c.Close()
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Le")
		}, HTTPSpec{BodyRegex: "x"}, "reading the response: "},
		{"not HTTP/1", func(c net.Conn) {
			defer c.Close()
			io.WriteString(c, "HTTP/2 200\r\n\r\n")
		}, HTTPSpec{}, `malformed HTTP status line "HTTP/2 200"`},
		{"trickled headers", trickle("HTTP/1.1 200 OK\r\nServer: slow\r\n\r\n"), HTTPSpec{}, "reading the response: timeout after"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.spec.Addr = misbehave(t, tc.serve)
			res, took := runCheck(t, newChecker(t, tc.spec, nil), timeout)
			wantResult(t, res, false, tc.detail)
			wantWithin(t, took, timeout)
			// Keep-alive reads the whole response through net/http's
			// parser: other words, the same verdict within the same bound.
			tc.spec.KeepAlive = true
			c := newChecker(t, tc.spec, nil)
			defer closeChecker(c)
			res, took = runCheck(t, c, timeout)
			wantResult(t, res, false, "")
			if res.Detail == "" {
				t.Error("keepalive: a failure without a reason")
			}
			wantWithin(t, took, timeout)
		})
	}
}

func TestTCPCheck(t *testing.T) {
	noLeak(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	l6, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l6.Close() }) // the kernel completes the handshake; no Accept needed
	for _, tc := range []struct {
		name   string
		addr   netip.AddrPort
		ok     bool
		detail string
	}{
		{"open", addrPort(t, l.Addr().String()), true, "connected"},
		{"open IPv6", addrPort(t, l6.Addr().String()), true, "connected"},
		{"refused", freePort(t), false, "connect: connection refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, took := runCheck(t, newChecker(t, TCPSpec{Addr: tc.addr}, nil), time.Second)
			wantResult(t, res, tc.ok, tc.detail)
			wantWithin(t, took, time.Second)
		})
	}
	if _, err := (TCPSpec{}).NewChecker(nil); err == nil {
		t.Error("TCPSpec{} accepted")
	}
}

func TestParseStatusLine(t *testing.T) {
	for line, want := range map[string]int{
		"HTTP/1.1 200 OK\r\n":            200,
		"HTTP/1.0 503 Unavailable\r\n":   503,
		"HTTP/1.1 204\r\n":               204,
		"HTTP/1.1 302 \n":                302,
		"HTTP/1.1 204\r\r\n":             -1,
		"HTTP/1.1 999 whatever\r\n":      999,
		"HTTP/1.1 099 low\r\n":           -1,
		"HTTP/1.1 20 OK\r\n":             -1,
		"HTTP/1.1 2000 OK\r\n":           -1,
		"HTTP/1.1 2x0 OK\r\n":            -1,
		"HTTP/2 200\r\n":                 -1,
		"HTTP/1.1  200 OK\r\n":           -1,
		"http/1.1 200 OK\r\n":            -1,
		"SSH-2.0-OpenSSH_9.2p1 Debian\n": -1,
		"":                               -1,
	} {
		code, ok := parseStatusLine([]byte(line))
		if (want < 0 && ok) || (want >= 0 && (!ok || code != want)) {
			t.Errorf("parseStatusLine(%q) = %d, %v; want %d", line, code, ok, want)
		}
	}
}

// FuzzParseStatusLine checks the status-line parser against net/http's.
func FuzzParseStatusLine(f *testing.F) {
	for _, s := range []string{"HTTP/1.1 200 OK\r\n", "HTTP/1.0 404\r\n", "HTTP/1.1 099 x\r\n", "HTTP/2 200\r\n", "garbage\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		if strings.ContainsAny(strings.TrimRight(line, "\r\n"), "\r\n") {
			return // one line only
		}
		code, ok := parseStatusLine([]byte(line))
		if !ok {
			return
		}
		// Whatever this parser accepts, net/http accepts with the same
		// code.
		resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader(strings.TrimRight(line, "\r\n")+"\r\n\r\n")), nil)
		if err != nil {
			t.Fatalf("accepted %q (code %d); net/http: %v", line, code, err)
		}
		if resp.StatusCode != code {
			t.Fatalf("%q: code %d; net/http says %d", line, code, resp.StatusCode)
		}
	})
}
