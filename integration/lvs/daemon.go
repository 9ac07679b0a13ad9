package lvs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hadirector/hadirector/integration/netlab"
	"github.com/hadirector/hadirector/internal/control"
)

// Daemon is `hadirector run` in a director's namespace, started by
// StartDaemon.
type Daemon struct {
	Node   *netlab.Node
	Bin    string // the binary
	Config string // the cluster file's path
	Socket string // the control socket's path
	Proc   *netlab.Process

	out *syncBuffer
}

// StartDaemon writes config to a fresh file and starts
//
//	BIN run --config FILE --node NODE --socket SOCK --log-level debug
//
// in the director's namespace (BIN from DaemonBinary, so it skips or fails
// like DaemonBinary when there is none). It returns once the control
// socket answers `status`, and fails tb if the daemon exits or ctx ends
// first. When tb ends the daemon gets SIGTERM (netlab kills it after the
// stop grace); if tb failed, the daemon's output is logged.
func (b *Bed) StartDaemon(ctx context.Context, tb testing.TB, director *netlab.Node, config string) *Daemon {
	tb.Helper()
	bin := DaemonBinary(tb)
	dir, err := os.MkdirTemp("", "lvs-"+director.Name()+"-")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	d, err := LaunchDaemon(ctx, director, bin, dir, config, "--log-level", "debug")
	if err != nil {
		tb.Fatalf("lvs: %v", err)
	}
	tb.Cleanup(func() {
		if err := d.Stop(5 * time.Second); err != nil {
			tb.Errorf("lvs: stopping the daemon in %s: %v", director.Name(), err)
		}
		if tb.Failed() {
			tb.Logf("daemon %s output (%s):\n%s", director.Name(), d.Config, d.Output())
		}
	})
	if _, err := d.WaitStatus(ctx, func(*control.Status) bool { return true }); err != nil {
		tb.Fatalf("lvs: the daemon in %s did not answer: %v\nconfig:\n%s", director.Name(), err, config) // its output: logged by the Cleanup above
	}
	return d
}

// LaunchDaemon writes config to dir/cluster.toml and starts
//
//	BIN run --config DIR/cluster.toml --node NODE --socket DIR/control.sock ARGS...
//
// in the director's namespace, without waiting for it to answer (see
// WaitStatus). Its output is kept (Output). The lab stops it when it
// closes; ctx's end does not (a test's context ends before its cleanup).
func LaunchDaemon(ctx context.Context, director *netlab.Node, bin, dir, config string, args ...string) (*Daemon, error) {
	d := &Daemon{
		Node:   director,
		Bin:    bin,
		Config: filepath.Join(dir, "cluster.toml"),
		Socket: filepath.Join(dir, "control.sock"),
		out:    &syncBuffer{},
	}
	if err := d.WriteConfig(config); err != nil {
		return nil, err
	}
	argv := append([]string{"run", "--config", d.Config, "--node", director.Name(), "--socket", d.Socket}, args...)
	cmd := director.Command(context.WithoutCancel(ctx), bin, argv...)
	cmd.Stdout, cmd.Stderr = d.out, d.out
	var err error
	if d.Proc, err = director.StartCmd(cmd); err != nil {
		return nil, fmt.Errorf("starting the daemon in %s: %w", director.Name(), err)
	}
	return d, nil
}

// WriteConfig replaces the cluster file (for a reload: then call Reload).
func (d *Daemon) WriteConfig(config string) error {
	tmp := d.Config + ".tmp"
	if err := os.WriteFile(tmp, []byte(config), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, d.Config)
}

// Output is everything the daemon printed so far (its log).
func (d *Daemon) Output() string { return d.out.String() }

// Status asks the daemon through the real CLI, `hadirector status --json`.
func (d *Daemon) Status(ctx context.Context) (*control.Status, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	// The control socket is a file: the CLI needs no namespace.
	cmd := exec.CommandContext(ctx, d.Bin, "status", "--json", "--socket", d.Socket)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("hadirector status: %w: %s", err, strings.TrimSpace(errb.String()))
	}
	var st control.Status
	if err := json.Unmarshal(out.Bytes(), &st); err != nil {
		return nil, fmt.Errorf("hadirector status --json: %w\n%s", err, out.String())
	}
	return &st, nil
}

// ErrExited: the daemon is not running (any more).
var ErrExited = errors.New("the daemon exited")

// WaitStatus polls Status every 50 ms until ok accepts one, and returns
// it. It gives up when ctx ends or the daemon exits, returning the last
// status seen (may be nil) and an error.
func (d *Daemon) WaitStatus(ctx context.Context, ok func(*control.Status) bool) (*control.Status, error) {
	var last *control.Status
	var lastErr error
	for {
		st, err := d.Status(ctx)
		if err == nil {
			last = st
			if ok(st) {
				return st, nil
			}
		} else {
			lastErr = err
		}
		select {
		case <-d.Proc.Done():
			return last, fmt.Errorf("%w (%v); last status error: %v", ErrExited, d.Proc.Wait(), lastErr)
		case <-ctx.Done():
			return last, fmt.Errorf("%w; last status error: %v", ctx.Err(), lastErr)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Instance returns the status of instance name, or nil.
func Instance(st *control.Status, name string) *control.InstanceStatus {
	if st == nil {
		return nil
	}
	for i := range st.Instances {
		if st.Instances[i].Name == name {
			return &st.Instances[i]
		}
	}
	return nil
}

// WaitState waits until the daemon reports instance in state (MASTER,
// BACKUP, ...).
func (d *Daemon) WaitState(ctx context.Context, instance, state string) (*control.Status, error) {
	st, err := d.WaitStatus(ctx, func(st *control.Status) bool {
		in := Instance(st, instance)
		return in != nil && in.State == state
	})
	if err != nil {
		got := "no status"
		if in := Instance(st, instance); in != nil {
			got = "state " + in.State
		} else if st != nil {
			got = "no such instance"
		}
		return st, fmt.Errorf("instance %s not %s (%s): %w", instance, state, got, err)
	}
	return st, nil
}

// Reload sends SIGHUP (after WriteConfig, to apply a new file).
func (d *Daemon) Reload() error { return d.Proc.Signal(syscall.SIGHUP) }

// Kill sends SIGKILL and waits for the exit.
func (d *Daemon) Kill() {
	_ = d.Proc.Signal(syscall.SIGKILL)
	<-d.Proc.Done()
}

// Stop sends SIGTERM and waits up to grace, then SIGKILL. It returns the
// daemon's exit error if it did not exit 0 on SIGTERM; nil if it had
// exited already (see Proc.Wait for how).
func (d *Daemon) Stop(grace time.Duration) error {
	select {
	case <-d.Proc.Done():
		return nil
	default:
	}
	if err := d.Proc.Stop(grace); err != nil {
		return err
	}
	return d.Proc.Wait()
}

// Exited is closed when the daemon has exited.
func (d *Daemon) Exited() <-chan struct{} { return d.Proc.Done() }

// syncBuffer is a bytes.Buffer safe for the process's writers and readers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
