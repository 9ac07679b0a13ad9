package netlab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// Process is a program started inside a node by the lab. The lab reaps it
// (Wait may be called any number of times, from any goroutine) and stops it
// on Close.
type Process struct {
	// Cmd is the started command. Do not call Cmd.Wait; use Process.Wait.
	Cmd *exec.Cmd

	node  *Node
	group bool // signals go to the process group (we set Setpgid)
	done  chan struct{}
	err   error
}

// Command prepares (does not start) a program to run inside the node. It is
// exec.CommandContext with: cancellation sends SIGTERM to the process group
// and SIGKILL after the lab's stop grace; its own process group; and
// PR_SET_PDEATHSIG=SIGKILL, so it dies if the lab's process dies.
//
// Start it with Node.StartCmd. Calling cmd.Start/Run/Output directly would
// run it in the caller's namespace, so Command sets cmd.Err to
// ErrUseStartCmd, which makes those fail (os/exec allows one Start attempt
// per Cmd, so such a Cmd is spent); StartCmd clears it.
func (n *Node) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return signalCmd(cmd, true, syscall.SIGTERM) }
	cmd.WaitDelay = n.lab.grace
	if cmd.Err == nil {
		cmd.Err = ErrUseStartCmd
	}
	return cmd
}

// ErrUseStartCmd is what a Cmd made by Node.Command returns when it is
// started directly instead of through Node.StartCmd.
var ErrUseStartCmd = errors.New("netlab: start this command with Node.StartCmd, not exec.Cmd.Start")

// StartCmd starts cmd inside the node's namespace and tracks it: it locks a
// fresh goroutine's OS thread, moves that thread into the namespace, calls
// cmd.Start (the child is forked from that thread, so it inherits the
// namespace; no helper process is involved) and moves the thread back.
// If cmd.SysProcAttr is nil it gets the settings Command uses; a zero
// cmd.WaitDelay becomes the lab's stop grace.
//
// The child sees the node's network namespace only: its mount namespace,
// and thus /sys/class/net, is the caller's (use `ip netns exec` if a
// program needs a matching /sys).
func (n *Node) StartCmd(cmd *exec.Cmd) (*Process, error) {
	if cmd.Process != nil {
		return nil, errors.New("netlab: StartCmd: command already started")
	}
	if cmd.Err == ErrUseStartCmd {
		cmd.Err = nil
	}
	p := &Process{Cmd: cmd, node: n, done: make(chan struct{})}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	}
	p.group = cmd.SysProcAttr.Setpgid && cmd.SysProcAttr.Pgid == 0
	if cmd.WaitDelay == 0 {
		cmd.WaitDelay = n.lab.grace
	}

	l := n.lab
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, ErrClosed
	}
	if err := inNetns(n.ns.h, cmd.Start); err != nil {
		if cmd.Process != nil { // started, but the thread could not be restored
			_ = signalCmd(cmd, p.group, syscall.SIGKILL)
			_ = cmd.Wait()
		}
		return nil, fmt.Errorf("netlab: %s: start %s: %w", n.name, cmd.Path, err)
	}
	l.track(p)
	go func() {
		p.err = cmd.Wait()
		close(p.done)
		l.untrack(p)
	}()
	return p, nil
}

// Start is Command + StartCmd.
func (n *Node) Start(ctx context.Context, name string, args ...string) (*Process, error) {
	return n.StartCmd(n.Command(ctx, name, args...))
}

// CombinedOutput runs a program inside the node to completion and returns
// its stdout and stderr together.
func (n *Node) CombinedOutput(ctx context.Context, name string, args ...string) ([]byte, error) {
	var buf bytes.Buffer
	cmd := n.Command(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = &buf, &buf
	p, err := n.StartCmd(cmd)
	if err != nil {
		return nil, err
	}
	err = p.Wait()
	return buf.Bytes(), err
}

// Pid is the process id.
func (p *Process) Pid() int { return p.Cmd.Process.Pid }

// Node is the node the process runs in.
func (p *Process) Node() *Node { return p.node }

// Done is closed when the process has exited and been reaped.
func (p *Process) Done() <-chan struct{} { return p.done }

// Wait waits for the process to exit and returns what exec.Cmd.Wait
// returned.
func (p *Process) Wait() error {
	<-p.done
	return p.err
}

// Signal sends sig to the process (to its process group if the lab created
// the group).
func (p *Process) Signal(sig syscall.Signal) error {
	select {
	case <-p.done:
		return os.ErrProcessDone
	default:
	}
	return signalCmd(p.Cmd, p.group, sig)
}

// Stop sends SIGTERM, waits up to grace, then sends SIGKILL and waits for
// the exit (at most 5 s more). It returns an error only if the process could
// not be made to exit; the exit status is available from Wait.
func (p *Process) Stop(grace time.Duration) error {
	select {
	case <-p.done:
		return nil
	default:
	}
	_ = p.Signal(syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.done:
		return nil
	case <-t.C:
	}
	_ = signalCmd(p.Cmd, p.group, syscall.SIGKILL)
	if p.group { // the leader too, in case it left its group
		_ = p.Cmd.Process.Signal(syscall.SIGKILL)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(5 * time.Second):
		return fmt.Errorf("netlab: %s: process %d (%s) did not exit after SIGKILL", p.node.name, p.Pid(), p.Cmd.Path)
	}
}

func signalCmd(cmd *exec.Cmd, group bool, sig syscall.Signal) error {
	if cmd.Process == nil {
		return errors.New("netlab: process not started")
	}
	if group {
		// The group id is the leader's pid; after the leader is reaped the
		// group may still hold children, which should get the signal too.
		if err := syscall.Kill(-cmd.Process.Pid, sig); err == nil {
			return nil
		}
	}
	return cmd.Process.Signal(sig)
}
