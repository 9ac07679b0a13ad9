package main

import (
	"fmt"
	"io"

	"github.com/hadirector/hadirector/internal/config"
)

// cmdCheck validates a config like `keepalived -t`: every problem is printed
// as FILE:LINE:COL: key: message, and the exit code says valid (0) or not (1).
func cmdCheck(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("check", "--config FILE [--node NAME]", stderr)
	path := fs.String("config", defaultConfig, "cluster config `file`")
	node := fs.String("node", "", "also check that this `node` is in the file")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	c, err := config.Load(*path)
	if err != nil {
		printProblems(stderr, err)
		return exitFail
	}
	if *node != "" {
		if _, err := resolveNode(c, *node); err != nil {
			fmt.Fprintln(stderr, err)
			return exitFail
		}
	}
	reals := 0
	for _, s := range c.Services {
		reals += len(s.RealServers)
	}
	fmt.Fprintf(stdout, "%s: OK — cluster %q: %d nodes, %d links, %d VRRP instances, %d virtual services, %d real servers\n",
		*path, c.Cluster.Name, len(c.Nodes), len(c.Links), len(c.Instances), len(c.Services), reals)
	return exitOK
}
