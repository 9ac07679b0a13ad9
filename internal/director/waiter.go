package director

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// How the engine loop sleeps, and why not in a select.
//
// An idle director does one thing per advert interval: send an advert
// (master) or take one in (backup). With a select over a time.Timer and a
// channel fed by a socket's reader goroutine, each of those costs a Go
// timer expiry, a hop from the reader goroutine to the engine and, with
// more than one P, a second thread woken to spin; every syscall.Syscall
// also wakes a sleeping sysmon (entersyscall does, so that it can retake
// the P should the call block). On the measuring host that was five or six
// thread switches and about ten system calls per advert, 2–7× keepalived's
// idle CPU, which does one switch and four calls.
//
// waiter instead gives the loop one descriptor to sleep on: an epoll
// instance holding a timerfd (the loop's next deadline), an eventfd
// (anything queued on the engine's channels) and the VRRP sockets the
// engine reads itself (PacketReader). Go's netpoller watches that
// descriptor like a socket, so the loop parks without a Go timer and
// resumes on the thread that saw the event. The loop never asks the epoll
// instance what happened: each waking it drains every reader (one
// recvmmsg each, what an epoll_wait would cost with one or two sockets),
// and compares the clock with its deadlines. The timerfd and the eventfd
// are edge-triggered and never read, as every expiry and every write wakes
// the instance's watchers (ep_poll_callback) whatever is pending. Every
// call made while awake is non-blocking and made with RawSyscall, so
// sysmon sleeps on; and the loop runs inside one RawConn.Read (see
// Engine.Run), so readiness is not reset, and checked again, before each
// sleep. A master's advert then costs one thread switch and five system
// calls (the netpoller's two, recvmmsg, sendmsg, timerfd_settime). A
// backup does not wake for its master's adverts while they repeat the
// last one: they wait, queued, for its Master_Down deadline
// (heartbeat/routine.go, RoutineSocket).

// PacketReader is a packet source the engine reads itself, on its own
// goroutine, when Fd is readable: Drain hands queued packets to fn and
// returns when the socket has no more, or with more set when it stopped
// early (a cap) and the socket is still readable. It must leave Fd
// non-blocking, may be called when nothing is queued, and must not make
// blocking or scheduler-visible system calls (see above). A packet's
// Payload may be the reader's buffer: fn does not keep it.
type PacketReader interface {
	Fd() int
	Drain(fn func(Packet)) (more bool)
}

type waiter struct {
	ep       *os.File // the epoll instance, in Go's netpoller
	rc       syscall.RawConn
	timerFd  int
	wakeFd   int
	armed    time.Time // deadline the timerfd is set for (zero: disarmed)
	sleeping atomic.Bool
	// pending: an input was queued since the loop last looked at its
	// queues (pump.go: the pump's turn looks at this flag, not the queues).
	pending atomic.Bool
}

// newWaiter builds the epoll instance for readers.
func newWaiter(readers []PacketReader) (_ *waiter, err error) {
	w := &waiter{timerFd: -1, wakeFd: -1}
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("director: epoll: %w", err)
	}
	defer func() {
		if err != nil {
			w.close()
			if w.ep == nil {
				unix.Close(epfd)
			}
		}
	}()
	if w.timerFd, err = unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC); err != nil {
		return nil, fmt.Errorf("director: timerfd: %w", err)
	}
	if w.wakeFd, err = unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC); err != nil {
		return nil, fmt.Errorf("director: eventfd: %w", err)
	}
	add := func(fd int, events uint32) error {
		return unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: events})
	}
	// Edge-triggered and never read (see above): their counts are
	// meaningless here. An eventfd's counter would need 2^64 wakes to fill.
	if err = errors.Join(add(w.timerFd, unix.EPOLLIN|unix.EPOLLET), add(w.wakeFd, unix.EPOLLIN|unix.EPOLLET)); err != nil {
		return nil, fmt.Errorf("director: epoll_ctl: %w", err)
	}
	for i, r := range readers {
		if err = add(r.Fd(), unix.EPOLLIN); err != nil {
			return nil, fmt.Errorf("director: epoll_ctl (reader %d): %w", i, err)
		}
	}
	// Non-blocking, so that os.NewFile registers it with the netpoller.
	if err = unix.SetNonblock(epfd, true); err != nil {
		return nil, err
	}
	w.ep = os.NewFile(uintptr(epfd), "engine-epoll")
	if w.rc, err = w.ep.SyscallConn(); err != nil {
		return nil, err
	}
	return w, nil
}

// wake makes a sleeping loop resume. Any goroutine may call it, after
// queueing its input; it costs nothing while the loop is awake (the loop
// looks at its channels once more after announcing that it will sleep).
func (w *waiter) wake() {
	w.pending.Store(true)
	if !w.sleeping.Load() {
		return
	}
	one := [8]byte{1}
	_, _ = rawRW(unix.SYS_WRITE, w.wakeFd, one[:]) // EAGAIN: the counter is full, a wake is pending anyway
}

// arm sets the timerfd for deadline (zero: disarm), unless it is set for
// it already. The loop arms only deadlines still ahead, so an expired
// setting never matches: no need to learn that the timer fired.
func (w *waiter) arm(deadline, now time.Time) error {
	if deadline.Equal(w.armed) {
		return nil
	}
	var spec unix.ItimerSpec // zero: disarm
	if !deadline.IsZero() {
		spec.Value = unix.NsecToTimespec(max(deadline.Sub(now), time.Microsecond).Nanoseconds())
	}
	if _, _, e := syscall.RawSyscall6(unix.SYS_TIMERFD_SETTIME, uintptr(w.timerFd), 0, uintptr(unsafe.Pointer(&spec)), 0, 0, 0); e != 0 {
		return fmt.Errorf("director: timerfd_settime: %w", e)
	}
	w.armed = deadline
	return nil
}

func (w *waiter) close() {
	if w.ep != nil {
		w.ep.Close()
	}
	for _, fd := range []int{w.timerFd, w.wakeFd} {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
}

// rawRW reads or writes a non-blocking descriptor without telling the
// scheduler (see the top of this file).
func rawRW(trap uintptr, fd int, b []byte) (int, syscall.Errno) {
	r, _, e := syscall.RawSyscall(trap, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	return int(r), e
}
