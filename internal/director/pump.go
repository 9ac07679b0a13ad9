package director

import (
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The advert pump: an idle master's wakings, each only to send an advert
// that repeats the last one.
//
// Measured on the failover bench's host (a 2-CPU virtual machine; a lone
// master at 10 ms adverts, beside a minimal Go loop that sends a prebuilt
// advert from the same kind of epoll wait): the Go runtime's part of a
// waking, park and netpoll, cost what keepalived's whole user-space part
// does, and the kernel's part was the same for both; but the engine's turn
// (drain the readers, look at the queues, tick every machine, carry out
// its actions, marshal and frame the advert, work out the next deadline)
// cost five times the minimal loop's user time, and made the daemon about
// 1.2× the minimal loop. Little of it is instructions: a waking every
// 10 ms finds caches and TLBs cold, and every structure and function the
// turn touches costs a miss (profiles showed no hot spot, only dozens of
// functions of about 1 % each).
//
// So when a slow turn ends with a master's advert sent unchanged, to one
// destination, the engine sets the pump: the next waking, if nothing else
// can be behind it (no input queued, no reader with a packet, no other
// deadline due), resends that packet (AdvertSocket's Resend) and re-arms
// the timer, touching the pump, the waiter and the socket's send state,
// and nothing else. Any other waking stops the pump first: the machine
// learns of the adverts sent (vrrp.Machine.Advertised), so it is exactly
// as if its own Tick had sent them, and the turn goes on as before.

// Resender is an AdvertSocket that can send its last packet again
// (heartbeat.VRRPSocket.Resend).
type Resender interface {
	Resend() error
}

type pump struct {
	in       *instance // nil: off
	sock     Resender
	interval time.Duration
	due      time.Time // next advert
	other    time.Time // earliest other deadline of the engine (zero: none)
	last     time.Time // the pump's last advert (zero: none since it was set)
	fds      []int     // the readers' descriptors
}

// pumpTurn is a waking that only the pump's advert is behind: it sends the
// advert and re-arms the timer, and reports true. It reports false when
// the waking may be for anything else, having sent nothing, or when the
// slow turn must go on after the send (an input queued meanwhile).
func (e *Engine) pumpTurn(w *waiter) bool {
	p := &e.pump
	if p.in == nil || w.pending.Load() {
		return false
	}
	for _, fd := range p.fds {
		if readable(fd) {
			return false
		}
	}
	now := e.opts.Now()
	if now.Before(p.due) || (!p.other.IsZero() && !now.Before(p.other)) {
		return false
	}
	if p.sock.Resend() != nil {
		return false // the slow turn sends it, and logs why not
	}
	p.last = now
	p.due = now.Add(p.interval)
	if w.arm(earlier(p.due, p.other), now) != nil {
		return false // the slow turn arms it again, and stops on the error
	}
	// As at the end of a slow turn (see turn).
	w.sleeping.Store(true)
	if w.pending.Load() {
		w.sleeping.Store(false)
		return false
	}
	return true
}

// stopPump hands the adverts the pump sent to their machine. A slow turn
// calls it first.
func (e *Engine) stopPump() {
	p := &e.pump
	if p.in != nil && !p.last.IsZero() {
		p.in.machine.Advertised(p.last)
	}
	p.in, p.sock, p.last = nil, nil, time.Time{}
}

// setPump sets the pump for in, whose unchanged advert the turn ending at
// now has sent (s.advertised), if its next waking is that advert's.
func (e *Engine) setPump(s *state, in *instance, prio uint8) {
	m := in.machine
	rs, ok := in.io.Socket.(Resender)
	if !ok || m.Stopping() || m.Priority() != prio {
		return
	}
	due, other := m.AdvertTimers()
	if due.IsZero() {
		return
	}
	other = earlier(other, e.deadlineExcept(s, in))
	p := &e.pump
	p.in, p.sock, p.interval, p.due, p.other, p.last = in, rs, in.machine.AdvertInterval(), due, other, time.Time{}
}

// readable says whether a datagram socket has a packet queued, without
// taking it (a zero-length peek), and without telling the scheduler (see
// waiter.go).
func readable(fd int) bool {
	_, _, e := syscall.RawSyscall6(unix.SYS_RECVFROM, uintptr(fd), 0, 0, unix.MSG_PEEK|unix.MSG_DONTWAIT, 0, 0)
	return e != unix.EAGAIN && e != unix.EWOULDBLOCK
}
