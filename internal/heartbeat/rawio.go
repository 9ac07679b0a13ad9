package heartbeat

import (
	"encoding/binary"
	"net/netip"
	"runtime"
	"strconv"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Raw datagram I/O for the hot paths (a VRRP advert or a heartbeat frame
// every few milliseconds, for as long as the daemon runs).
//
// The sockets stay in Go's network poller (net.IPConn, net.UDPConn: Close,
// readiness waits and deadlines work as usual), but each recvmsg/sendmsg is
// made with syscall.RawSyscall6 inside RawConn.Read/Write rather than
// through syscall.Syscall. The sockets are non-blocking, so these calls
// never block. What a plain Syscall adds on top is runtime bookkeeping for
// a call that might block (entersyscall/exitsyscall); and when the
// runtime's monitor thread (sysmon) is asleep, which is the case in an idle
// daemon, entersyscall wakes it up, and it then polls for a while before
// going back to sleep. In a daemon that does nothing but a few datagrams
// per interval, that wake-up cost more CPU than the datagrams themselves
// (perf on the failover bench: sysmon was 25-45 % of the idle daemon's
// CPU). The raw calls also take no allocation: no sockaddr conversion, no
// parsed control-message slices.

// sockaddr is a socket address in the kernel's layout (IPv4 or IPv6).
type sockaddr struct {
	raw unix.RawSockaddrInet6 // large enough for both; IPv4 uses its head
	len uint32
}

// makeSockaddr builds the sockaddr of ap. An IPv6 address's zone must be
// an interface index (numeric), as the links and sockets resolve zone names
// at start-up.
func makeSockaddr(ap netip.AddrPort) sockaddr {
	var sa sockaddr
	a := ap.Addr()
	if a.Is4() {
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(&sa.raw))
		sa4.Family = unix.AF_INET
		binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&sa4.Port))[:], ap.Port())
		sa4.Addr = a.As4()
		sa.len = unix.SizeofSockaddrInet4
		return sa
	}
	sa.raw.Family = unix.AF_INET6
	binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&sa.raw.Port))[:], ap.Port())
	sa.raw.Addr = a.As16()
	if z := a.Zone(); z != "" {
		if id, err := strconv.Atoi(z); err == nil {
			sa.raw.Scope_id = uint32(id)
		}
	}
	sa.len = unix.SizeofSockaddrInet6
	return sa
}

// addrPort decodes a sockaddr filled in by recvmsg (the zone is dropped).
func (sa *sockaddr) addrPort() netip.AddrPort {
	switch sa.raw.Family {
	case unix.AF_INET:
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(&sa.raw))
		port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa4.Port))[:])
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), port)
	case unix.AF_INET6:
		port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa.raw.Port))[:])
		return netip.AddrPortFrom(netip.AddrFrom16(sa.raw.Addr), port)
	}
	return netip.AddrPort{}
}

// msghdr is a message header for one buffer p (through iov) and the
// control buffer oob. It returns the header rather than filling one in
// through a pointer so that a caller's iov can stay on its stack (a store
// through a pointer sends its value to the heap): a send allocates
// nothing. The caller keeps p and oob alive across the syscall.
func msghdr(iov *unix.Iovec, p, oob []byte) unix.Msghdr {
	msg := unix.Msghdr{Iov: iov}
	msg.SetIovlen(1)
	if len(p) > 0 {
		iov.Base = &p[0]
		iov.SetLen(len(p))
	}
	if len(oob) > 0 {
		msg.Control = &oob[0]
		msg.SetControllen(len(oob))
	}
	return msg
}

// rawRecvmsg reads one datagram from the non-blocking socket fd into p,
// its control messages into oob and its source into from (if not nil).
func rawRecvmsg(fd uintptr, p, oob []byte, from *sockaddr) (n, oobn, flags int, errno syscall.Errno) {
	var iov unix.Iovec
	msg := msghdr(&iov, p, oob)
	if from != nil {
		msg.Name = (*byte)(unsafe.Pointer(&from.raw))
		msg.Namelen = uint32(unsafe.Sizeof(from.raw))
	}
	r, _, e := syscall.RawSyscall6(unix.SYS_RECVMSG, fd, uintptr(unsafe.Pointer(&msg)), unix.MSG_DONTWAIT, 0, 0, 0)
	runtime.KeepAlive(p)
	runtime.KeepAlive(oob)
	runtime.KeepAlive(from)
	if e != 0 {
		return 0, 0, 0, e
	}
	if from != nil {
		from.len = msg.Namelen
	}
	return int(r), int(msg.Controllen), int(msg.Flags), 0
}

// mmsghdr is the kernel's struct mmsghdr: one message of recvmmsg (Go
// pads it as C does: 64 bytes on 64-bit, 32 on 32-bit).
type mmsghdr struct {
	hdr unix.Msghdr
	n   uint32
}

// recvBatch is a set of buffers for rawRecvmmsg, owned by one reader.
type recvBatch struct {
	msgs  []mmsghdr
	iovs  []unix.Iovec
	froms []sockaddr
	bufs  [][]byte
	oobs  [][]byte
}

func newRecvBatch(n, size, oobSize int) *recvBatch {
	b := &recvBatch{msgs: make([]mmsghdr, n), iovs: make([]unix.Iovec, n), froms: make([]sockaddr, n), bufs: make([][]byte, n), oobs: make([][]byte, n)}
	for i := range n {
		b.bufs[i], b.oobs[i] = make([]byte, size), make([]byte, oobSize)
	}
	return b
}

// rawRecvmmsg reads up to max datagrams (at most the batch's size) from
// the non-blocking socket fd in one system call: message i is
// b.bufs[i][:b.msgs[i].n], its control data b.oobs[i][:controllen] and
// its source b.froms[i]. It returns how many it read; fewer than asked
// means the queue was empty at that moment, and so does EAGAIN with none.
func rawRecvmmsg(fd uintptr, b *recvBatch, max int) (int, syscall.Errno) {
	max = min(max, len(b.msgs))
	for i := range max {
		m := &b.msgs[i]
		*m = mmsghdr{}
		m.hdr = msghdr(&b.iovs[i], b.bufs[i], b.oobs[i])
		m.hdr.Name = (*byte)(unsafe.Pointer(&b.froms[i].raw))
		m.hdr.Namelen = uint32(unsafe.Sizeof(b.froms[i].raw))
	}
	r, _, e := syscall.RawSyscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&b.msgs[0])), uintptr(max), unix.MSG_DONTWAIT, 0, 0)
	runtime.KeepAlive(b)
	if e != 0 {
		return 0, e
	}
	for i := range int(r) {
		b.froms[i].len = b.msgs[i].hdr.Namelen
	}
	return int(r), 0
}

// rawSendmsg sends p (with control messages oob) to `to` on the
// non-blocking socket fd.
func rawSendmsg(fd uintptr, p, oob []byte, to *sockaddr) syscall.Errno {
	var iov unix.Iovec
	msg := msghdr(&iov, p, oob)
	if to != nil {
		msg.Name = (*byte)(unsafe.Pointer(&to.raw))
		msg.Namelen = to.len
	}
	_, _, e := syscall.RawSyscall6(unix.SYS_SENDMSG, fd, uintptr(unsafe.Pointer(&msg)), unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL, 0, 0, 0)
	runtime.KeepAlive(p)
	runtime.KeepAlive(oob)
	runtime.KeepAlive(to)
	return e
}

// cmsgs walks the control messages of one datagram without allocating.
type cmsgs []byte

// next returns the first message's level, type and data, and the rest; ok
// is false at the end (or on a malformed header).
func (c cmsgs) next() (level, typ int32, data []byte, rest cmsgs, ok bool) {
	if len(c) < unix.SizeofCmsghdr {
		return 0, 0, nil, nil, false
	}
	h := (*unix.Cmsghdr)(unsafe.Pointer(&c[0]))
	l := int(h.Len)
	hdr := unix.CmsgLen(0)
	if l < hdr || l > len(c) {
		return 0, 0, nil, nil, false
	}
	adv := unix.CmsgSpace(l - hdr)
	if adv > len(c) {
		adv = len(c)
	}
	return h.Level, h.Type, c[hdr:l], c[adv:], true
}
