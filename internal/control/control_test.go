package control

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

type fakeHandler struct{ st *Status }

func (f fakeHandler) Status(context.Context) (*Status, error) { return f.st, nil }

func (f fakeHandler) Admin(_ context.Context, r AdminRequest) (string, error) {
	if r.Service != "web" {
		return "", errors.New("no virtual service " + strconv.Quote(r.Service))
	}
	return r.Op + " " + r.Real + " " + strconv.Itoa(r.Weight), nil
}

func serve(t *testing.T, path string) *Server {
	t.Helper()
	s, err := Listen(path, fakeHandler{&Status{Node: "lb1", Cluster: "c"}}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Serve(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return s
}

func rawCall(t *testing.T, path, line string) string {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, line)
	resp, _ := bufio.NewReader(c).ReadString('\n')
	return resp
}

func TestSocketAndRequests(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run")
	path := filepath.Join(dir, "ctl.sock")
	serve(t, path)
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket: %v, %v", fi, err)
	}
	if di, _ := os.Stat(dir); di.Mode().Perm() != 0o700 {
		t.Errorf("directory mode %v, want 0700", di.Mode().Perm())
	}
	st, err := GetStatus(path, time.Second)
	if err != nil || st.Node != "lb1" {
		t.Fatalf("GetStatus = %+v, %v", st, err)
	}
	for _, tc := range []struct{ req, want string }{
		{"not json\n", `"error":"bad request: invalid character`},
		{`{"cmd":"reboot"}` + "\n", `"error":"unknown command \"reboot\""`},
		{strings.Repeat("x", 70<<10) + "\n", `"error":"bad request`},
		{`{"cmd":"drain","service":"db","real":"10.0.0.1:80"}` + "\n", `"error":"no virtual service \"db\""`},
	} {
		if got := rawCall(t, path, tc.req); !strings.Contains(got, tc.want) || !strings.Contains(got, `"ok":false`) {
			t.Errorf("request %.20q: answer %q, want %q", tc.req, got, tc.want)
		}
	}
	// Admin commands reach the handler with their arguments.
	for _, tc := range []struct{ req, want string }{
		{`{"cmd":"drain","service":"web","real":"10.0.0.1:80"}`, "drain 10.0.0.1:80 0"},
		{`{"cmd":"set-weight","service":"web","real":"10.0.0.1","weight":7}`, "set-weight 10.0.0.1 7"},
		{`{"cmd":"enable","service":"web","real":"10.0.0.1"}`, "enable 10.0.0.1 0"},
	} {
		if got := rawCall(t, path, tc.req+"\n"); !strings.Contains(got, `"ok":true`) || !strings.Contains(got, `"message":"`+tc.want+`"`) {
			t.Errorf("request %s: answer %q, want message %q", tc.req, got, tc.want)
		}
	}
	// The daemon still serves after bad requests.
	if _, err := GetStatus(path, time.Second); err != nil {
		t.Fatal(err)
	}
	// A second daemon on the same path is refused; the first keeps it.
	if _, err := Listen(path, fakeHandler{}, slog.New(slog.NewTextHandler(io.Discard, nil))); !errors.Is(err, ErrRunning) {
		t.Errorf("second Listen: %v, want ErrRunning", err)
	}
	if _, err := GetStatus(path, time.Second); err != nil {
		t.Fatalf("first daemon lost its socket: %v", err)
	}
}

func TestStaleSocketIsReplaced(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ctl.sock")
	// A socket file nobody listens on, as a crashed daemon leaves it.
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	serve(t, path)
	if _, err := GetStatus(path, time.Second); err != nil {
		t.Fatalf("after replacing a stale socket: %v", err)
	}
}

func TestNoDaemon(t *testing.T) {
	_, err := GetStatus(filepath.Join(t.TempDir(), "none.sock"), time.Second)
	if err == nil || !strings.Contains(err.Error(), "no hadirector daemon answers") {
		t.Errorf("err = %v", err)
	}
}
