package heartbeat

import (
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestConnPin checks what the pin promises (fdpin.go): the liveness
// connection's socket is also held on a descriptor above those opened
// later, close-on-exec, and closing the connection closes the pin too, so
// the FIN still leaves on close. BenchmarkLivenessKillToLost/packets
// measures what it is for.
func TestConnPin(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	peer, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()

	if pinFloor() < 0 {
		t.Skip("RLIMIT_NOFILE too small for a pin: connections are not pinned")
	}
	c := &lconn{nc: nc, pin: pinHigh(nc)}
	if c.pin <= 0 {
		t.Fatalf("no pin (descriptor floor %d)", pinFloor())
	}
	later, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(later)
	if later >= c.pin {
		t.Errorf("a socket opened after the pin got descriptor %d, above the pin %d", later, c.pin)
	}

	var connFD int
	rc, err := nc.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	_ = rc.Control(func(fd uintptr) { connFD = int(fd) })
	want, err1 := os.Readlink("/proc/self/fd/" + strconv.Itoa(connFD))
	got, err2 := os.Readlink("/proc/self/fd/" + strconv.Itoa(c.pin))
	if err := errors.Join(err1, err2); err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("pin %d is %s, the connection %s", c.pin, got, want)
	}
	if fl, err := unix.FcntlInt(uintptr(c.pin), unix.F_GETFD, 0); err != nil || fl&unix.FD_CLOEXEC == 0 {
		t.Errorf("pin flags %#x, %v: want close-on-exec", fl, err)
	}

	c.close()
	c.close() // idempotent
	if _, err := unix.FcntlInt(uintptr(c.pin), unix.F_GETFD, 0); !errors.Is(err, unix.EBADF) {
		t.Errorf("pin still open after close (%v)", err)
	}
	_ = peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := peer.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("peer read %v after close, want EOF", err)
	}
}
