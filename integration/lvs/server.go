package lvs

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hadirector/hadirector/integration/netlab"
)

// Server is a real server's programs, running as goroutines of the test
// process with their listening sockets inside the server's namespace
// (netlab.Node.Listen), so they see exactly the traffic the node gets:
//
//   - HTTP on httpPort: GET / answers the server's name plus "\n" (header
//     X-Server too), GET /health answers 200 "ok" or, after
//     SetHealthy(false), 503; anything else 404.
//   - echo on echoPort: each line "N" is answered "<name> N".
//
// Kill makes the server die as a crashed process would: both listeners
// close (new connections are refused with RST) and every open connection
// is reset. Revive listens again.
type Server struct {
	name               string
	node               *netlab.Node
	httpPort, echoPort int

	healthy     atomic.Bool
	noKeepAlive atomic.Bool
	hits        atomic.Int64 // GET / answered
	healthHits  atomic.Int64 // GET /health answered, whatever the status
	echoLines   atomic.Int64

	mu      sync.Mutex
	running bool
	lns     []net.Listener
	srv     *http.Server
	conns   map[*trackedConn]struct{}
	wg      *sync.WaitGroup // this life's goroutines (a new one per Revive)
}

// StartServer starts the server's programs in node. echoPort 0 means no
// echo listener.
func StartServer(node *netlab.Node, name string, httpPort, echoPort int) (*Server, error) {
	s := &Server{name: name, node: node, httpPort: httpPort, echoPort: echoPort, conns: map[*trackedConn]struct{}{}}
	s.healthy.Store(true)
	if err := s.Revive(); err != nil {
		return nil, err
	}
	return s, nil
}

// Name is the name the server answers with.
func (s *Server) Name() string { return s.name }

// Node is the node the server runs in.
func (s *Server) Node() *netlab.Node { return s.node }

// Hits counts the GET / requests answered since start.
func (s *Server) Hits() int64 { return s.hits.Load() }

// HealthHits counts the GET /health requests answered since start (the
// health probes seen).
func (s *Server) HealthHits() int64 { return s.healthHits.Load() }

// EchoLines counts the echo lines answered since start.
func (s *Server) EchoLines() int64 { return s.echoLines.Load() }

// SetHealthy makes /health answer 200 (true) or 503 (false), leaving /
// and echo alone: a server that fails its check but still serves.
func (s *Server) SetHealthy(ok bool) { s.healthy.Store(ok) }

// SetKeepAlive turns TCP keep-alive probes (Go's default: after 15 s
// idle) on or off for the connections the server accepts from now on. A
// bench that wants idle connections to be silent turns them off: in DR the
// client's answers to the probes pass the director.
func (s *Server) SetKeepAlive(on bool) { s.noKeepAlive.Store(!on) }

// Running reports whether the server listens (between start or Revive and
// Kill).
func (s *Server) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.running
}

// Conns is the number of connections the server holds open now.
func (s *Server) Conns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// Revive starts listening again after Kill (a no-op while running).
func (s *Server) Revive() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running {
		return nil
	}
	hl, err := s.node.Listen("tcp", fmt.Sprintf(":%d", s.httpPort))
	if err != nil {
		return fmt.Errorf("server %s: listen on :%d: %w", s.name, s.httpPort, err)
	}
	lns := []net.Listener{&trackingListener{Listener: hl, s: s}}
	if s.echoPort != 0 {
		el, err := s.node.Listen("tcp", fmt.Sprintf(":%d", s.echoPort))
		if err != nil {
			hl.Close()
			return fmt.Errorf("server %s: listen on :%d: %w", s.name, s.echoPort, err)
		}
		lns = append(lns, &trackingListener{Listener: el, s: s})
	}
	srv := &http.Server{
		Handler:           http.HandlerFunc(s.serveHTTP),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       30 * time.Second,
	}
	wg := &sync.WaitGroup{}
	s.lns, s.srv, s.running, s.wg = lns, srv, true, wg
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = srv.Serve(lns[0])
	}()
	if len(lns) > 1 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.serveEcho(lns[1], wg)
		}()
	}
	return nil
}

// Kill closes the listeners and resets every open connection (SO_LINGER 0,
// so the peers get RST). It is idempotent.
func (s *Server) Kill() {
	s.mu.Lock()
	if !s.running {
		s.mu.Unlock()
		return
	}
	s.running = false
	for _, l := range s.lns {
		_ = l.Close()
	}
	conns := make([]*trackedConn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	srv, wg := s.srv, s.wg
	s.mu.Unlock()
	for _, c := range conns {
		c.reset()
	}
	// The HTTP server's own bookkeeping; its connections are gone already.
	_ = srv.Close()
	wg.Wait()
}

// Close is Kill for cleanup.
func (s *Server) Close() { s.Kill() }

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Server", s.name)
	switch r.URL.Path {
	case "/":
		s.hits.Add(1)
		_, _ = io.WriteString(w, s.name+"\n")
	case "/health":
		s.healthHits.Add(1)
		if !s.healthy.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = io.WriteString(w, "unhealthy\n")
			return
		}
		_, _ = io.WriteString(w, "ok\n")
	default:
		http.NotFound(w, r)
	}
}

func (s *Server) serveEcho(l net.Listener, wg *sync.WaitGroup) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			sc := bufio.NewScanner(c)
			for sc.Scan() {
				if _, err := fmt.Fprintf(c, "%s %s\n", s.name, sc.Text()); err != nil {
					return
				}
				s.echoLines.Add(1)
			}
		}()
	}
}

// trackingListener registers every accepted connection with its server, so
// Kill can reset it.
type trackingListener struct {
	net.Listener
	s *Server
}

func (l *trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if tcp, ok := c.(*net.TCPConn); ok && l.s.noKeepAlive.Load() {
		_ = tcp.SetKeepAlive(false)
	}
	tc := &trackedConn{Conn: c, s: l.s}
	l.s.mu.Lock()
	if !l.s.running { // Kill ran between the accept and here
		l.s.mu.Unlock()
		tc.reset()
		return nil, net.ErrClosed
	}
	l.s.conns[tc] = struct{}{}
	l.s.mu.Unlock()
	return tc, nil
}

type trackedConn struct {
	net.Conn
	s    *Server
	once sync.Once
}

func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.forget()
	return err
}

func (c *trackedConn) forget() {
	c.once.Do(func() {
		c.s.mu.Lock()
		delete(c.s.conns, c)
		c.s.mu.Unlock()
	})
}

// reset closes the connection with an RST instead of a FIN.
func (c *trackedConn) reset() {
	if tc, ok := c.Conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

// parseEcho splits an echo reply "<name> N".
func parseEcho(line string) (name string, seq int, err error) {
	for i := len(line) - 1; i >= 0; i-- {
		if line[i] == ' ' {
			seq, err = strconv.Atoi(line[i+1:])
			if err == nil {
				return line[:i], seq, nil
			}
			break
		}
	}
	return "", 0, errors.New("malformed echo reply " + strconv.Quote(line))
}
