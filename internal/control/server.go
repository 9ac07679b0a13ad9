package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// Handler answers requests; the daemon's engine implements it.
type Handler interface {
	Status(ctx context.Context) (*Status, error)
	// Admin carries out drain, enable or set-weight and says what it did.
	Admin(ctx context.Context, req AdminRequest) (string, error)
}

// Server serves the control socket.
type Server struct {
	ln      *net.UnixListener
	path    string
	handler Handler
	log     *slog.Logger
	wg      sync.WaitGroup
}

// ErrRunning means another daemon already answers on the socket.
var ErrRunning = errors.New("another hadirector is already running")

// Listen creates the socket at path: its directory is made root-only (0700)
// if it does not exist, the socket itself is mode 0600. A stale socket left
// by a crashed daemon is removed; a live one is refused with ErrRunning.
func Listen(path string, h Handler, log *slog.Logger) (*Server, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("control socket directory: %w", err)
	}
	if _, err := os.Lstat(path); err == nil {
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("%w: %s answers", ErrRunning, path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("removing stale control socket: %w", err)
		}
	}
	// Create the socket with no permissions for group and others from the
	// start (umask), then set the exact mode: there is no moment in which
	// another user could connect.
	old := syscall.Umask(0o177)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	ln.SetUnlinkOnClose(true)
	return &Server{ln: ln, path: path, handler: h, log: log}, nil
}

// Path is the socket's path.
func (s *Server) Path() string { return s.path }

// Serve accepts connections until ctx ends or Close is called.
func (s *Server) Serve(ctx context.Context) {
	go func() {
		<-ctx.Done()
		s.ln.Close()
	}()
	for {
		c, err := s.ln.AcceptUnix()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				s.wg.Wait()
				return
			}
			s.log.Warn("control socket accept", "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serveConn(ctx, c)
		}()
	}
}

// Close stops listening and removes the socket file.
func (s *Server) Close() error { return s.ln.Close() }

func (s *Server) serveConn(ctx context.Context, c *net.UnixConn) {
	defer c.Close()
	if err := peerAllowed(c); err != nil {
		s.log.Warn("control socket: refused a client", "err", err)
		return
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(&limitedReader{r: c, n: 64 << 10}).ReadBytes('\n')
	if err != nil && len(line) == 0 {
		return
	}
	var req Request
	resp := Response{}
	if err := json.Unmarshal(line, &req); err != nil {
		resp.Error = "bad request: " + err.Error()
	} else {
		resp = s.handle(ctx, req)
	}
	out, _ := json.Marshal(resp)
	c.Write(append(out, '\n'))
}

func (s *Server) handle(ctx context.Context, req Request) Response {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	switch req.Cmd {
	case "status":
		st, err := s.handler.Status(ctx)
		if err != nil {
			return Response{Error: err.Error()}
		}
		return Response{OK: true, Status: st}
	case "drain", "enable", "set-weight":
		msg, err := s.handler.Admin(ctx, AdminRequest{Op: req.Cmd, Service: req.Service, Real: req.Real, Weight: req.Weight})
		if err != nil {
			return Response{Error: err.Error()}
		}
		return Response{OK: true, Message: msg}
	default:
		return Response{Error: fmt.Sprintf("unknown command %q", req.Cmd)}
	}
}

// peerAllowed admits root and the daemon's own user. The socket's mode
// already keeps others out; this also holds if someone loosens the mode.
func peerAllowed(c *net.UnixConn) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var cred *syscall.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil {
		return err
	}
	if credErr != nil {
		return credErr
	}
	if cred.Uid != 0 && int(cred.Uid) != os.Geteuid() {
		return fmt.Errorf("uid %d (pid %d) is not allowed", cred.Uid, cred.Pid)
	}
	return nil
}

type limitedReader struct {
	r interface{ Read([]byte) (int, error) }
	n int
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, errors.New("request too long")
	}
	if len(p) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= n
	return n, err
}
