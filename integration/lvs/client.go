package lvs

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hadirector/hadirector/integration/netlab"
)

// RequestTimeout bounds one client request (connect + answer) unless the
// context is shorter. Generous: the VM emulates its CPU.
const RequestTimeout = 3 * time.Second

// httpClient makes HTTP requests from inside a node, one fresh TCP
// connection per request (so IPVS schedules every request).
type httpClient struct {
	node *netlab.Node
	c    *http.Client
}

func newHTTPClient(node *netlab.Node) *httpClient {
	tr := &http.Transport{
		DialContext:       node.DialContext,
		DisableKeepAlives: true,
		Proxy:             nil,
	}
	return &httpClient{node: node, c: &http.Client{
		Transport: tr,
		// A redirect would be a bug in the bed; never follow one.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// Response is one HTTP answer.
type Response struct {
	Status int
	Body   string // trimmed of surrounding white space
	Server string // the X-Server header
}

func (h *httpClient) do(ctx context.Context, addr, path string) (Response, error) {
	ctx, cancel := context.WithTimeout(ctx, RequestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return Response{}, err
	}
	resp, err := h.c.Do(req)
	if err != nil {
		return Response{}, fmt.Errorf("%s: GET http://%s%s: %w", h.node.Name(), addr, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if err != nil {
		return Response{}, fmt.Errorf("%s: GET http://%s%s: reading the body: %w", h.node.Name(), addr, path, err)
	}
	return Response{Status: resp.StatusCode, Body: strings.TrimSpace(string(b)), Server: resp.Header.Get("X-Server")}, nil
}

// HTTPGet requests http://addr/path from inside node over a fresh
// connection (addr is "ip:port").
func HTTPGet(ctx context.Context, node *netlab.Node, addr, path string) (Response, error) {
	return newHTTPClient(node).do(ctx, addr, path)
}

// Get asks addr ("ip:port", usually b.VIPPort(HTTPPort)) for GET / from the
// client and returns the name of the server that answered. Anything but a
// 200 is an error.
func (b *Bed) Get(ctx context.Context, addr string) (string, error) {
	r, err := b.http.do(ctx, addr, "/")
	if err != nil {
		return "", err
	}
	if r.Status != http.StatusOK {
		return "", fmt.Errorf("GET http://%s/: status %d (%q)", addr, r.Status, r.Body)
	}
	return r.Body, nil
}

// Tally is what n requests got: how many each server answered, and the
// failures.
type Tally struct {
	N        int
	Counts   map[string]int // server name -> answers
	Errors   int
	FirstErr error
}

// Names are the servers that answered at least once, sorted.
func (t Tally) Names() []string {
	out := make([]string, 0, len(t.Counts))
	for n := range t.Counts {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// Only reports whether exactly the servers names answered (in any
// proportion) and nothing failed.
func (t Tally) Only(names ...string) bool {
	want := slices.Clone(names)
	slices.Sort(want)
	return t.Errors == 0 && slices.Equal(t.Names(), slices.Compact(want))
}

// String is e.g. "30 requests: rs1=10 rs2=10 rs3=10" (+ " errors=N (first: ...)").
func (t Tally) String() string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "%d requests:", t.N)
	for _, n := range t.Names() {
		fmt.Fprintf(&sb, " %s=%d", n, t.Counts[n])
	}
	if t.Errors > 0 {
		fmt.Fprintf(&sb, " errors=%d (first: %v)", t.Errors, t.FirstErr)
	}
	return sb.String()
}

// Tally makes n sequential Get requests to addr from the client and counts
// who answered. It stops early (counting the rest as errors) when ctx ends.
func (b *Bed) Tally(ctx context.Context, addr string, n int) Tally {
	t := Tally{N: n, Counts: map[string]int{}}
	for i := range n {
		if err := ctx.Err(); err != nil {
			t.Errors += n - i
			if t.FirstErr == nil {
				t.FirstErr = err
			}
			break
		}
		name, err := b.Get(ctx, addr)
		if err != nil {
			t.Errors++
			if t.FirstErr == nil {
				t.FirstErr = err
			}
			continue
		}
		t.Counts[name]++
	}
	return t
}

// WaitTally repeats Tally(n) until ok accepts one or ctx ends; it returns
// the last tally and whether ok accepted it. For waiting until the daemon
// has reprogrammed IPVS, e.g. ok = func(t Tally) bool { return t.Only("rs1", "rs2") }.
func (b *Bed) WaitTally(ctx context.Context, addr string, n int, ok func(Tally) bool) (Tally, bool) {
	for {
		t := b.Tally(ctx, addr, n)
		if ok(t) {
			return t, true
		}
		select {
		case <-ctx.Done():
			return t, false
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Stream is a long-lived TCP connection from the client to an echo service
// (EchoPort): it sends a numbered line every interval and checks that the
// answer carries the same number. When the connection breaks (an error,
// a wrong answer, or no answer within its reply timeout) it records a
// Break and reconnects, so a test sees both whether a connection survived
// and how long clients were without service.
type Stream struct {
	node     *netlab.Node
	addr     string
	every    time.Duration
	replyTO  time.Duration
	cancel   context.CancelFunc
	done     chan struct{}
	mu       sync.Mutex
	rep      StreamReport
	brokenAt time.Time // of the open break, zero when connected
}

// StreamReport is what a Stream saw.
type StreamReport struct {
	Sent       int       // lines written on established connections
	Answered   int       // correct answers
	LastAnswer time.Time // of the latest correct answer
	Servers    []string  // the server of each connection, in order (one per (re)connection)
	Breaks     []Break
}

// Break is one broken connection.
type Break struct {
	At     time.Time
	Seq    int           // the line whose write or answer failed
	Err    error         // what went wrong
	Outage time.Duration // from At to the first answer on a new connection; 0 while not reconnected
}

// Server is the server of the current (last) connection.
func (r StreamReport) Server() string {
	if len(r.Servers) == 0 {
		return ""
	}
	return r.Servers[len(r.Servers)-1]
}

// String summarises the report.
func (r StreamReport) String() string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "sent %d, answered %d, servers %v, %d breaks", r.Sent, r.Answered, r.Servers, len(r.Breaks))
	for _, b := range r.Breaks {
		fmt.Fprintf(&sb, "; at line %d: %v (outage %v)", b.Seq, b.Err, b.Outage)
	}
	return sb.String()
}

// StartStream opens a Stream from the client to addr ("ip:port", e.g.
// b.VIPPort(EchoPort)), sending a line every interval. It returns once the
// first line is answered, or with an error if that fails. Stop it with
// Stop (also when ctx ends).
func (b *Bed) StartStream(ctx context.Context, addr string, every time.Duration) (*Stream, error) {
	return StartStream(ctx, b.Client, addr, every)
}

// StartStream is Bed.StartStream from any node.
func StartStream(ctx context.Context, node *netlab.Node, addr string, every time.Duration) (*Stream, error) {
	return startStream(ctx, node, addr, every, 0)
}

// startStream: replyTO 0 means max(RequestTimeout, 4×every).
func startStream(ctx context.Context, node *netlab.Node, addr string, every, replyTO time.Duration) (*Stream, error) {
	if replyTO <= 0 {
		replyTO = max(RequestTimeout, 4*every)
	}
	ctx, cancel := context.WithCancel(ctx)
	s := &Stream{node: node, addr: addr, every: every, replyTO: replyTO, cancel: cancel, done: make(chan struct{})}
	c, r, err := s.connect(ctx, 1)
	if err != nil {
		cancel()
		return nil, err
	}
	go s.run(ctx, c, r)
	return s, nil
}

// connect dials and gets seq answered on the new connection.
func (s *Stream) connect(ctx context.Context, seq int) (net.Conn, *bufio.Reader, error) {
	dctx, cancel := context.WithTimeout(ctx, RequestTimeout)
	c, err := s.node.DialContext(dctx, "tcp", s.addr)
	cancel()
	if err != nil {
		return nil, nil, fmt.Errorf("stream to %s: %w", s.addr, err)
	}
	r := bufio.NewReader(c)
	name, err := s.roundTrip(c, r, seq)
	if err != nil {
		c.Close()
		return nil, nil, fmt.Errorf("stream to %s: %w", s.addr, err)
	}
	s.mu.Lock()
	s.rep.Sent++
	s.rep.Answered++
	s.rep.LastAnswer = time.Now()
	s.rep.Servers = append(s.rep.Servers, name)
	if !s.brokenAt.IsZero() {
		s.rep.Breaks[len(s.rep.Breaks)-1].Outage = time.Since(s.brokenAt)
		s.brokenAt = time.Time{}
	}
	s.mu.Unlock()
	return c, r, nil
}

func (s *Stream) roundTrip(c net.Conn, r *bufio.Reader, seq int) (string, error) {
	_ = c.SetDeadline(time.Now().Add(s.replyTO))
	if _, err := fmt.Fprintf(c, "%d\n", seq); err != nil {
		return "", err
	}
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	name, got, err := parseEcho(strings.TrimSpace(line))
	if err != nil {
		return "", err
	}
	if got != seq {
		return "", fmt.Errorf("answer to line %d carries %d", seq, got)
	}
	return name, nil
}

func (s *Stream) run(ctx context.Context, c net.Conn, r *bufio.Reader) {
	defer close(s.done)
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	// Closing the connection when ctx ends interrupts a blocked read.
	stop := context.AfterFunc(ctx, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if c != nil {
			_ = c.SetDeadline(time.Now())
		}
	})
	defer stop()
	t := time.NewTicker(s.every)
	defer t.Stop()
	seq := 1
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		seq++
		if c == nil {
			nc, nr, err := s.connect(ctx, seq)
			if err == nil {
				s.mu.Lock()
				c, r = nc, nr
				s.mu.Unlock()
			}
			continue
		}
		_, err := s.roundTrip(c, r, seq)
		if ctx.Err() != nil {
			return // stopped while waiting: not a break
		}
		s.mu.Lock()
		s.rep.Sent++
		if err == nil {
			s.rep.Answered++
			s.rep.LastAnswer = time.Now()
			s.mu.Unlock()
			continue
		}
		now := time.Now()
		s.rep.Breaks = append(s.rep.Breaks, Break{At: now, Seq: seq, Err: err})
		s.brokenAt = now
		c.Close()
		c = nil
		s.mu.Unlock()
	}
}

// Report returns what the stream saw so far.
func (s *Stream) Report() StreamReport {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.rep
	r.Servers = slices.Clone(r.Servers)
	r.Breaks = slices.Clone(r.Breaks)
	return r
}

// Stop ends the stream, closes its connection and returns its report.
func (s *Stream) Stop() StreamReport {
	s.cancel()
	<-s.done
	return s.Report()
}

// OpenStreams opens n Streams from the client to addr, a few at a time,
// each sending a line every interval and waiting replyTimeout for each
// answer before it counts the connection as broken (0: the default,
// max(RequestTimeout, 4×every)). A stream that fails to open is tried
// twice more: under an emulated CPU shared with other work a handshake
// can miss RequestTimeout, and what these streams are for is what happens
// to them once open. If one still fails, it stops those it opened and
// returns the first error.
func (b *Bed) OpenStreams(ctx context.Context, addr string, n int, every, replyTimeout time.Duration) ([]*Stream, error) {
	var (
		mu       sync.Mutex
		streams  []*Stream
		firstErr error
		wg       sync.WaitGroup
	)
	sem := make(chan struct{}, 32)
	for range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			s, err := startStream(ctx, b.Client, addr, every, replyTimeout)
			for try := 1; err != nil && try < 3 && ctx.Err() == nil; try++ {
				s, err = startStream(ctx, b.Client, addr, every, replyTimeout)
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if firstErr == nil {
					firstErr = err
				}
				return
			}
			streams = append(streams, s)
		}()
	}
	wg.Wait()
	if firstErr != nil {
		StopStreams(streams)
		return nil, firstErr
	}
	return streams, nil
}

// StopStreams stops every stream and returns their reports.
func StopStreams(streams []*Stream) []StreamReport {
	out := make([]StreamReport, 0, len(streams))
	for _, s := range streams {
		out = append(out, s.Stop())
	}
	return out
}

// BreakReason reduces a Break's error to a short class: reset, timeout
// (a context's deadline too), eof, refused, or the error itself.
func BreakReason(err error) string {
	s := fmt.Sprint(err)
	for _, r := range []string{"reset", "timeout", "EOF", "refused"} {
		if strings.Contains(s, r) {
			return strings.ToLower(r)
		}
	}
	if strings.Contains(s, "deadline exceeded") {
		return "timeout"
	}
	return s
}
