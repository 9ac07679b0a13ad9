package vip

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/packet"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/net/bpf"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// Errors returned (wrapped) by this package; test with errors.Is.
var (
	// ErrNoInterface: the configured interface does not exist.
	ErrNoInterface = errors.New("no such network interface")
	// ErrInvalidConfig: New refused the Config.
	ErrInvalidConfig = errors.New("vip: invalid config")
	// ErrClosed: the Announcer was closed.
	ErrClosed = errors.New("vip: announcer closed")
	// ErrNotHeld: Announce was called while the VIPs are not held.
	ErrNotHeld = errors.New("vip: VIPs not held")
)

const (
	// writeTimeout bounds one announcement round's socket writes.
	writeTimeout = 100 * time.Millisecond
	// resubscribeDelay is the pause before a failed netlink event
	// subscription is opened again (the VIPs are checked when it is).
	resubscribeDelay = time.Second
)

// Stats are an Announcer's counters since New.
type Stats struct {
	Held bool
	// Takes and Releases count calls that succeeded at least in part.
	Takes, Releases uint64
	// Bursts counts announcement bursts started: by Take, Announce, the
	// second burst, a re-add, a link coming back up.
	Bursts uint64
	// Rounds counts announcement rounds sent (refresh rounds included);
	// SkippedRounds those not sent because the link was down.
	Rounds, SkippedRounds uint64
	// ARPRequests, ARPReplies and NeighborAdverts count packets sent.
	ARPRequests, ARPReplies, NeighborAdverts uint64
	// Readds counts VIPs put back on the interface after they disappeared
	// while held (removed by someone else, flushed by a link going down,
	// DAD-failed).
	Readds uint64
	// Errors counts failed sends and failed netlink operations.
	Errors      uint64
	LastError   string
	LastErrorAt time.Time
}

// burst is the immediate burst in progress: left rounds still to send, the
// next one at next.
type burst struct {
	next time.Time
	left int
}

// Announcer owns the VIPs of one Config on one interface: it adds and
// removes them, announces them (gratuitous ARP, unsolicited neighbour
// advertisements) and, while they are held, puts back any that disappears.
//
// An Announcer belongs to the network namespace of the OS thread that
// calls New: every socket it ever opens, including from its own goroutine,
// is opened there. (In the daemon this is simply the process's namespace;
// a test may call New inside netlab's Node.Do.)
//
// Methods are safe for concurrent use. Take, Announce, Release and the
// Announcer's goroutine are serialised by one mutex, which is also held
// while a round of packets is written, so that after Release returns no
// announcement leaves and no VIP comes back.
type Announcer struct {
	cfg     Config
	log     *slog.Logger
	ns      netns.NsHandle
	ifindex int
	ifname  string

	nl   *netlink.Handle  // bound to ns
	pc   *packet.Conn     // AF_PACKET for ARP; nil without IPv4 VIPs
	ic   net.PacketConn   // raw ICMPv6 for NA; nil without IPv6 VIPs
	ic6  *ipv6.PacketConn // ic's IPv6 view
	vips map[netip.Prefix]bool

	kick chan struct{} // the schedule changed
	done chan struct{} // closed by Close
	wg   sync.WaitGroup

	held atomic.Bool

	mu      sync.Mutex
	closed  bool
	link    netlink.Link // last known attributes
	mac     net.HardwareAddr
	linkUp  bool
	anns    []announcement // one round, for mac
	cur     burst
	second  time.Time // start of the second burst; zero: none pending
	refresh time.Time // next refresh round; zero: none
	// degraded: the last attempt to put the VIPs in place failed in part
	// (a VIP could not be added, the addresses or the link could not be
	// read). Only then does the goroutine poll, every CheckInterval, until
	// a check finds everything in place. (A lost netlink watch is reopened
	// every resubscribeDelay, with a check each time.)
	degraded bool

	statsMu sync.Mutex
	stats   Stats
}

// New checks cfg, resolves the interface and opens the sockets and the
// netlink watch, in the network namespace of the calling OS thread. It does
// not touch any address: call Take, Release or RemoveStale. log may be nil.
func New(cfg Config, log *slog.Logger) (*Announcer, error) {
	cfg, err := cfg.normalize()
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ns, err := currentNetns()
	if err != nil {
		return nil, err
	}
	a := &Announcer{
		cfg:    cfg,
		log:    log.With("iface", cfg.Interface),
		ns:     ns,
		ifname: cfg.Interface,
		vips:   map[netip.Prefix]bool{},
		kick:   make(chan struct{}, 1),
		done:   make(chan struct{}),
	}
	for _, p := range cfg.VIPs {
		a.vips[p] = true
	}
	var sub *subscription
	err = inNetns(ns, func() error {
		h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
		if err != nil {
			return fmt.Errorf("vip: netlink: %w", err)
		}
		a.nl = h
		if err := a.nl.SetSocketTimeout(netlinkTimeout); err != nil {
			return fmt.Errorf("vip: netlink: %w", err)
		}
		link, err := linkByName(a.nl, cfg.Interface)
		if err != nil {
			return err
		}
		a.ifindex = link.Attrs().Index
		if _, err := a.updateLinkLocked(link); err != nil {
			return err
		}
		ifi := &net.Interface{Index: a.ifindex, Name: cfg.Interface, HardwareAddr: a.mac}
		if cfg.hasFamily(true) {
			// Send-only: a BPF program that accepts nothing keeps the
			// socket from queueing every ARP packet on the segment.
			drop, err := bpf.Assemble([]bpf.Instruction{bpf.RetConstant{Val: 0}})
			if err != nil {
				return fmt.Errorf("vip: %w", err)
			}
			if a.pc, err = packet.Listen(ifi, packet.Raw, unix.ETH_P_ARP, &packet.Config{Filter: drop}); err != nil {
				return fmt.Errorf("vip: open ARP socket on %s: %w", cfg.Interface, err)
			}
		}
		if cfg.hasFamily(false) {
			if err := a.openICMPv6(); err != nil {
				return err
			}
		}
		sub, err = a.subscribe()
		return err
	})
	if err != nil {
		a.closeSockets()
		return nil, err
	}
	a.wg.Add(1)
	go a.run(sub)
	return a, nil
}

// openICMPv6 opens the raw ICMPv6 socket for neighbour advertisements,
// send-only. The interface and source are given per packet
// (IPV6_PKTINFO), never as a zone name: resolving a name would look it up
// in the namespace of whatever thread sends.
//
// IPV6_FREEBIND lets the VIP be the source even while the kernel still
// marks it tentative: an address added with IFA_F_NODAD is tentative until
// the DAD work item has run, some microseconds after RTM_NEWADDR was
// acknowledged, and without it the first NAs after Take (and after a
// re-add) fail with EINVAL.
func (a *Announcer) openICMPv6() error {
	pc, err := net.ListenPacket("ip6:ipv6-icmp", "::")
	if err != nil {
		return fmt.Errorf("vip: open ICMPv6 socket: %w", err)
	}
	a.ic = pc
	sc, ok := pc.(syscall.Conn)
	if !ok {
		return fmt.Errorf("vip: ICMPv6 socket: %T has no file descriptor", pc)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return fmt.Errorf("vip: ICMPv6 socket: %w", err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_FREEBIND, 1)
	}); err != nil {
		return fmt.Errorf("vip: ICMPv6 socket: %w", err)
	}
	if serr != nil {
		return fmt.Errorf("vip: ICMPv6 socket: IPV6_FREEBIND: %w", serr)
	}
	a.ic6 = ipv6.NewPacketConn(pc)
	var f ipv6.ICMPFilter
	f.SetAll(true) // receive nothing
	for _, step := range []error{
		a.ic6.SetICMPFilter(&f),
		a.ic6.SetHopLimit(255),
		a.ic6.SetMulticastHopLimit(255),
		a.ic6.SetMulticastLoopback(false),
	} {
		if step != nil {
			return fmt.Errorf("vip: set up ICMPv6 socket: %w", step)
		}
	}
	return nil
}

// subscription is one netlink event watch (addresses and links).
type subscription struct {
	done chan struct{}
	addr chan netlink.AddrUpdate
	link chan netlink.LinkUpdate
}

// subscribe opens the watch; it must run inside a.ns (see inNetns).
func (a *Announcer) subscribe() (*subscription, error) {
	s := &subscription{
		done: make(chan struct{}),
		addr: make(chan netlink.AddrUpdate, 64),
		link: make(chan netlink.LinkUpdate, 16),
	}
	cb := func(err error) {
		select {
		case <-s.done: // our own Close of the socket
		default:
			a.noteError(fmt.Errorf("vip: netlink event watch: %w", err))
		}
	}
	if err := netlink.AddrSubscribeWithOptions(s.addr, s.done, netlink.AddrSubscribeOptions{ErrorCallback: cb}); err != nil {
		return nil, fmt.Errorf("vip: watch addresses: %w", err)
	}
	if err := netlink.LinkSubscribeWithOptions(s.link, s.done, netlink.LinkSubscribeOptions{ErrorCallback: cb}); err != nil {
		s.stop()
		return nil, fmt.Errorf("vip: watch links: %w", err)
	}
	return s, nil
}

// stop closes the watch and waits for its goroutines: the netlink package
// closes each channel when its reader ends, after a blocked send (hence the
// draining).
func (s *subscription) stop() {
	select {
	case <-s.done:
	default:
		close(s.done)
	}
	for range s.addr {
	}
	for range s.link {
	}
}

// Take adds every VIP (replacing any with the same address and prefix
// length) and announces them: a burst now (rounds with Interval == 0 are all
// sent before Take returns; otherwise the first is), a second burst after
// SecondBurstDelay, then a round every Refresh. From now on a VIP that
// disappears is put back and announced. Take on a held Announcer does all
// of this again.
//
// If some VIP cannot be added, or a packet cannot be sent, Take returns the
// errors but the Announcer is held all the same (the engine has decided to
// be master): the rest is announced, and the missing VIPs are retried at
// each CheckInterval. If the interface is gone, Take returns an error and
// changes nothing.
func (a *Announcer) Take() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return ErrClosed
	}
	link, err := a.nl.LinkByIndex(a.ifindex)
	if err != nil {
		err = fmt.Errorf("vip: take: interface %s (index %d): %w", a.ifname, a.ifindex, err)
		a.noteError(err)
		return err
	}
	var errs []error
	if _, err := a.updateLinkLocked(link); err != nil {
		errs = append(errs, err)
	}
	a.degraded = false
	for _, p := range a.cfg.VIPs {
		if err := a.nl.AddrReplace(link, vipAddr(p, a.cfg.Label)); err != nil {
			err = fmt.Errorf("vip: add %s to %s: %w", p, a.ifname, err)
			a.noteError(err)
			errs = append(errs, err)
			a.degraded = true // retried every CheckInterval
		}
	}
	a.held.Store(true)
	a.count(func(s *Stats) { s.Takes++ })
	now := time.Now()
	a.refresh = time.Time{}
	if a.cfg.Refresh > 0 {
		a.refresh = now.Add(a.cfg.Refresh)
	}
	if err := a.announceLocked(now, true); err != nil {
		errs = append(errs, err)
	}
	a.kickLoop()
	err = errors.Join(errs...)
	a.log.Info("VIPs taken", "vips", a.cfg.VIPs, "link_up", a.linkUp, "error", err)
	return err
}

// Announce sends a burst now (Repeat rounds, Interval apart), for example
// to win back a segment after a split brain. It returns ErrNotHeld unless
// the VIPs are held.
func (a *Announcer) Announce() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return ErrClosed
	}
	if !a.held.Load() {
		return ErrNotHeld
	}
	err := a.announceLocked(time.Now(), false)
	a.kickLoop()
	return err
}

// Release stops every announcement (pending bursts and refresh included)
// and removes every VIP from the interface. It may be called whether or not
// the VIPs are held, so on a fresh Announcer it removes VIPs a crashed run
// left behind. VIPs already absent, or an interface that is gone, are not
// errors. Once Release has returned, no announcement leaves and no VIP is
// put back until the next Take.
func (a *Announcer) Release() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return ErrClosed
	}
	a.held.Store(false)
	a.cur, a.second, a.refresh = burst{}, time.Time{}, time.Time{}
	a.degraded = false
	a.kickLoop()
	var errs []error
	for _, p := range a.cfg.VIPs {
		// No label: the kernel would then only delete an address that
		// still carries it.
		if err := a.nl.AddrDel(a.linkRef(), vipAddr(p, "")); err != nil && !isAbsent(err) {
			err = fmt.Errorf("vip: remove %s from %s: %w", p, a.ifname, err)
			a.noteError(err)
			errs = append(errs, err)
		}
	}
	a.count(func(s *Stats) { s.Releases++ })
	err := errors.Join(errs...)
	a.log.Info("VIPs released", "vips", a.cfg.VIPs, "error", err)
	return err
}

// Held reports whether the VIPs are held (Take called, Release not since).
func (a *Announcer) Held() bool { return a.held.Load() }

// Stats returns a snapshot of the counters.
func (a *Announcer) Stats() Stats {
	a.statsMu.Lock()
	s := a.stats
	a.statsMu.Unlock()
	s.Held = a.held.Load()
	return s
}

// Close stops the Announcer's goroutine and closes its sockets. It does not
// touch the addresses: call Release first to give the VIPs up. Close is
// idempotent; other methods return ErrClosed afterwards.
func (a *Announcer) Close() error {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return nil
	}
	a.closed = true
	a.held.Store(false)
	a.cur, a.second, a.refresh = burst{}, time.Time{}, time.Time{}
	a.mu.Unlock()
	close(a.done)
	a.wg.Wait()
	return a.closeSockets()
}

func (a *Announcer) closeSockets() error {
	var errs []error
	if a.pc != nil {
		errs = append(errs, a.pc.Close())
	}
	if a.ic != nil {
		errs = append(errs, a.ic.Close())
	}
	if a.nl != nil {
		a.nl.Close()
	}
	if a.ns.IsOpen() {
		errs = append(errs, a.ns.Close())
	}
	return errors.Join(errs...)
}

// linkRef is the interface for netlink address requests.
func (a *Announcer) linkRef() netlink.Link {
	if a.link != nil {
		return a.link
	}
	return &netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: a.ifindex, Name: a.ifname}}
}

// updateLinkLocked records the interface's current attributes (a new
// hardware address rebuilds the packets) and reports whether the VIPs need
// announcing because of the change: the link came up, or its hardware
// address changed while up.
func (a *Announcer) updateLinkLocked(link netlink.Link) (renew bool, err error) {
	at := link.Attrs()
	wasUp := a.linkUp
	a.link = link
	a.linkUp = at.RawFlags&unix.IFF_UP != 0 && at.RawFlags&unix.IFF_RUNNING != 0
	if bytes.Equal(at.HardwareAddr, a.mac) && a.anns != nil {
		return a.linkUp && !wasUp, nil
	}
	anns, err := buildAnnouncements(at.HardwareAddr, a.cfg.VIPs)
	if err != nil {
		return false, fmt.Errorf("vip: interface %s: %w", a.ifname, err)
	}
	renew = a.linkUp && (!wasUp || a.mac != nil)
	a.mac = append(net.HardwareAddr(nil), at.HardwareAddr...)
	a.anns = anns
	return renew, nil
}

// refreshLinkLocked reads the link's state from the kernel.
func (a *Announcer) refreshLinkLocked() (renew bool, err error) {
	link, err := a.nl.LinkByIndex(a.ifindex)
	if err != nil {
		return false, fmt.Errorf("vip: interface %s (index %d): %w", a.ifname, a.ifindex, err)
	}
	return a.updateLinkLocked(link)
}

// announceLocked starts a burst now and, with second, schedules the second
// burst after SecondBurstDelay (after Take, and after the link came up: a
// switch port that just came up may drop the first one).
func (a *Announcer) announceLocked(now time.Time, second bool) error {
	if second {
		a.second = time.Time{}
		if a.cfg.SecondBurstDelay > 0 {
			a.second = now.Add(a.cfg.SecondBurstDelay)
		}
	}
	return a.burstLocked(now)
}

// burstLocked starts a burst: rounds back to back when Interval is 0,
// otherwise the first now and the rest from the Announcer's goroutine. It
// replaces a burst still in progress.
func (a *Announcer) burstLocked(now time.Time) error {
	a.count(func(s *Stats) { s.Bursts++ })
	a.cur = burst{}
	if a.cfg.Interval == 0 {
		var errs []error
		for range a.cfg.Repeat {
			if err := a.roundLocked(); err != nil {
				errs = append(errs, err)
			}
		}
		return errors.Join(errs...)
	}
	if a.cfg.Repeat > 1 {
		a.cur = burst{next: now.Add(a.cfg.Interval), left: a.cfg.Repeat - 1}
	}
	return a.roundLocked()
}

// roundLocked sends one round: every prepared packet once. A round while
// the link is down is skipped (the link coming up starts a burst).
func (a *Announcer) roundLocked() error {
	if !a.linkUp {
		a.count(func(s *Stats) { s.SkippedRounds++ })
		return nil
	}
	deadline := time.Now().Add(writeTimeout)
	if a.pc != nil {
		_ = a.pc.SetWriteDeadline(deadline)
	}
	if a.ic6 != nil {
		_ = a.ic6.SetWriteDeadline(deadline)
	}
	var errs []error
	var req, rep, na uint64
	for _, an := range a.anns {
		var err error
		switch an.kind {
		case kindARPRequest, kindARPReply:
			_, err = a.pc.WriteTo(an.b, &packet.Addr{HardwareAddr: ethernet.Broadcast})
			if errors.Is(err, unix.ENETDOWN) {
				// A packet socket keeps the ENETDOWN of the interface's
				// last going down as a pending error and returns it on
				// the next send, even though the link is up again:
				// that write did not happen, so try once more.
				_, err = a.pc.WriteTo(an.b, &packet.Addr{HardwareAddr: ethernet.Broadcast})
				if errors.Is(err, unix.ENETDOWN) {
					// Really down (its event is still on the way): the
					// link coming up will start a burst.
					a.linkUp = false
					a.count(func(s *Stats) { s.SkippedRounds++ })
					return errors.Join(errs...)
				}
			}
		case kindNA:
			cm := &ipv6.ControlMessage{HopLimit: 255, Src: an.vip.AsSlice(), IfIndex: a.ifindex}
			_, err = a.ic6.WriteTo(an.b, cm, &net.IPAddr{IP: allNodes.AsSlice()})
		}
		if err != nil {
			err = fmt.Errorf("vip: send %s for %s on %s: %w", an.kind, an.vip, a.ifname, err)
			a.noteError(err)
			errs = append(errs, err)
			continue
		}
		switch an.kind {
		case kindARPRequest:
			req++
		case kindARPReply:
			rep++
		case kindNA:
			na++
		}
	}
	a.count(func(s *Stats) {
		s.Rounds++
		s.ARPRequests += req
		s.ARPReplies += rep
		s.NeighborAdverts += na
	})
	return errors.Join(errs...)
}

// schedule is when the goroutine must next act on the schedule (ok false:
// nothing scheduled), and whether it must poll (held and degraded).
func (a *Announcer) schedule() (next time.Time, ok, poll bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, t := range [...]time.Time{a.cur.next, a.second, a.refresh} {
		if !t.IsZero() && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	return next, !next.IsZero(), a.degraded && a.held.Load() && !a.closed
}

// fire sends whatever the schedule says is due at now.
func (a *Announcer) fire(now time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed || !a.held.Load() {
		a.cur, a.second, a.refresh = burst{}, time.Time{}, time.Time{}
		return
	}
	if !a.second.IsZero() && !now.Before(a.second) {
		a.second = time.Time{}
		_ = a.announceLocked(now, false)
	}
	for a.cur.left > 0 && !now.Before(a.cur.next) {
		_ = a.roundLocked()
		a.cur.left--
		a.cur.next = a.cur.next.Add(a.cfg.Interval)
	}
	if a.cur.left == 0 {
		a.cur = burst{}
	}
	if !a.refresh.IsZero() && !now.Before(a.refresh) {
		_ = a.roundLocked()
		a.refresh = a.refresh.Add(a.cfg.Refresh)
		if a.refresh.Before(now) {
			a.refresh = now.Add(a.cfg.Refresh)
		}
	}
}

// onAddr handles an address event: a VIP deleted while held is added back
// at once and announced.
func (a *Announcer) onAddr(u netlink.AddrUpdate) {
	if u.LinkIndex != a.ifindex || (u.NewAddr && u.Flags&unix.IFA_F_DADFAILED == 0) {
		return
	}
	p, ok := addrPrefix(&u.LinkAddress)
	if !ok || !a.vips[p] {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed || !a.held.Load() {
		return
	}
	if u.NewAddr {
		// DAD-failed (IFA_F_NODAD should prevent it, but someone may have
		// replaced the address): checkLocked removes it and adds it back.
		if !a.checkLocked("DAD failed") {
			return
		}
	} else if !a.addBackLocked(p, "deleted") {
		return
	}
	// The link's own event may still be queued behind this one (e.g. a
	// link going down flushes its IPv6 addresses): ask the kernel.
	renew, err := a.refreshLinkLocked()
	if err != nil {
		a.noteError(err)
	}
	_ = a.announceLocked(time.Now(), renew)
}

// addBackLocked adds VIP p if it is absent (EEXIST means someone, or an
// earlier event, already did) and reports whether it did.
func (a *Announcer) addBackLocked(p netip.Prefix, reason string) bool {
	err := a.nl.AddrAdd(a.linkRef(), vipAddr(p, a.cfg.Label))
	switch {
	case errors.Is(err, unix.EEXIST):
		return false
	case err != nil:
		a.noteError(fmt.Errorf("vip: put back %s on %s: %w", p, a.ifname, err))
		a.degraded = true // retried every CheckInterval
		return false
	}
	a.count(func(s *Stats) { s.Readds++ })
	a.log.Warn("VIP was gone while held: put back", "vip", p, "reason", reason)
	return true
}

// check compares the interface's addresses with the VIPs, puts back what
// is missing or DAD-failed and announces if it did, or if it finds that the
// link came up.
func (a *Announcer) check(reason string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed || !a.held.Load() {
		return
	}
	renew, err := a.refreshLinkLocked()
	if err != nil {
		a.noteError(fmt.Errorf("vip: check: %w", err))
		a.degraded = true
		return
	}
	if a.checkLocked(reason) || renew {
		_ = a.announceLocked(time.Now(), renew)
	}
}

// checkLocked puts back missing or DAD-failed VIPs and reports whether it
// put any back. It clears degraded when every VIP is in place afterwards.
func (a *Announcer) checkLocked(reason string) bool {
	addrs, err := listAddrs(a.nl, a.linkRef())
	if err != nil {
		a.noteError(fmt.Errorf("vip: check: list addresses of %s: %w", a.ifname, err))
		a.degraded = true
		return false
	}
	a.degraded = false // set again below by a failure
	flags := map[netip.Prefix]int{}
	for _, ad := range addrs {
		if p, ok := addrPrefix(ad.IPNet); ok {
			flags[p] = ad.Flags
		}
	}
	added := false
	for _, p := range a.cfg.VIPs {
		f, present := flags[p]
		if present && p.Addr().Is6() && f&unix.IFA_F_DADFAILED != 0 {
			if err := a.nl.AddrDel(a.linkRef(), vipAddr(p, "")); err != nil && !isAbsent(err) {
				a.noteError(fmt.Errorf("vip: remove DAD-failed %s from %s: %w", p, a.ifname, err))
				a.degraded = true
				continue
			}
			present = false
		}
		if !present && a.addBackLocked(p, reason) {
			added = true
		}
	}
	return added
}

// onLink handles a link event: the link coming (back) up, or a new
// hardware address, re-checks the VIPs and announces them.
func (a *Announcer) onLink(u netlink.LinkUpdate) {
	if u.Link == nil || u.Link.Attrs().Index != a.ifindex {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return
	}
	if u.Header.Type == unix.RTM_DELLINK {
		a.linkUp = false
		a.noteError(fmt.Errorf("vip: interface %s (index %d) was deleted", a.ifname, a.ifindex))
		return
	}
	renew, err := a.updateLinkLocked(u.Link)
	if err != nil {
		a.noteError(err)
	}
	if !renew || !a.held.Load() {
		return
	}
	a.log.Info("link up or new hardware address: announcing again", "mac", a.mac.String())
	a.checkLocked("link up") // IPv6 VIPs went with the link going down
	_ = a.announceLocked(time.Now(), true)
}

// run is the Announcer's goroutine: timers, the netlink watch, and the poll
// while degraded. A healthy held Announcer sleeps between events: the
// watch tells it about every address and link change.
func (a *Announcer) run(sub *subscription) {
	defer a.wg.Done()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	poll := time.NewTicker(time.Hour)
	poll.Stop()
	defer poll.Stop()
	polling := false
	var resubC <-chan time.Time
	lost := func() {
		sub.stop()
		sub = nil
		resubC = time.After(resubscribeDelay)
		a.check("netlink watch lost")
	}
	for {
		next, ok, degraded := a.schedule()
		if ok {
			timer.Reset(time.Until(next))
		} else {
			timer.Stop()
		}
		if want := degraded && a.cfg.CheckInterval > 0; want != polling {
			if want {
				poll.Reset(a.cfg.CheckInterval)
			} else {
				poll.Stop()
			}
			polling = want
		}
		var pollC <-chan time.Time
		if polling {
			pollC = poll.C
		}
		var addrC <-chan netlink.AddrUpdate
		var linkC <-chan netlink.LinkUpdate
		if sub != nil {
			addrC, linkC = sub.addr, sub.link
		}
		select {
		case <-a.done:
			if sub != nil {
				sub.stop()
			}
			return
		case <-a.kick:
		case now := <-timer.C:
			a.fire(now)
		case <-pollC:
			a.check("poll")
		case u, ok := <-addrC:
			if !ok {
				lost()
				continue
			}
			a.onAddr(u)
		case u, ok := <-linkC:
			if !ok {
				lost()
				continue
			}
			a.onLink(u)
		case <-resubC:
			resubC = nil
			err := inNetns(a.ns, func() (err error) {
				sub, err = a.subscribe()
				return err
			})
			if err != nil {
				sub = nil
				a.noteError(err)
				resubC = time.After(resubscribeDelay)
			}
			a.check("netlink watch reopened")
		}
	}
}

func (a *Announcer) kickLoop() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

func (a *Announcer) count(f func(*Stats)) {
	a.statsMu.Lock()
	f(&a.stats)
	a.statsMu.Unlock()
}

func (a *Announcer) noteError(err error) {
	a.count(func(s *Stats) {
		s.Errors++
		s.LastError = err.Error()
		s.LastErrorAt = time.Now()
	})
	a.log.Warn("vip error", "error", err)
}
