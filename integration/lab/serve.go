package lab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hadirector/hadirector/integration/lvs"
)

// The step by step lab (`hadirector lab up`, then status, fail, down): a
// background process, `hadirector lab serve`, holds the lab and the lock,
// and answers one command per connection on SocketPath. Its story until
// the lab is up goes to LogPath, which `up` shows.
var (
	SocketPath = filepath.Join(StateDir, "lab.sock")
	LogPath    = StateDir + ".log" // outside StateDir, which Start makes afresh
)

// rcPrefix starts the last line of every answer: the command's exit code.
const rcPrefix = "@rc "

// ErrNoLab: no lab is up to take a command.
var ErrNoLab = errors.New("no lab is up (start one with `hadirector lab up`)")

// Serve is `hadirector lab serve`: it takes the lock, starts the lab (its
// story goes to o.Out), and answers status, fail and down on SocketPath
// until down or ctx's end, then takes everything down.
func Serve(ctx context.Context, o Options) error {
	unlock, err := Lock(LockPath)
	if err != nil {
		return err
	}
	defer unlock()
	defer os.Remove(LogPath)
	l, err := Start(ctx, o)
	if err != nil {
		return err
	}
	defer l.Close()
	ln, err := net.Listen("unix", SocketPath)
	if err != nil {
		return err
	}
	defer ln.Close()
	context.AfterFunc(ctx, func() { ln.Close() })
	for {
		c, err := ln.Accept()
		if err != nil {
			return ctx.Err() // the listener closes only when ctx ends
		}
		if down := l.answer(ctx, c); down {
			return nil
		}
	}
}

// answer runs one command from c and reports whether it was down.
func (l *Lab) answer(ctx context.Context, c net.Conn) (down bool) {
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return false
	}
	_ = c.SetReadDeadline(time.Time{})
	rc := 0
	cmd := strings.TrimSpace(line)
	verb, arg, _ := strings.Cut(cmd, " ")
	switch verb {
	case "status":
		l.Status(ctx, c)
	case "fail":
		f, err := ParseFailure(arg)
		if err != nil {
			fmt.Fprintf(c, "hadirector lab fail: %v\n", err)
			rc = 2
			break
		}
		if _, err := l.Fail(ctx, c, f); err != nil {
			fmt.Fprintf(c, "hadirector lab fail: %v\n", err)
			rc = 1
		}
	case "down":
		if err := l.down(c); err != nil {
			fmt.Fprintf(c, "hadirector lab down: %v\n", err)
			rc = 1
		}
		down = true
	default:
		fmt.Fprintf(c, "unknown lab command %q\n", cmd)
		rc = 2
	}
	fmt.Fprintf(c, "%s%d\n", rcPrefix, rc)
	return down
}

// down stops the lab, telling w as well as the log.
func (l *Lab) down(w io.Writer) error {
	l.o.Out = io.MultiWriter(l.o.Out, w)
	return l.Close()
}

// Status says who is master, what failed, and what the traffic sees, then
// shows the master's `hadirector status`.
func (l *Lab) Status(ctx context.Context, out io.Writer) {
	var master *lvs.Daemon
	for _, n := range []string{"lb1", "lb2"} {
		d := l.daemons[n]
		select {
		case <-d.Exited():
			say(out, "%s: its daemon is dead (%v)", n, d.Proc.Wait())
			continue
		default:
		}
		st, err := d.Status(ctx)
		if in := lvs.Instance(st, lvs.InstanceName); err == nil && in != nil {
			say(out, "%s: %s (priority %d) since %s", n, in.State, in.Priority, in.LastTransition.Format("15:04:05.000"))
			if in.State == "MASTER" {
				master = d
			}
		} else {
			say(out, "%s: no status: %v", n, err)
		}
	}
	l.mu.Lock()
	sum := l.summary
	l.mu.Unlock()
	if sum != nil {
		fmt.Fprintln(out)
		_ = sum.Print(out, l.bed.RealNames())
	} else if l.pr != nil {
		samples := l.pr.since(l.trafficStart)
		w := ClientWaits(samples, time.Now())
		say(out, "Client: %d requests since the start, answers %s, %d failed", w.Requests, spread(tally(samples), l.bed.RealNames()), w.Failed)
		reports := make([]lvs.StreamReport, 0, len(l.streams))
		for _, s := range l.streams {
			reports = append(reports, s.Report())
		}
		sv := ConnSurvival(reports, nil)
		say(out, "Client: %d of %d long-lived connections unbroken; %d numbered messages answered", sv.Survived, sv.Conns, sv.Answered)
	}
	if master != nil {
		_ = printStatus(ctx, out, l.o.Self, master)
	}
}

// Command sends a step command (status, fail [master|server|link], down)
// to the lab that is up, copies its answer to out and returns its exit
// code. After down it waits until the lab's process has ended.
func Command(ctx context.Context, cmd string, out io.Writer) (int, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", SocketPath)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return 1, ErrNoLab
		}
		return 1, err
	}
	defer c.Close()
	context.AfterFunc(ctx, func() { c.Close() })
	if _, err := fmt.Fprintln(c, cmd); err != nil {
		return 1, err
	}
	rc := -1
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), rcPrefix); ok {
			rc, _ = strconv.Atoi(v)
			break
		}
		fmt.Fprintln(out, sc.Text())
	}
	if rc < 0 {
		return 1, errors.New("the lab's process ended without an answer (see " + LogPath + ")")
	}
	if cmd == "down" {
		waitUnlocked(ctx, 30*time.Second)
	}
	return rc, nil
}

// waitUnlocked waits until nobody holds the lab's lock.
func waitUnlocked(ctx context.Context, limit time.Duration) {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if unlock, err := Lock(LockPath); err == nil {
			unlock()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Up starts `SELF lab serve ARGS...` in the background (its own session,
// so it outlives this command and the terminal's Ctrl-C), shows its story
// from LogPath until the lab is up, and returns. A second lab is refused
// before anything starts; a serve that fails shows its log; ctx's end
// (Ctrl-C) stops it, which takes everything down.
func Up(ctx context.Context, self string, args []string, out io.Writer) error {
	unlock, err := Lock(LockPath) // refuse now, with the holder's pid, rather than from the background
	if err != nil {
		return err
	}
	unlock()
	logf, err := os.OpenFile(LogPath, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	cmd := exec.Command(self, append([]string{"lab", "serve"}, args...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	logf.Close()
	if err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	logr, err := os.Open(LogPath)
	if err != nil {
		return err
	}
	defer logr.Close()
	for {
		_, _ = io.Copy(out, logr)
		if c, err := net.Dial("unix", SocketPath); err == nil {
			c.Close()
			_, _ = io.Copy(out, logr)
			say(out, "The lab is up (process %d). Next: hadirector lab status | fail [master|server|link] | down", cmd.Process.Pid)
			return nil
		}
		select {
		case err := <-exited:
			_, _ = io.Copy(out, logr)
			return fmt.Errorf("the lab did not come up: %v", err)
		case <-ctx.Done():
			_ = cmd.Process.Signal(syscall.SIGTERM)
			err := <-exited
			_, _ = io.Copy(out, logr)
			return fmt.Errorf("%w (the lab's process: %v)", ErrInterrupted, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
