package netlab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"runtime"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Node is a host of the topology: one named network namespace.
type Node struct {
	lab    *Lab
	name   string
	ns     *namespace
	ifaces []*Iface // guarded by lab.mu
}

// Name is the node's name within the lab.
func (n *Node) Name() string { return n.name }

// String returns the node's name.
func (n *Node) String() string { return n.name }

// Lab is the lab the node belongs to.
func (n *Node) Lab() *Lab { return n.lab }

// Netns is the namespace's name under NetnsDir, for `ip netns exec`.
func (n *Node) Netns() string { return n.ns.name }

// Path is the namespace's bind-mount file, e.g. for nsenter --net=.
func (n *Node) Path() string { return filepath.Join(NetnsDir, n.ns.name) }

// Netlink returns an rtnetlink handle bound to the node's namespace, for
// anything the lab does not wrap (extra addresses, routes, link state). It
// belongs to the lab: do not Close it, do not use it after Lab.Close.
func (n *Node) Netlink() *netlink.Handle { return n.ns.nl }

// Ifaces returns the node's interfaces made by Connect and Link, in order.
func (n *Node) Ifaces() []*Iface {
	n.lab.mu.Lock()
	defer n.lab.mu.Unlock()
	return append([]*Iface(nil), n.ifaces...)
}

// Iface returns the interface called name, or nil.
func (n *Node) Iface(name string) *Iface {
	n.lab.mu.Lock()
	defer n.lab.mu.Unlock()
	return n.ifaceLocked(name)
}

func (n *Node) ifaceLocked(name string) *Iface {
	for _, i := range n.ifaces {
		if i.name == name {
			return i
		}
	}
	return nil
}

// Addrs returns every address the lab configured on the node.
func (n *Node) Addrs() []netip.Prefix {
	var out []netip.Prefix
	for _, i := range n.Ifaces() {
		out = append(out, i.addrs...)
	}
	return out
}

// IP4 is the node's first configured IPv4 address (zero Addr if none).
func (n *Node) IP4() netip.Addr { return firstAddr(n.Addrs(), true) }

// IP6 is the node's first configured IPv6 address (zero Addr if none).
func (n *Node) IP6() netip.Addr { return firstAddr(n.Addrs(), false) }

// Do runs fn with the calling goroutine locked to its OS thread and that
// thread inside the node's namespace, then moves the thread back and unlocks
// it. Sockets fn creates stay in the node's namespace for their lifetime,
// and /proc/sys/net seen by fn is the node's. Goroutines started by fn run
// on other threads, i.e. NOT in the namespace. fn may panic or call
// t.FailNow (runtime.Goexit); the thread is restored either way.
//
// If the thread cannot be moved back (which needs fn to have dropped
// privileges or similar), Do leaves it locked and panics: the goroutine must
// not go on in the wrong namespace, and when it ends, Go discards the thread.
func (n *Node) Do(fn func() error) error {
	if n.lab.isClosed() {
		return ErrClosed
	}
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netlab: get current netns: %w", err)
	}
	if err := netns.Set(n.ns.h); err != nil {
		orig.Close()
		runtime.UnlockOSThread()
		return fmt.Errorf("netlab: enter %s: %w", n.ns.name, err)
	}
	defer func() {
		err := netns.Set(orig)
		orig.Close()
		if err != nil {
			panic(fmt.Sprintf("netlab: Do: cannot restore the thread's network namespace: %v (thread stays locked and is discarded when the goroutine exits)", err))
		}
		runtime.UnlockOSThread()
	}()
	return fn()
}

// run is Do for the package's own short operations: it uses a throw-away
// goroutine (see inNetns), so a failed restore never affects the caller.
func (n *Node) run(fn func() error) error {
	if n.lab.isClosed() {
		return ErrClosed
	}
	return inNetns(n.ns.h, fn)
}

// Sysctl writes a sysctl in the node's namespace. key is dotted
// ("net.ipv4.ip_forward") or slash-separated when a component contains a
// dot ("net/ipv4/conf/eth0.100/arp_ignore").
func (n *Node) Sysctl(key, value string) error {
	err := n.run(func() error { return writeSysctl(key, value) })
	if err != nil {
		return fmt.Errorf("netlab: %s: sysctl %s=%s: %w", n.name, key, value, err)
	}
	return nil
}

// ReadSysctl reads a sysctl in the node's namespace (trimmed).
func (n *Node) ReadSysctl(key string) (string, error) {
	var v string
	err := n.run(func() (err error) { v, err = readSysctl(key); return err })
	if err != nil {
		return "", fmt.Errorf("netlab: %s: read sysctl %s: %w", n.name, key, err)
	}
	return v, nil
}

// DialContext dials from inside the node's namespace. The host part of
// address must be an IP literal (name resolution and dual-stack racing would
// run on other threads, outside the namespace).
func (n *Node) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	if err := checkIPLiteral(address, false); err != nil {
		return nil, err
	}
	var c net.Conn
	err := n.run(func() (err error) {
		var d net.Dialer
		c, err = d.DialContext(ctx, network, address)
		return err
	})
	return c, err
}

// Listen opens a stream listener ("tcp", "tcp4", "tcp6", "unix") inside the
// node's namespace. The host part of address must be empty or an IP literal.
func (n *Node) Listen(network, address string) (net.Listener, error) {
	if err := checkIPLiteral(address, true); err != nil {
		return nil, err
	}
	var l net.Listener
	err := n.run(func() (err error) {
		l, err = net.Listen(network, address)
		return err
	})
	return l, err
}

// ListenPacket opens a packet socket ("udp", "udp4", "udp6", "ip4:...")
// inside the node's namespace. The host part of address must be empty or
// an IP literal.
func (n *Node) ListenPacket(network, address string) (net.PacketConn, error) {
	if err := checkIPLiteral(address, true); err != nil {
		return nil, err
	}
	var c net.PacketConn
	err := n.run(func() (err error) {
		c, err = net.ListenPacket(network, address)
		return err
	})
	return c, err
}

// WaitTCP dials address ("ip:port") over TCP from the node until a
// connection succeeds, then closes it. It gives up when ctx is done and then
// returns an error that includes the last dial error.
func (n *Node) WaitTCP(ctx context.Context, address string) error {
	delay := 10 * time.Millisecond
	for {
		actx, cancel := context.WithTimeout(ctx, time.Second)
		c, err := n.DialContext(actx, "tcp", address)
		cancel()
		if err == nil {
			return c.Close()
		}
		if errors.Is(err, ErrClosed) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("netlab: %s: %s not reachable: %w (last error: %v)", n.name, address, ctx.Err(), err)
		case <-time.After(delay):
		}
		delay = min(2*delay, 200*time.Millisecond)
	}
}

// AddRoute adds a route in the node's namespace. dst is a CIDR, or
// "default" (the family then follows gw); gw is a gateway IP, or "" for an
// on-link route, which then needs dev, an interface name of the node.
func (n *Node) AddRoute(dst, gw, dev string) error {
	r := &netlink.Route{}
	if dst != "default" {
		p, err := netip.ParsePrefix(dst)
		if err != nil {
			return fmt.Errorf("netlab: route %q: %w", dst, err)
		}
		p = p.Masked()
		r.Dst = &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
	}
	if gw != "" {
		a, err := netip.ParseAddr(gw)
		if err != nil {
			return fmt.Errorf("netlab: route gateway %q: %w", gw, err)
		}
		r.Gw = net.IP(a.AsSlice())
	}
	if dev != "" {
		link, err := n.ns.nl.LinkByName(dev)
		if err != nil {
			return fmt.Errorf("netlab: %s: %s: %w", n.name, dev, err)
		}
		r.LinkIndex = link.Attrs().Index
	}
	if r.Dst == nil && r.Gw == nil {
		return errors.New("netlab: default route needs a gateway")
	}
	if err := n.ns.nl.RouteAdd(r); err != nil {
		return fmt.Errorf("netlab: %s: add route %s via %q dev %q: %w", n.name, dst, gw, dev, err)
	}
	return nil
}

func checkIPLiteral(address string, emptyOK bool) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return nil // e.g. unix sockets; let net report real problems
	}
	if host == "" && emptyOK {
		return nil
	}
	if _, err := netip.ParseAddr(host); err != nil {
		return fmt.Errorf("netlab: %q: host must be an IP literal inside a namespace", address)
	}
	return nil
}
