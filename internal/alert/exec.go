package alert

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"time"
	"unsafe"
)

type outcome int

const (
	outFailed outcome = iota
	outSucceeded
	outTimedOut
	outKilled
	outStartError
)

// run runs one job and counts its outcome. It never panics: a bug in here is
// logged and counted as a failed run.
func (r *Runner) run(j *job) {
	r.mu.Lock()
	r.st.Run++
	r.mu.Unlock()

	out := outFailed
	defer func() {
		if p := recover(); p != nil {
			r.log.Error("alert: internal error running hook",
				append(eventAttrs(j.hook, j.ev), "panic", fmt.Sprint(p))...)
		}
		r.mu.Lock()
		switch out {
		case outSucceeded:
			r.st.Succeeded++
		case outTimedOut:
			r.st.TimedOut++
		case outKilled:
			r.st.Killed++
		case outStartError:
			r.st.StartErrors++
		default:
			r.st.Failed++
		}
		r.mu.Unlock()
	}()
	out = r.exec(j)
}

// exec runs the hook in its own process group, under its time limit, and
// returns once the hook and everything left in its group are gone.
func (r *Runner) exec(j *job) outcome {
	h, e := j.hook, j.ev
	attrs := eventAttrs(h, e) // full: every append below copies
	if !filepath.IsAbs(h.Path) {
		r.log.Error("alert: cannot start hook: the path is not absolute", attrs...)
		return outStartError
	}
	timeout := h.Timeout
	if timeout <= 0 {
		timeout = r.cfg.DefaultTimeout
	}
	stdout, stderr := newTail(r.cfg.OutputLimit), newTail(r.cfg.OutputLimit)
	cmd := &exec.Cmd{
		Path:        h.Path,
		Args:        h.argv(e),
		Env:         e.environ(),
		Dir:         "/",
		Stdout:      stdout,
		Stderr:      stderr,
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true},
		// Bounds the wait for output pipes held open by a process that
		// left the hook's group.
		WaitDelay: r.cfg.KillGrace,
	}
	r.log.Debug("alert: running hook", append(attrs, "timeout", timeout)...)
	start := time.Now()
	if err := cmd.Start(); err != nil {
		r.log.Error("alert: cannot start hook", append(attrs, "err", err)...)
		return outStartError
	}
	pgid := cmd.Process.Pid // Setpgid: the group's id is the leader's pid

	exited := make(chan error, 1)
	go func() { exited <- waitExited(pgid) }()

	timer := time.NewTimer(timeout)
	defer timer.Stop()
	var timedOut, killed bool
	var werr error
	select {
	case werr = <-exited:
	case <-timer.C:
		timedOut = true
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		grace := time.NewTimer(r.cfg.KillGrace)
		select {
		case werr = <-exited:
		case <-grace.C:
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			werr = <-exited
		case <-r.kill:
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			werr = <-exited
		}
		grace.Stop()
	case <-r.kill:
		killed = true
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		werr = <-exited
	}
	if werr != nil {
		r.log.Error("alert: waiting for hook", append(attrs, "pid", pgid, "err", werr)...)
	} else {
		// The leader has exited but is not reaped, so its pid, the group's
		// id, cannot have been reused: kill whatever it left in its group.
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
	}
	err := cmd.Wait()
	dur := time.Since(start).Round(time.Millisecond)
	attrs = slices.Clip(append(attrs, "pid", pgid, "duration", dur))
	if stdout.total > 0 {
		r.log.Debug("alert: hook stdout", append(attrs, "stdout", stdout.String())...)
	}

	switch {
	case killed:
		r.log.Warn("alert: hook killed: the runner was closed before it finished",
			append(attrs, "stderr", stderr.String())...)
		return outKilled
	case timedOut:
		r.log.Warn("alert: hook timed out; its process group was sent SIGTERM, then SIGKILL if still there",
			append(attrs, "timeout", timeout, "stderr", stderr.String())...)
		return outTimedOut
	}

	ps := cmd.ProcessState
	if ps != nil && ps.Success() && (err == nil || errors.Is(err, exec.ErrWaitDelay)) {
		r.log.Info("alert: hook ran", append(attrs, "exit", 0)...)
		if stderr.total > 0 {
			r.log.Debug("alert: hook stderr", append(attrs, "stderr", stderr.String())...)
		}
		if err != nil {
			r.log.Warn("alert: hook's output stayed open after it exited: a process it started left its process group and still runs",
				attrs...)
		}
		return outSucceeded
	}
	r.log.Warn("alert: hook failed",
		append(attrs, "exit", exitText(ps, err), "stderr", stderr.String())...)
	return outFailed
}

func exitText(ps *os.ProcessState, err error) string {
	if ps != nil {
		if ws, ok := ps.Sys().(syscall.WaitStatus); ok {
			switch {
			case ws.Exited():
				return fmt.Sprint(ws.ExitStatus())
			case ws.Signaled():
				return "signal " + ws.Signal().String()
			}
		}
	}
	return fmt.Sprint(err)
}

// waitid(2) constants (linux/wait.h).
const pPID = 1

// waitExited blocks until process pid has exited, without reaping it
// (WNOWAIT): while it is an unreaped zombie its pid stays taken, so
// signalling its process group by that id cannot hit a recycled one.
// cmd.Wait reaps it afterwards.
func waitExited(pid int) error {
	var info [128]byte // siginfo_t
	for {
		_, _, errno := syscall.Syscall6(syscall.SYS_WAITID, pPID, uintptr(pid),
			uintptr(unsafe.Pointer(&info[0])), syscall.WEXITED|syscall.WNOWAIT, 0, 0)
		switch errno {
		case 0:
			return nil
		case syscall.EINTR:
			continue
		default:
			return errno
		}
	}
}
