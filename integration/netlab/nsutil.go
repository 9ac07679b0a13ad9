package netlab

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// namespace is one named network namespace owned by a Lab.
type namespace struct {
	name string           // file name under NetnsDir
	h    netns.NsHandle   // open handle, keeps the namespace alive while the lab runs
	nl   *netlink.Handle  // rtnetlink socket created inside the namespace
	raw  *nl.SocketHandle // another one, for requests netlink.Handle lacks
	id   nsID             // identity (nsfs dev/inode), to find processes inside it
}

// nsID identifies a namespace independently of its name.
type nsID struct{ dev, ino uint64 }

func nsIDOfFd(fd int) (nsID, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nsID{}, err
	}
	return nsID{uint64(st.Dev), st.Ino}, nil
}

func nsIDOfPath(path string) (nsID, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return nsID{}, err
	}
	return nsID{uint64(st.Dev), st.Ino}, nil
}

// inNetns runs fn on a fresh goroutine whose OS thread is locked and moved
// into the namespace h, then moves the thread back. If moving back fails the
// goroutine exits with the thread still locked, so the Go runtime terminates
// that thread instead of reusing it in the wrong namespace; the caller's own
// goroutine and thread are never touched. fn must not call runtime.Goexit.
func inNetns(h netns.NsHandle, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netlab: get current netns: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(h); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netlab: setns: %w", err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			// Stay locked: the thread dies with this goroutine.
			errc <- errors.Join(ferr, fmt.Errorf("netlab: restore netns (thread discarded): %w", err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// createNamed creates the named namespace NetnsDir/name (like `ip netns add`),
// and runs setup inside it before returning to the original namespace. All of
// it happens on a throw-away locked thread (see inNetns).
func createNamed(name string, setup func(*namespace) error) (*namespace, error) {
	type result struct {
		ns  *namespace
		err error
	}
	resc := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			resc <- result{err: fmt.Errorf("netlab: get current netns: %w", err)}
			return
		}
		defer orig.Close()

		var ns *namespace
		h, err := netns.NewNamed(name)
		if err != nil {
			// NewNamed may have unshared already, and may have left an
			// empty mount-point file behind; the file is ours unless it
			// already existed (O_EXCL failed).
			if !errors.Is(err, fs.ErrExist) {
				_ = removeNamed(name)
			}
			err = fmt.Errorf("netlab: create netns %s: %w", name, err)
		} else {
			ns = &namespace{name: name, h: h}
			if ns.id, err = nsIDOfFd(int(h)); err == nil {
				ns.nl, err = netlink.NewHandle(unix.NETLINK_ROUTE)
			}
			if err == nil {
				var s *nl.NetlinkSocket
				s, err = nl.GetNetlinkSocketAt(netns.None(), netns.None(), unix.NETLINK_ROUTE)
				if err == nil {
					ns.raw = &nl.SocketHandle{Socket: s}
				}
			}
			if err == nil {
				err = setup(ns)
			}
			if err != nil {
				err = fmt.Errorf("netlab: set up netns %s: %w", name, err)
			}
		}
		if rerr := netns.Set(orig); rerr != nil {
			// Never unlock: the thread is discarded with the goroutine.
			err = errors.Join(err, fmt.Errorf("netlab: restore netns (thread discarded): %w", rerr))
		} else {
			runtime.UnlockOSThread()
		}
		if err != nil && ns != nil {
			ns.close()
			_ = removeNamed(name)
			ns = nil
		}
		resc <- result{ns, err}
	}()
	r := <-resc
	return r.ns, r.err
}

// close releases the lab's handles on the namespace (not the name).
func (ns *namespace) close() {
	if ns.nl != nil {
		ns.nl.Close()
		ns.nl = nil
	}
	if ns.raw != nil {
		ns.raw.Close()
		ns.raw = nil
	}
	if ns.h.IsOpen() {
		_ = ns.h.Close()
		ns.h = netns.None()
	}
}

// removeNamed removes NetnsDir/name the way `ip netns delete` does: lazy
// unmount of the nsfs bind mount, then removal of the mount-point file. A
// missing file or a file that is not a mount point (e.g. after a reboot or a
// crash between create and mount) is not an error.
func removeNamed(name string) error {
	p := filepath.Join(NetnsDir, name)
	if err := unix.Unmount(p, unix.MNT_DETACH); err != nil &&
		!errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("netlab: unmount %s: %w", p, err)
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("netlab: remove %s: %w", p, err)
	}
	return nil
}

// writeSysctl writes /proc/sys for the calling thread's network namespace.
// key is dotted ("net.ipv4.ip_forward") or slash-separated
// ("net/ipv4/conf/eth0.100/rp_filter", needed when a component has a dot).
func writeSysctl(key, value string) error {
	return os.WriteFile(sysctlPath(key), []byte(value), 0o644)
}

func readSysctl(key string) (string, error) {
	b, err := os.ReadFile(sysctlPath(key))
	return strings.TrimSpace(string(b)), err
}

func sysctlPath(key string) string {
	if !strings.Contains(key, "/") {
		key = strings.ReplaceAll(key, ".", "/")
	}
	return filepath.Join("/proc/sys", filepath.Clean("/"+key))
}

// linkState is the part of a link's state that tells whether it passes
// traffic yet.
type linkState struct {
	operstate uint8  // IFLA_OPERSTATE
	qdisc     string // IFLA_QDISC; "noop" (drops everything) until activated
	brState   int    // IFLA_BRPORT_STATE of a bridge port, else -1
}

func (st linkState) String() string {
	return fmt.Sprintf("operstate=%s qdisc=%s brport_state=%d", netlink.LinkOperState(st.operstate), st.qdisc, st.brState)
}

func (ns *namespace) linkState(index int) (linkState, error) {
	st := linkState{brState: -1}
	req := nl.NewNetlinkRequest(unix.RTM_GETLINK, unix.NLM_F_ACK)
	req.Sockets = map[int]*nl.SocketHandle{unix.NETLINK_ROUTE: ns.raw}
	msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
	msg.Index = int32(index)
	req.AddData(msg)
	msgs, err := req.Execute(unix.NETLINK_ROUTE, unix.RTM_NEWLINK)
	if err != nil {
		return st, err
	}
	if len(msgs) != 1 || len(msgs[0]) < unix.SizeofIfInfomsg {
		return st, fmt.Errorf("unexpected RTM_GETLINK answer for index %d", index)
	}
	attrs, err := nl.ParseRouteAttr(msgs[0][unix.SizeofIfInfomsg:])
	if err != nil {
		return st, err
	}
	for _, a := range attrs {
		switch a.Attr.Type & nlaTypeMask {
		case unix.IFLA_OPERSTATE:
			if len(a.Value) > 0 {
				st.operstate = a.Value[0]
			}
		case unix.IFLA_QDISC:
			st.qdisc = strings.TrimRight(string(a.Value), "\x00")
		case unix.IFLA_LINKINFO:
			infos, err := nl.ParseRouteAttr(a.Value)
			if err != nil {
				return st, err
			}
			for _, info := range infos {
				if info.Attr.Type&nlaTypeMask != nl.IFLA_INFO_SLAVE_DATA {
					continue
				}
				data, err := nl.ParseRouteAttr(info.Value)
				if err != nil {
					return st, err
				}
				for _, d := range data {
					if d.Attr.Type&nlaTypeMask == nl.IFLA_BRPORT_STATE && len(d.Value) > 0 {
						st.brState = int(d.Value[0])
					}
				}
			}
		}
	}
	return st, nil
}

const (
	brStateForwarding = 3 // BR_STATE_FORWARDING
	nlaTypeMask       = ^uint16(unix.NLA_F_NESTED | unix.NLA_F_NET_BYTEORDER)
)

// waitReady waits until the link passes traffic: a new veth end comes up
// with the no-op qdisc, which drops every packet, and a new bridge port is
// disabled, until the kernel's linkwatch worker has processed the carrier
// change; that can take a while when namespaces are being destroyed at the
// same time, and a dropped first ARP or SYN costs a 1 s retransmission.
// A node's end also waits for IPv6 to settle (see ipv6State).
func (ns *namespace) waitReady(index int, bridgePort bool, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	delay := 500 * time.Microsecond
	for {
		st, err := ns.linkState(index)
		if err != nil {
			return err
		}
		linkUp := st.operstate == uint8(netlink.OperUp) && st.qdisc != "" && st.qdisc != "noop" &&
			(!bridgePort || st.brState == brStateForwarding)
		v6 := "settled"
		if linkUp && !bridgePort {
			if v6, err = ns.ipv6State(index); err != nil {
				return err
			}
		}
		if linkUp && v6 == "settled" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("link %d in %s not ready after %v: %v, IPv6 %s", index, ns.name, timeout, st, v6)
		}
		time.Sleep(delay)
		delay = min(2*delay, 20*time.Millisecond)
	}
}

// ipv6State says whether IPv6 on link index is settled: disabled, or with
// a link-local address and no tentative address. The kernel adds the
// link-local address after it reports the carrier, and until its DAD work
// has run (even with accept_dad=0 that is a separate, deferred step) the
// address is tentative: a neighbour solicitation sent then goes
// unanswered and the first packet to a fresh IPv6 neighbour waits for the
// 1 s retransmission.
func (ns *namespace) ipv6State(index int) (string, error) {
	link, err := ns.nl.LinkByIndex(index)
	if err != nil {
		return "", err
	}
	var disabled string
	if err := inNetns(ns.h, func() (err error) {
		disabled, err = readSysctl("net/ipv6/conf/" + link.Attrs().Name + "/disable_ipv6")
		return err
	}); err != nil || disabled == "1" {
		return "settled", nil // no IPv6 on this link (or in this kernel)
	}
	addrs, err := ns.nl.AddrList(link, netlink.FAMILY_V6)
	if errors.Is(err, netlink.ErrDumpInterrupted) {
		// Another namespace's change raced the dump (seen in CI while an
		// earlier test's namespaces were torn down): look again.
		return "address dump interrupted", nil
	}
	if err != nil {
		return "", err
	}
	linkLocal := false
	for _, a := range addrs {
		if a.Flags&unix.IFA_F_TENTATIVE != 0 {
			return "address " + a.IP.String() + " tentative", nil
		}
		linkLocal = linkLocal || a.IP.IsLinkLocalUnicast()
	}
	if !linkLocal {
		return "no link-local address yet", nil
	}
	return "settled", nil
}
