package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/hadirector/hadirector/integration/netlab"
	"golang.org/x/sys/unix"
)

// The probe: a tiny TCP server on every director (answers its own name),
// and a client that opens a new non-blocking TCP connection to VIP:port
// every millisecond from one OS thread inside the client's namespace
// (timerfd + epoll), abandons each after connTimeout and records when and
// by whom it was answered.

const (
	probePort   = 8080
	connTimeout = 200 * time.Millisecond
	probeTick   = time.Millisecond
)

// Who answered a connection.
const (
	whoNone uint8 = iota
	whoD1
	whoD2
	whoOther
)

// How a connection ended.
const (
	endOK uint8 = iota
	endTimeout
	endRefused
	endEOF
	endError  // another socket error
	endCancel // still open when the client stopped
)

// connRec is one probe connection; times are offsets from the client's
// base (monotonic).
type connRec struct {
	start, end time.Duration
	who        uint8
	how        uint8
	fd         int32
	done       bool
}

// serverEnv, when set, makes this program the probe server: it answers
// every TCP connection on 0.0.0.0:probePort with the variable's value and
// a newline, then closes it. Bound to the wildcard, it answers for the VIP
// as soon as the VIP is on the node. It runs as its own process in each
// director's namespace (like the baseline's servers), so that neither the
// bench's Go runtime nor a director's death affects it.
const serverEnv = "HFB_SERVE_NAME"

func serveMain(name string) int {
	l, err := net.Listen("tcp4", fmt.Sprintf("0.0.0.0:%d", probePort))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	msg := []byte(name + "\n")
	for {
		c, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return 0
			}
			time.Sleep(time.Millisecond)
			continue
		}
		c.Write(msg)
		c.Close()
	}
}

// startServer runs the probe server in node and waits until it listens.
func startServer(ctx context.Context, node *netlab.Node, rt bool) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := node.Command(ctx, self)
	if rt {
		cmd = node.Command(ctx, "chrt", "-f", strconv.Itoa(rtPriority), self)
	}
	cmd.Env = append(os.Environ(), serverEnv+"="+node.Name())
	cmd.Stderr = os.Stderr
	if _, err := node.StartCmd(cmd); err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return node.WaitTCP(wctx, fmt.Sprintf("127.0.0.1:%d", probePort))
}

// rtPriority is the SCHED_FIFO priority of the probe (client thread and
// servers) with -rt: the measuring instrument should not be what a busy
// machine delays; the directors keep the normal policy.
const rtPriority = 10

// prober is a running client.
type prober struct {
	base time.Time
	stop atomic.Bool
	done chan struct{}
	recs []connRec
	err  error
	rt   bool
}

// startProber starts the client loop in node's namespace, probing vip.
func startProber(node *netlab.Node, vip [4]byte, base time.Time, rt bool) *prober {
	p := &prober{base: base, rt: rt, done: make(chan struct{}), recs: make([]connRec, 0, 16384)}
	go func() {
		defer close(p.done)
		defer func() {
			if r := recover(); r != nil {
				p.err = fmt.Errorf("prober panic: %v", r)
			}
		}()
		p.err = node.Do(func() error { return p.loop(vip) })
	}()
	return p
}

// Stop ends the loop: no new connections, up to linger for answers to
// those in flight, then everything still open is closed. It returns the
// records.
func (p *prober) Stop() ([]connRec, error) {
	p.stop.Store(true)
	<-p.done
	return p.recs, p.err
}

func (p *prober) now() time.Duration { return time.Since(p.base) }

func (p *prober) loop(vip [4]byte) error {
	if p.rt {
		// This OS thread only (Do locked it); back to normal before it
		// returns to the Go runtime's pool.
		if err := unix.SchedSetAttr(0, &unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_FIFO, Priority: rtPriority}, 0); err != nil {
			return fmt.Errorf("SCHED_FIFO: %w", err)
		}
		defer unix.SchedSetAttr(0, &unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: 0 /* SCHED_OTHER */}, 0)
	}
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return fmt.Errorf("epoll: %w", err)
	}
	defer unix.Close(ep)
	tfd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err != nil {
		return fmt.Errorf("timerfd: %w", err)
	}
	defer unix.Close(tfd)
	tick := unix.NsecToTimespec(int64(probeTick))
	if err := unix.TimerfdSettime(tfd, 0, &unix.ItimerSpec{Interval: tick, Value: tick}, nil); err != nil {
		return fmt.Errorf("timerfd_settime: %w", err)
	}
	if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, tfd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(tfd), Pad: -1}); err != nil {
		return err
	}
	sa := &unix.SockaddrInet4{Port: probePort, Addr: vip}
	var (
		events  = make([]unix.EpollEvent, 256)
		buf     = make([]byte, 64)
		tbuf    = make([]byte, 8)
		queue   []int // record indexes in start order, for timeouts
		open    int
		stopAt  time.Duration
		linger  = 50 * time.Millisecond
		stopped bool
	)
	finish := func(i int, who, how uint8) {
		r := &p.recs[i]
		if r.done {
			return
		}
		r.end, r.who, r.how, r.done = p.now(), who, how, true
		unix.Close(int(r.fd))
		open--
	}
	startConn := func() {
		now := p.now()
		i := len(p.recs)
		p.recs = append(p.recs, connRec{start: now, fd: -1})
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			p.recs[i].end, p.recs[i].how, p.recs[i].done = now, endError, true
			return
		}
		// Close with RST: no TIME_WAIT anywhere, ports reusable at once.
		unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
		p.recs[i].fd = int32(fd)
		open++
		err = unix.Connect(fd, sa)
		if err != nil && err != unix.EINPROGRESS {
			how := endError
			if err == unix.ECONNREFUSED {
				how = endRefused
			}
			finish(i, whoNone, how)
			return
		}
		if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: int32(fd), Pad: int32(i)}); err != nil {
			finish(i, whoNone, endError)
			return
		}
		queue = append(queue, i)
	}
	for {
		if !stopped && p.stop.Load() {
			stopped, stopAt = true, p.now()
			unix.TimerfdSettime(tfd, 0, &unix.ItimerSpec{}, nil)
		}
		if stopped && (open == 0 || p.now()-stopAt > linger) {
			for _, i := range queue {
				finish(i, whoNone, endCancel)
			}
			return nil
		}
		n, err := unix.EpollWait(ep, events, 20)
		if err != nil && err != unix.EINTR {
			return fmt.Errorf("epoll_wait: %w", err)
		}
		for _, ev := range events[:max(n, 0)] {
			if ev.Pad == -1 {
				unix.Read(tfd, tbuf)
				if !stopped {
					startConn()
				}
				continue
			}
			i := int(ev.Pad)
			if i < 0 || i >= len(p.recs) || p.recs[i].done || p.recs[i].fd != ev.Fd {
				continue
			}
			fd := int(ev.Fd)
			if ev.Events&unix.EPOLLIN != 0 {
				m, rerr := unix.Read(fd, buf)
				switch {
				case m > 0:
					who := whoOther
					switch string(bytes.TrimSpace(buf[:m])) {
					case "d1":
						who = whoD1
					case "d2":
						who = whoD2
					}
					finish(i, who, endOK)
					continue
				case m == 0 && rerr == nil:
					finish(i, whoNone, endEOF)
					continue
				case rerr == unix.EAGAIN:
					continue
				}
			}
			if ev.Events&(unix.EPOLLERR|unix.EPOLLHUP|unix.EPOLLRDHUP|unix.EPOLLIN) != 0 {
				soerr, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
				how := endError
				if unix.Errno(soerr) == unix.ECONNREFUSED {
					how = endRefused
				}
				finish(i, whoNone, how)
			}
		}
		// Abandon connections older than connTimeout (start order = deadline order).
		now := p.now()
		k := 0
		for k < len(queue) {
			r := &p.recs[queue[k]]
			if r.done {
				k++
				continue
			}
			if now-r.start < connTimeout {
				break
			}
			finish(queue[k], whoNone, endTimeout)
			k++
		}
		queue = queue[k:]
	}
}
