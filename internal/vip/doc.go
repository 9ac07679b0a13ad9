// Package vip owns the virtual addresses on this director: adding and
// removing them over netlink, announcing them with gratuitous ARP and IPv6
// unsolicited neighbour advertisements, and keeping them in place while
// this node is master.
//
// # Use
//
// One Announcer per VRRP instance (one interface, its VIPs). The engine
// calls Take when the instance becomes master, Release when it stops being
// master (and at start-up unless it becomes master, to remove VIPs a
// crashed run left behind; RemoveStale does the same without an
// Announcer), Announce to re-announce (split brain), and Close at the end.
//
// # What goes on the wire
//
// A burst is Repeat rounds, Interval apart; Take sends one burst at once,
// a second one after SecondBurstDelay, then one round every Refresh
// (keepalived's vrrp_garp_master_repeat, _delay and _refresh). A round
// sends, for every VIP:
//   - IPv4: a gratuitous ARP in both forms, to ff:ff:ff:ff:ff:ff, from the
//     interface's MAC, with SPA = TPA = VIP: a request (THA = broadcast, like
//     keepalived) and a reply (THA = the sender's MAC, RFC 2002 §4.6; see
//     buildAnnouncements for why not broadcast). They are built with
//     mdlayher/arp and mdlayher/ethernet and written on an AF_PACKET socket
//     bound to the interface (mdlayher/packet), which needs no IPv4 address
//     on the interface, unlike arp.Dial.
//   - IPv6: an unsolicited neighbour advertisement (Override, not
//     Solicited, Target = VIP, Target link-layer address option = MAC)
//     built with mdlayher/ndp and sent from the VIP to ff02::1 with hop
//     limit 255 on a raw ICMPv6 socket, the interface given by IPV6_PKTINFO
//     (as Linux itself sends them: ndisc_send_unsol_na). The socket has
//     IPV6_FREEBIND: a VIP just added with IFA_F_NODAD is still tentative
//     for a few microseconds, and could not be the source otherwise.
//     ndp.Conn is not used because it names the interface by zone name,
//     which Go resolves in the sending thread's namespace.
//
// # Keeping the VIPs in place
//
// While held, the Announcer watches RTM_DELADDR events (netlink address
// subscription, in its namespace): a VIP deleted behind its back is added
// again at once and a burst announces it; so is an IPv6 VIP reported
// DAD-failed (which IFA_F_NODAD should prevent). It does not poll in
// steady state, so an idle master costs nothing here: the watch misses
// nothing without saying so (a netlink overrun ends it with ENOBUFS; it is
// then reopened and the VIPs checked). Only while putting a VIP back fails
// (the kernel refuses it, say) does it retry every CheckInterval, listing
// the addresses, until all are in place. A link coming back up, or
// a new MAC, puts back the IPv6 VIPs the link's going down flushed and
// starts a burst plus a second one after SecondBurstDelay (the first may be
// lost while the switch port comes up); rounds while the link is down are
// skipped.
//
// # Namespaces
//
// An Announcer belongs to the network namespace of the thread that called
// New; every socket it opens later (a netlink watch reopened after an
// error, say) is opened there too, without setns when the thread is already
// in it. Interfaces are always named by index, never resolved by name from
// a goroutine that may run in another namespace.
//
// # How receivers treat the announcements (Linux)
//
// TestKernelARPSemantics, TestTakeIPv6 and TestFailover check the points
// about creating and overriding entries; the rest is from the kernel source
// (net/ipv4/arp.c arp_process, net/ipv6/ndisc.c ndisc_recv_na).
//
//   - A gratuitous ARP updates an existing neighbour entry of the VIP
//     (STALE and REACHABLE ones are tested; PERMANENT and NOARP entries are
//     never changed by packets) even with the default
//     net.ipv4.conf.*.arp_accept = 0. arp_accept only controls whether a
//     gratuitous ARP creates an entry that does not exist: 0 never, 1
//     always, 2 only if the VIP is in a subnet of the receiving interface.
//     A host without an entry simply resolves the VIP when it next needs
//     it, and gets the new master's answer. This is the property failover
//     relies on.
//   - The kernel overrides an entry updated less than locktime (default
//     1 s) ago only with a packet it recognises as gratuitous
//     (net/ipv4/arp.c, arp_is_garp): a request with SPA = TPA, or a reply
//     that also has THA = SHA. Other ARP packets are ignored by such an
//     entry ("the first answer wins"). Hence the reply form's THA.
//   - net.ipv4.conf.*.drop_gratuitous_arp = 1 on a receiver drops both
//     forms.
//   - IPv6: an NA with the Override flag and a Target link-layer address
//     updates an existing entry (state STALE). Whether an unsolicited NA
//     creates a missing entry is net.ipv6.conf.*.accept_untracked_na (0,
//     the default: no). Receivers drop NAs whose hop limit is not 255.
package vip
