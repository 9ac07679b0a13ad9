package healthcheck

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// ExecSpec checks a server by running a program: exit status 0 is healthy.
//
// The program runs with no shell, in / and in its own process group, with
// a minimal environment: PATH, HADIRECTOR_CHECK_ADDR and
// HADIRECTOR_CHECK_PORT (the target). Its output is kept (the first bytes)
// for the failure detail. When the probe's timeout nears, the whole group
// gets SIGTERM, and SIGKILL at the timeout itself; when the program exits,
// whatever it left running in its group is killed too. A process that
// leaves the group (setsid) escapes: that is beyond what a process group
// can hold.
type ExecSpec struct {
	// Command is the argv; Command[0] is an absolute path.
	Command []string
	// Dynamic: exit status 2..255 means healthy with weight status-2
	// (keepalived's misc_dynamic); 1 means unhealthy. Without Dynamic every
	// non-zero status is unhealthy.
	Dynamic bool
	// Addr and Port are passed to the program as HADIRECTOR_CHECK_ADDR and
	// HADIRECTOR_CHECK_PORT (Port 0: not set).
	Addr netip.Addr
	Port uint16
	// KillGrace is how long before the timeout SIGTERM is sent (default:
	// a tenth of the timeout, at most 1s).
	KillGrace time.Duration
}

// Key implements CheckSpec.
func (s ExecSpec) Key() string {
	var b strings.Builder
	b.WriteString("exec|")
	for i, a := range s.Command {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(strconv.Quote(a))
	}
	fmt.Fprintf(&b, "|dynamic=%t|addr=%s|port=%d|grace=%v", s.Dynamic, s.Addr, s.Port, s.KillGrace)
	return b.String()
}

// NewChecker implements CheckSpec.
func (s ExecSpec) NewChecker(*Env) (Checker, error) {
	if len(s.Command) == 0 {
		return nil, errors.New("healthcheck: exec check: empty command")
	}
	if !filepath.IsAbs(s.Command[0]) {
		return nil, fmt.Errorf("healthcheck: exec check: %q is not an absolute path (the command runs with no shell and no PATH lookup)", s.Command[0])
	}
	env := []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	if s.Addr.IsValid() {
		env = append(env, "HADIRECTOR_CHECK_ADDR="+s.Addr.String())
	}
	if s.Port != 0 {
		env = append(env, "HADIRECTOR_CHECK_PORT="+strconv.Itoa(int(s.Port)))
	}
	return &execChecker{spec: s, argv: append([]string(nil), s.Command...), env: env}, nil
}

type execChecker struct {
	spec ExecSpec
	argv []string
	env  []string
}

// outputLimit is how much of the program's combined output is kept.
const outputLimit = 512

// headBuffer keeps the first outputLimit bytes written to it.
type headBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (h *headBuffer) Write(p []byte) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if room := outputLimit - h.buf.Len(); room > 0 {
		h.buf.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

func (h *headBuffer) String() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return strings.TrimSpace(strings.ToValidUTF8(h.buf.String(), "?"))
}

func (c *execChecker) grace(timeout time.Duration) time.Duration {
	if c.spec.KillGrace > 0 {
		return min(c.spec.KillGrace, timeout)
	}
	return min(timeout/10, time.Second)
}

func (c *execChecker) Check(ctx context.Context) Result {
	start := time.Now()
	out := &headBuffer{}
	cmd := &exec.Cmd{
		Path:        c.argv[0],
		Args:        c.argv,
		Env:         c.env,
		Dir:         "/",
		Stdout:      out,
		Stderr:      out,
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true},
		// Bounds the wait for an output pipe held open by a process that
		// left the group.
		WaitDelay: 50 * time.Millisecond,
	}
	if err := cmd.Start(); err != nil {
		return failed(start, "cannot start: "+err.Error())
	}
	pgid := cmd.Process.Pid // Setpgid: the group's id is the leader's pid

	exited := make(chan struct{})
	go func() { waitExited(pgid); close(exited) }()

	var termAt, killAt <-chan time.Time
	if dl, ok := ctx.Deadline(); ok {
		timeout := dl.Sub(start)
		tt := time.NewTimer(time.Until(dl.Add(-c.grace(timeout))))
		defer tt.Stop()
		kt := time.NewTimer(time.Until(dl))
		defer kt.Stop()
		termAt, killAt = tt.C, kt.C
	}
	timedOut, canceled := false, false
wait:
	for {
		select {
		case <-exited:
			break wait
		case <-termAt:
			termAt = nil
			timedOut = true
			_ = syscall.Kill(-pgid, syscall.SIGTERM)
		case <-killAt:
			timedOut = true
			if !killAndWait(pgid, exited) {
				go reapLater(cmd, pgid, exited)
				return Result{Detail: "timeout: process group killed, but the process has not exited yet", Duration: time.Since(start)}
			}
			break wait
		case <-ctx.Done():
			if ctx.Err() == context.DeadlineExceeded {
				continue // killAt handles it, at the same instant
			}
			canceled = true
			if !killAndWait(pgid, exited) {
				go reapLater(cmd, pgid, exited)
				return Result{Detail: "canceled", Duration: time.Since(start)}
			}
			break wait
		}
	}
	// The leader has exited and is not reaped yet, so its pid — the
	// group's id — cannot have been reused: kill whatever is left in the
	// group (background children of the check).
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	werr := cmd.Wait()
	dur := time.Since(start)

	switch {
	case canceled:
		return Result{Detail: "canceled", Duration: dur}
	case timedOut:
		return Result{Detail: "timeout after " + dur.Round(time.Millisecond).String() +
			": process group killed" + c.outputSuffix(out), Duration: dur}
	}
	ps := cmd.ProcessState
	if ps == nil {
		return Result{Detail: "wait: " + fmt.Sprint(werr), Duration: dur}
	}
	ws, _ := ps.Sys().(syscall.WaitStatus)
	if ws.Signaled() {
		return Result{Detail: "killed by signal " + ws.Signal().String() + c.outputSuffix(out), Duration: dur}
	}
	code := ws.ExitStatus()
	switch {
	case code == 0:
		return Result{OK: true, Detail: "exit 0", Duration: dur}
	case c.spec.Dynamic && code >= 2:
		return Result{OK: true, Detail: "exit " + strconv.Itoa(code) + ": weight " + strconv.Itoa(code-2),
			Duration: dur, Weight: code - 2, HasWeight: true}
	}
	return Result{Detail: "exit " + strconv.Itoa(code) + c.outputSuffix(out), Duration: dur}
}

func (c *execChecker) outputSuffix(out *headBuffer) string {
	if s := out.String(); s != "" {
		return ": " + s
	}
	return ""
}

// killAndWait sends SIGKILL to the group and waits briefly for the leader to
// exit. A process in uninterruptible sleep (a hung NFS read) can take longer:
// then the check does not wait for it (reapLater does).
func killAndWait(pgid int, exited <-chan struct{}) bool {
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	t := time.NewTimer(100 * time.Millisecond)
	defer t.Stop()
	select {
	case <-exited:
		return true
	case <-t.C:
		return false
	}
}

// reapLater finishes a check whose process did not die at once on SIGKILL.
func reapLater(cmd *exec.Cmd, pgid int, exited <-chan struct{}) {
	<-exited
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	_ = cmd.Wait()
}

// waitid(2) idtype P_PID (linux/wait.h).
const pPID = 1

// waitExited blocks until process pid has exited, without reaping it
// (WNOWAIT): while it is an unreaped zombie its pid stays taken, so
// signalling its process group by that id cannot hit a recycled one.
// cmd.Wait reaps it afterwards.
func waitExited(pid int) {
	var info [128]byte // siginfo_t
	for {
		_, _, errno := syscall.Syscall6(syscall.SYS_WAITID, pPID, uintptr(pid),
			uintptr(unsafe.Pointer(&info[0])), syscall.WEXITED|syscall.WNOWAIT, 0, 0)
		if errno != syscall.EINTR {
			return
		}
	}
}
