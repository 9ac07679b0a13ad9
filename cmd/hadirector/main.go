// Command hadirector is a high-availability director for Linux Virtual
// Server: `hadirector run` is the daemon; check, status and version are its
// thin clients and tools. This package only parses flags, builds the object
// graph and handles signals; the logic lives in internal/.
package main

import (
	"fmt"
	"io"
	"os"

	"github.com/hadirector/hadirector/internal/director"
)

// version is set at build time: -ldflags "-X main.version=v1.2.3".
var version = "dev"

const usage = `hadirector — high-availability director for Linux Virtual Server

Usage:
  hadirector run     --config FILE [--node NAME]   run the director daemon
  hadirector check   --config FILE [--node NAME]   validate a config; exit 0 if valid, 1 if not
  hadirector status  [--json]                      ask the running daemon for its state
  hadirector drain   SERVICE REAL                  weight 0 for a real server: no new connections
  hadirector enable  SERVICE REAL                  undo drain and set-weight
  hadirector set-weight SERVICE REAL WEIGHT        override a real server's weight until enable
  hadirector version                               print the version
  hadirector lab     [--fail master|server|link]   the whole cluster and a failure on this machine, in namespaces
  hadirector lab     up|status|fail [WHAT]|down    the same lab step by step

Run 'hadirector COMMAND -h' for a command's flags.
`

// Exit codes: 0 success, 1 failure (bad config, daemon error), 2 bad usage.
const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2
)

func main() {
	os.Exit(dispatch(os.Args[1:], os.Stdout, os.Stderr))
}

func dispatch(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	switch cmd, rest := args[0], args[1:]; cmd {
	case "run":
		return cmdRun(rest, stderr)
	case "check":
		return cmdCheck(rest, stdout, stderr)
	case "status":
		return cmdStatus(rest, stdout, stderr)
	case director.AdminDrain, director.AdminEnable, director.AdminSetWeight:
		return cmdAdmin(cmd, rest, stdout, stderr)
	case "lab":
		return cmdLab(rest, stdout, stderr)
	case "version", "--version":
		fmt.Fprintf(stdout, "hadirector %s\n", version)
		return exitOK
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return exitOK
	default:
		fmt.Fprintf(stderr, "hadirector: unknown command %q\n\n%s", cmd, usage)
		return exitUsage
	}
}
