package director

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// How the engine loop sleeps, and why not in a select.
//
// An idle director does one thing per advert interval: send an advert
// (master) or take one in (backup). With a select over a time.Timer and a
// channel fed by a socket's reader goroutine, each of those costs a Go
// timer expiry (which also wakes sysmon), a hop from the reader goroutine
// to the engine and, with more than one P, a second thread woken to spin:
// about ten system calls and several thread switches per advert, 2–7×
// keepalived's idle CPU on the measuring host.
//
// waiter instead gives the loop one descriptor to sleep on: an epoll
// instance holding a timerfd (the loop's next deadline), an eventfd
// (anything queued on the engine's channels) and the VRRP sockets the
// engine reads itself (PacketReader). Go's netpoller watches that
// descriptor like a socket, so the loop parks without a Go timer and
// wakes on the thread that saw the event, and nothing else in the process
// wakes per advert.

// PacketReader is a packet source the engine reads itself, on its own
// goroutine, when Fd is readable: Drain hands every queued packet to fn
// and returns when the socket has no more (it must leave Fd non-blocking
// and may be called when nothing is queued).
type PacketReader interface {
	Fd() int
	Drain(fn func(Packet))
}

type waiter struct {
	ep       *os.File // the epoll instance, in Go's netpoller
	rc       syscall.RawConn
	timerFd  int
	wakeFd   int
	armed    time.Time // deadline the timerfd is set for (zero: disarmed)
	sleeping atomic.Bool
	events   [16]unix.EpollEvent
	ready    []int // reader indices with input, from the last wait
	nReaders int
}

const (
	waitTimer = -1
	waitWake  = -2
)

// newWaiter builds the epoll instance for readers (their index is the
// event's tag).
func newWaiter(readers []PacketReader) (_ *waiter, err error) {
	w := &waiter{timerFd: -1, wakeFd: -1, nReaders: len(readers)}
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
	add := func(fd int, tag int32) error {
		return unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: tag})
	}
	if err = errors.Join(add(w.timerFd, waitTimer), add(w.wakeFd, waitWake)); err != nil {
		return nil, fmt.Errorf("director: epoll_ctl: %w", err)
	}
	for i, r := range readers {
		if err = add(r.Fd(), int32(i)); err != nil {
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

// wake makes a sleeping wait return. Any goroutine may call it, after
// queueing its input; it costs nothing while the loop is awake (the loop
// looks at its channels once more after announcing that it will sleep).
func (w *waiter) wake() {
	if !w.sleeping.Load() {
		return
	}
	var one = [8]byte{1}
	_, _ = unix.Write(w.wakeFd, one[:]) // EAGAIN: the counter is full, a wake is pending anyway
}

// wait sleeps until deadline (zero: no deadline), a wake, or a reader
// with input; it returns the readers to drain. The caller has set
// sleeping and looked at its channels after that.
func (w *waiter) wait(deadline, now time.Time) ([]int, error) {
	if !deadline.Equal(w.armed) {
		var spec unix.ItimerSpec // zero: disarm
		if !deadline.IsZero() {
			spec.Value = unix.NsecToTimespec(max(deadline.Sub(now), time.Microsecond).Nanoseconds())
		}
		if err := unix.TimerfdSettime(w.timerFd, 0, &spec, nil); err != nil {
			return nil, fmt.Errorf("director: timerfd_settime: %w", err)
		}
		w.armed = deadline
	}
	w.ready = w.ready[:0]
	var werr error
	err := w.rc.Read(func(fd uintptr) bool {
		n, err := unix.EpollWait(int(fd), w.events[:], 0)
		if err != nil {
			if err == unix.EINTR {
				return false
			}
			werr = err
			return true
		}
		if n == 0 {
			return false // park until the epoll descriptor signals
		}
		var buf [8]byte
		for _, ev := range w.events[:n] {
			switch tag := int(ev.Fd); tag {
			case waitTimer:
				_, _ = unix.Read(w.timerFd, buf[:])
				w.armed = time.Time{} // fired: a one-shot
			case waitWake:
				_, _ = unix.Read(w.wakeFd, buf[:])
			default:
				if tag >= 0 && tag < w.nReaders {
					w.ready = append(w.ready, tag)
				}
			}
		}
		return true
	})
	return w.ready, errors.Join(err, werr)
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
