package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/hadirector/hadirector/integration/lab"
	"github.com/hadirector/hadirector/internal/ipvs"
)

// cmdLab runs the failover lab (integration/lab): both directors from the
// embedded cluster file, real servers, client traffic, a killed master and
// a summary, in network namespaces; inside the test VM when this kernel has
// no IPVS. It needs root, leaves nothing behind, and exits 1 when the
// failover did not keep the clients' connections, so CI can run it.
func cmdLab(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("lab", "[--conns N] [--vm]", stderr)
	conns := fs.Int("conns", 200, "long-lived client connections kept open across the failover")
	forceVM := fs.Bool("vm", false, "run inside the qemu VM even if this kernel has IPVS")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(stderr, "hadirector lab: needs root (it creates network namespaces); run it with sudo")
		return exitFail
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	unlock, err := lab.Lock(lab.LockPath)
	if err != nil {
		fmt.Fprintf(stderr, "hadirector lab: %v\n", err)
		return exitFail
	}
	defer unlock()
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintf(stderr, "hadirector lab: %v\n", err)
		return exitFail
	}

	noIPVS := ipvs.Preflight()
	switch {
	case noIPVS != nil && lab.InVM():
		err = fmt.Errorf("inside the VM and still no IPVS: %w", noIPVS)
	case noIPVS != nil || *forceVM:
		why := "With --vm"
		if noIPVS != nil {
			why = "This kernel has no IPVS"
		}
		fmt.Fprintf(stdout, "== %s: the lab runs inside a qemu VM that boots Debian's stock kernel (integration/vm), automatically.\n", why)
		var cwd, repo string
		if cwd, err = os.Getwd(); err == nil {
			repo, err = lab.FindRepo(cwd)
		}
		if err == nil {
			err = lab.RunInVM(ctx, lab.VMOptions{Repo: repo, Self: self, Args: []string{"--conns", strconv.Itoa(*conns)}, Out: stdout, Err: stderr})
		}
	default:
		_, err = lab.Run(ctx, lab.Options{Self: self, Conns: *conns, Out: stdout})
	}
	switch {
	case err == nil:
		return exitOK
	case ctx.Err() != nil || errors.Is(err, lab.ErrInterrupted):
		fmt.Fprintln(stderr, "hadirector lab: interrupted; everything it made is removed")
	default:
		fmt.Fprintf(stderr, "hadirector lab: %v\n", err)
	}
	return exitFail
}
