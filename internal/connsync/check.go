package connsync

import (
	"fmt"
	"net"
)

// udpIPv4Overhead is what an IPv4 UDP datagram adds to a sync message.
const udpIPv4Overhead = 20 + 8

// CheckInterface refuses a sync interface on which the kernel's sync
// daemons would start but never sync: one without an IPv4 address (the
// master multicasts from it, and sends nothing without one), or a maxlen
// (0: the kernel's default, from the MTU) larger than one datagram of the
// interface's MTU carries, which the peer's backup, sizing its buffer
// from the same settings, cannot receive whole.
func CheckInterface(name string, maxlen int) error {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return fmt.Errorf("sync interface %s: %w", name, err)
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		return fmt.Errorf("sync interface %s: %w", name, err)
	}
	has4 := false
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil {
			has4 = true
		}
	}
	if !has4 {
		return fmt.Errorf("sync interface %s has no IPv4 address: the kernel's master sync daemon sends from it, and would send nothing (add one, or name another interface)", name)
	}
	if most := ifi.MTU - udpIPv4Overhead; maxlen > most {
		return fmt.Errorf("sync maxlen %d does not fit the MTU %d of %s (at most %d): the peer would not receive such messages whole; lower maxlen or leave it unset (the kernel then derives it from the MTU)", maxlen, ifi.MTU, name, most)
	}
	return nil
}
