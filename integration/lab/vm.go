package lab

import (
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Module is the module path FindRepo looks for in go.mod.
const Module = "github.com/hadirector/hadirector"

// InVM reports whether this process runs inside integration/vm's guest,
// whose init sets HADIRECTOR_VMTEST=1.
func InVM() bool { return os.Getenv("HADIRECTOR_VMTEST") == "1" }

// FindRepo returns the root of the hadirector source tree that holds dir
// (the nearest go.mod above it naming Module, with integration/vm/run.sh):
// the VM's scripts, and the source for a static rebuild, are there.
func FindRepo(dir string) (string, error) {
	for d := dir; ; d = filepath.Dir(d) {
		b, err := os.ReadFile(filepath.Join(d, "go.mod"))
		if err == nil && isModule(b) {
			if _, err := os.Stat(filepath.Join(d, "integration", "vm", "run.sh")); err != nil {
				return "", fmt.Errorf("%s has no integration/vm/run.sh: %w", d, err)
			}
			return d, nil
		}
		if d == filepath.Dir(d) {
			return "", fmt.Errorf("no clone of %s at or above %s: run the lab from the repository, it needs integration/vm/ to boot the VM", Module, dir)
		}
	}
}

func isModule(gomod []byte) bool {
	for _, line := range strings.Split(string(gomod), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "module" && f[1] == Module {
			return true
		}
	}
	return false
}

// IsStatic reports whether the ELF binary at path has no program
// interpreter, i.e. runs without the host's shared libraries (the guest
// has only those of bash, ip and ipvsadm).
func IsStatic(path string) (bool, error) {
	f, err := elf.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return false, nil
		}
	}
	return true, nil
}

// VMOptions are RunInVM's.
type VMOptions struct {
	Repo    string        // the source tree (FindRepo)
	Self    string        // this binary; rebuilt statically into a temporary directory if it is dynamic
	Args    []string      // the lab's arguments inside the guest (after "lab")
	Timeout time.Duration // for the whole VM
	Out     io.Writer     // the guest's output, streamed live
	Err     io.Writer     // the VM harness's own lines ([vm] ...) and build errors
}

// ErrVM wraps a failure of the VM run itself (no boot, timeout), as
// opposed to the lab inside failing.
var ErrVM = errors.New("the VM")

// ErrInterrupted: the VM run was stopped by a signal (Ctrl-C reaches
// run.sh directly too, and it may end before this process notices).
var ErrInterrupted = errors.New("interrupted")

// RunInVM runs `hadirector lab ARGS` inside integration/vm's qemu VM
// (run.sh: Debian's stock kernel, a fresh initramfs, ~3 s to boot) and
// streams its output. The guest has no network and its namespaces and
// processes end with it, so the host keeps nothing; run.sh removes its run
// directory and stops qemu also when it is interrupted (ctx's end sends it
// SIGTERM).
func RunInVM(ctx context.Context, o VMOptions) error {
	bin := o.Self
	static, err := IsStatic(bin)
	if err != nil {
		return err
	}
	if !static {
		dir, err := os.MkdirTemp("", "hadirector-lab-vm")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		bin = filepath.Join(dir, "hadirector")
		fmt.Fprintf(o.Out, "== This hadirector is dynamically linked (as go run builds it) and the VM needs a static one: CGO_ENABLED=0 go build ./cmd/hadirector\n")
		if err := buildStatic(ctx, o.Repo, bin); err != nil {
			return err
		}
	}
	timeout := o.Timeout
	if timeout <= 0 {
		timeout = 3 * time.Minute
	}
	args := []string{"--payload", bin, "--timeout", fmt.Sprint(int(timeout.Seconds())), "--", "./" + filepath.Base(bin), "lab"}
	cmd := exec.CommandContext(ctx, filepath.Join(o.Repo, "integration", "vm", "run.sh"), append(args, o.Args...)...)
	cmd.Stdout, cmd.Stderr = o.Out, o.Err
	// run.sh stops qemu and removes its files on SIGTERM (not on SIGKILL,
	// exec's default), also when this process dies first. In its own
	// process group it gets one signal, ours, rather than the terminal's
	// Ctrl-C as well; what it leaves in its group (its tail and awk, if it
	// was killed) goes with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM, Setpgid: true}
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 15 * time.Second
	err = cmd.Run()
	if cmd.Process != nil {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	if ctx.Err() != nil {
		return fmt.Errorf("%w: %w", ErrInterrupted, ctx.Err())
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		switch code := ee.ExitCode(); code {
		case 130, -1: // run.sh's exit on SIGINT/SIGTERM; -1: killed by a signal
			return ErrInterrupted
		case 124:
			return fmt.Errorf("%w timed out after %s", ErrVM, timeout)
		case 125:
			return fmt.Errorf("%w did not boot or its guest crashed (see the console tail above)", ErrVM)
		default:
			return fmt.Errorf("the lab inside the VM failed (exit code %d)", code)
		}
	}
	if err != nil {
		return fmt.Errorf("%w: %v", ErrVM, err)
	}
	return nil
}

// buildStatic builds ./cmd/hadirector of repo with CGO_ENABLED=0 into out.
func buildStatic(ctx context.Context, repo, out string) error {
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = "/usr/local/go/bin/go" // the README's Go, when sudo dropped it from PATH
	}
	cmd := exec.CommandContext(ctx, goBin, "build", "-o", out, "./cmd/hadirector")
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("building a static hadirector for the VM (CGO_ENABLED=0 go build ./cmd/hadirector in %s): %w\n%s", repo, err, stderr.Bytes())
	}
	return nil
}
