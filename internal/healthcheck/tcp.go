package healthcheck

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"syscall"
	"time"
)

// TCPSpec checks that a TCP connection to Addr can be established.
type TCPSpec struct {
	Addr netip.AddrPort
}

// Key implements CheckSpec.
func (s TCPSpec) Key() string { return "tcp|" + s.Addr.String() }

// NewChecker implements CheckSpec.
func (s TCPSpec) NewChecker(*Env) (Checker, error) {
	if !s.Addr.IsValid() || s.Addr.Port() == 0 {
		return nil, fmt.Errorf("healthcheck: tcp check: address %q: need an IP address and a port", s.Addr)
	}
	return &tcpChecker{addr: s.Addr.String()}, nil
}

type tcpChecker struct {
	addr string
}

var tcpDialer = net.Dialer{
	// No Happy Eyeballs, no fallback: the address is a literal.
	FallbackDelay: -1,
	KeepAlive:     -1,
}

func (c *tcpChecker) Check(ctx context.Context) Result {
	start := time.Now()
	conn, err := tcpDialer.DialContext(ctx, "tcp", c.addr)
	if err != nil {
		return failed(start, "connect: "+dialError(ctx, err, start))
	}
	abort(conn)
	return Result{OK: true, Detail: "connected", Duration: time.Since(start)}
}

// abort closes conn with RST instead of FIN (SO_LINGER 0): the prober does
// not keep a TIME_WAIT socket for every probe.
func abort(conn net.Conn) {
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
}

func failed(start time.Time, detail string) Result {
	return Result{Detail: detail, Duration: time.Since(start)}
}

// dialError and ioError turn an error into a short, stable detail: timeouts
// say "timeout after D", errnos keep their text ("connection refused").
func dialError(ctx context.Context, err error, start time.Time) string {
	return ioError(ctx, err, start)
}

func ioError(ctx context.Context, err error, start time.Time) string {
	if isTimeout(ctx, err) {
		return "timeout after " + time.Since(start).Round(time.Millisecond).String()
	}
	if errors.Is(err, context.Canceled) {
		return "canceled"
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno.Error()
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		return oe.Err.Error()
	}
	return err.Error()
}

func isTimeout(ctx context.Context, err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	// A connection closed by the context watcher surfaces as a plain
	// "use of closed connection" error.
	return ctx.Err() == context.DeadlineExceeded
}
