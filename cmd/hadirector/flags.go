package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/hadirector/hadirector/internal/config"
)

const defaultConfig = "/etc/hadirector/hadirector.toml"

// newFlags makes a command's flag set; parse errors are printed by the
// caller with the command's usage, and give exit code 2.
func newFlags(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: hadirector %s %s\n\nFlags:\n", name, synopsis)
		fs.PrintDefaults()
	}
	return fs
}

func parseFlags(fs *flag.FlagSet, args []string) (int, bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK, false
		}
		return exitUsage, false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "hadirector %s: unexpected argument %q\n", fs.Name(), fs.Arg(0))
		fs.Usage()
		return exitUsage, false
	}
	return 0, true
}

// resolveNode picks this daemon's node: the flag, else the host name. The
// error lists the nodes the file has.
func resolveNode(c *config.Config, flagNode string) (string, error) {
	name, from := flagNode, "--node"
	if name == "" {
		h, err := os.Hostname()
		if err != nil {
			return "", fmt.Errorf("no --node given and the host name is unknown: %w", err)
		}
		name, from = strings.SplitN(h, ".", 2)[0], "the host name"
	}
	if c.Node(name) == nil {
		return "", fmt.Errorf("%s: node %q (from %s) is not in this cluster; its nodes are: %s (pass --node NAME)",
			c.File, name, from, strings.Join(c.NodeNames(), ", "))
	}
	return name, nil
}

// printProblems writes a load error: one line per problem.
func printProblems(w io.Writer, err error) {
	fmt.Fprintln(w, err)
	var probs config.Problems
	if errors.As(err, &probs) && len(probs) > 1 {
		fmt.Fprintf(w, "%d problems\n", len(probs))
	}
}
