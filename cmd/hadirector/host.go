package main

import (
	"fmt"
	"net"
	"strings"

	"github.com/hadirector/hadirector/internal/config"
)

// checkHost verifies that this host is the node it claims to be: every
// interface the node declares exists, and carries the node's addresses.
// Running lb2's identity on lb1 (a wrong --node, a copied host name) would
// make two directors speak for one; refusing to start is the safe answer.
func checkHost(n *config.Node) error {
	for _, ifc := range n.Interfaces {
		link, err := net.InterfaceByName(ifc.Name)
		if err != nil {
			return fmt.Errorf("node %q: interface %q does not exist on this host (interfaces here: %s; is --node right?)", n.Name, ifc.Name, hostInterfaces())
		}
		have, err := link.Addrs()
		if err != nil {
			return fmt.Errorf("node %q: reading the addresses of %s: %w", n.Name, ifc.Name, err)
		}
		for _, want := range ifc.Addresses {
			found := false
			var here []string
			for _, a := range have {
				if ipn, ok := a.(*net.IPNet); ok {
					here = append(here, ipn.String())
					found = found || ipn.IP.Equal(net.IP(want.Addr().AsSlice()))
				}
			}
			if !found {
				return fmt.Errorf("node %q: address %s is not on %s on this host (it has: %s; is --node right?)", n.Name, want, ifc.Name, strings.Join(here, ", "))
			}
		}
	}
	return nil
}

func hostInterfaces() string {
	ifs, err := net.Interfaces()
	if err != nil {
		return "unknown"
	}
	names := make([]string, len(ifs))
	for i, f := range ifs {
		names[i] = f.Name
	}
	return strings.Join(names, ", ")
}
