package vip

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// netlinkTimeout bounds every netlink request, so a wedged kernel answer
// cannot hang the caller (or the Announcer's goroutine) for ever.
const netlinkTimeout = 5 * time.Second

// vipAddr is the netlink form of VIP p: scope global; IPv6 with
// IFA_F_NODAD, so the address is usable at once (no tentative phase, never
// DADFAILED when the other director still holds it); IPv4 with the label,
// if any. The broadcast address of an IPv4 VIP is derived by the netlink
// package, like `ip addr add ... brd +`.
func vipAddr(p netip.Prefix, label string) *netlink.Addr {
	a := &netlink.Addr{IPNet: prefixIPNet(p)}
	if p.Addr().Is6() {
		a.Flags = unix.IFA_F_NODAD
	} else {
		a.Label = label
	}
	return a
}

func prefixIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// addrPrefix converts a netlink address back; ok is false for garbage.
func addrPrefix(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	a = a.Unmap()
	bits, _ := n.Mask.Size()
	return netip.PrefixFrom(a, bits), true
}

// isAbsent reports whether err from RTM_DELADDR means the address (or the
// whole interface) is not there, i.e. there is nothing to remove.
func isAbsent(err error) bool {
	return errors.Is(err, unix.EADDRNOTAVAIL) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENOENT)
}

// linkByName resolves an interface, mapping "not found" to ErrNoInterface.
func linkByName(h *netlink.Handle, name string) (netlink.Link, error) {
	link, err := h.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) || errors.Is(err, unix.ENODEV) {
			return nil, fmt.Errorf("vip: interface %q: %w", name, ErrNoInterface)
		}
		return nil, fmt.Errorf("vip: interface %q: %w", name, err)
	}
	return link, nil
}

// RemoveStale removes from interface iface every address whose IP is one of
// vips (whatever its prefix length), and returns what it removed. It is for
// start-up: a VIP left on the interface by a crashed run must not stay on a
// node that does not become master. Addresses that are not listed, such as
// the node's own, are left alone. It works in the network namespace of the
// calling OS thread.
//
// An IPv4 caveat that applies to any address removal: with
// net.ipv4.conf.<iface>.promote_secondaries = 0 (the kernel default),
// removing the primary address of a subnet removes that subnet's secondary
// addresses too. A stale VIP is normally secondary (the node's own address
// in the subnet came first); setting promote_secondaries = 1, as keepalived
// recommends, removes the risk.
func RemoveStale(iface string, vips []netip.Prefix) ([]netip.Prefix, error) {
	runtime.LockOSThread()
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	runtime.UnlockOSThread()
	if err != nil {
		return nil, fmt.Errorf("vip: netlink: %w", err)
	}
	defer h.Close()
	if err := h.SetSocketTimeout(netlinkTimeout); err != nil {
		return nil, fmt.Errorf("vip: netlink: %w", err)
	}
	link, err := linkByName(h, iface)
	if err != nil {
		return nil, err
	}
	return removeListed(h, link, vips)
}

// removeListed removes from link every address whose IP is one of vips.
func removeListed(h *netlink.Handle, link netlink.Link, vips []netip.Prefix) ([]netip.Prefix, error) {
	want := map[netip.Addr]bool{}
	for _, p := range vips {
		want[p.Addr().Unmap()] = true
	}
	addrs, err := listAddrs(h, link)
	if err != nil {
		return nil, fmt.Errorf("vip: list addresses of %s: %w", link.Attrs().Name, err)
	}
	var removed []netip.Prefix
	var errs []error
	for _, a := range addrs {
		p, ok := addrPrefix(a.IPNet)
		if !ok || !want[p.Addr()] {
			continue
		}
		if err := h.AddrDel(link, &netlink.Addr{IPNet: a.IPNet, Label: a.Label}); err != nil && !isAbsent(err) {
			errs = append(errs, fmt.Errorf("vip: remove %s from %s: %w", p, link.Attrs().Name, err))
			continue
		}
		removed = append(removed, p)
	}
	return removed, errors.Join(errs...)
}

// listAddrs lists link's addresses. The kernel marks a dump that raced a
// change of the table (NLM_F_DUMP_INTR; netlink returns the partial list
// with ErrDumpInterrupted), and a partial list could hide a VIP: dump
// again, a few times, before giving up.
func listAddrs(h *netlink.Handle, link netlink.Link) ([]netlink.Addr, error) {
	for try := 1; ; try++ {
		addrs, err := h.AddrList(link, netlink.FAMILY_ALL)
		if !errors.Is(err, netlink.ErrDumpInterrupted) || try == 5 {
			return addrs, err
		}
	}
}
