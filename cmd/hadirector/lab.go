package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/hadirector/hadirector/integration/lab"
	"github.com/hadirector/hadirector/internal/ipvs"
)

// cmdLab runs the failover lab (integration/lab): both directors from the
// embedded cluster file, real servers, client traffic, a failure (the
// master killed, a real server killed, or the heartbeat link cut) and a
// summary, in network namespaces; inside the test VM when this kernel has
// no IPVS. It needs root, leaves nothing behind, and exits 1 when the
// cluster did not cope (a failover that lost connections, a real server
// not taken out or not back, a needless failover), so CI can run it.
//
// Without a step it does everything in turn. The steps (up, status, fail,
// down) keep the lab in a background process between commands, so they
// need IPVS on this kernel: a VM lives for one command.
func cmdLab(args []string, stdout, stderr io.Writer) int {
	step, failArg := "", ""
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		step, args = args[0], args[1:]
	}
	if step == "fail" && len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		failArg, args = args[0], args[1:]
	}
	fs := newFlags("lab", "[up|status|fail [master|server|link]|down] [--conns N] [--vm] [--fail master|server|link]", stderr)
	conns := fs.Int("conns", 200, "long-lived client connections kept open across the failure (guided and up)")
	forceVM := fs.Bool("vm", false, "guided lab only: run inside the qemu VM even if this kernel has IPVS")
	failFlag := fs.String("fail", "master", "guided lab only: what fails: master (the master director), server (a real server) or link (the heartbeat link)")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	switch step {
	case "", "up", "serve", "status", "fail", "down":
	default:
		fmt.Fprintf(stderr, "hadirector lab: unknown step %q\n", step)
		fs.Usage()
		return exitUsage
	}
	if step != "" && flagSet(fs, "fail") {
		fmt.Fprintf(stderr, "hadirector lab %s: --fail is for the guided lab; step by step, name the failure: hadirector lab fail [master|server|link]\n", step)
		return exitUsage
	}
	if step == "" {
		failArg = *failFlag
	}
	failure, err := lab.ParseFailure(failArg)
	if err != nil {
		fmt.Fprintf(stderr, "hadirector lab: %v\n", err)
		fs.Usage()
		return exitUsage
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(stderr, "hadirector lab: needs root (it creates network namespaces); run it with sudo")
		return exitFail
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintf(stderr, "hadirector lab: %v\n", err)
		return exitFail
	}
	labArgs := []string{"--conns", strconv.Itoa(*conns)}

	switch step {
	case "status", "fail", "down":
		cmd := step
		if step == "fail" {
			cmd += " " + string(failure)
		}
		rc, err := lab.Command(ctx, cmd, stdout)
		if err != nil {
			fmt.Fprintf(stderr, "hadirector lab %s: %v\n", step, err)
			return exitFail
		}
		return rc
	case "up", "serve":
		if noIPVS := ipvs.Preflight(); noIPVS != nil {
			fmt.Fprintf(stderr, "hadirector lab %s: this kernel has no IPVS, and the lab's steps keep it on this host between commands "+
				"(a VM lives for one command). Run the guided `hadirector lab`: it uses the VM.\n(%v)\n", step, noIPVS)
			return exitFail
		}
		if step == "up" {
			err = lab.Up(ctx, self, labArgs, stdout)
		} else {
			err = lab.Serve(ctx, lab.Options{Self: self, Conns: *conns, Out: stdout})
		}
		return labExit(ctx, step, err, stderr)
	}

	unlock, err := lab.Lock(lab.LockPath)
	if err != nil {
		fmt.Fprintf(stderr, "hadirector lab: %v\n", err)
		return exitFail
	}
	defer unlock()
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
			args := append(labArgs, "--fail", string(failure))
			err = lab.RunInVM(ctx, lab.VMOptions{Repo: repo, Self: self, Args: args, Out: stdout, Err: stderr})
		}
	default:
		_, err = lab.Run(ctx, lab.Options{Self: self, Conns: *conns, Out: stdout, Failure: failure})
	}
	return labExit(ctx, "", err, stderr)
}

func labExit(ctx context.Context, step string, err error, stderr io.Writer) int {
	name := strings.TrimSpace("hadirector lab " + step)
	switch {
	case err == nil:
		return exitOK
	case ctx.Err() != nil || errors.Is(err, lab.ErrInterrupted):
		fmt.Fprintf(stderr, "%s: interrupted; everything it made is removed\n", name)
	default:
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
	}
	return exitFail
}

// flagSet reports whether the flag was given on the command line.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}
