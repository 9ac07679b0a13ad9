package heartbeat

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"golang.org/x/sys/unix"
)

// Routine adverts: a backup that does not wake for its master's adverts.
//
// A backup's only use for an advert from its master that says what the last
// one said (same source, VRID, priority and interval) is to push its
// Master_Down timer back to the advert's arrival plus Master_Down_Interval.
// That can wait until the timer is due: if the adverts read then, in order
// and with the kernel's arrival times, move it later, the backup sleeps on;
// if not, the timer has run out at the same moment as if each had been read
// on arrival. Only an advert that says something new (priority 0, another
// priority or interval, another sender) can bring a decision earlier, and
// those still wake the engine at once.
//
// So a Manual socket has a second receiving socket, the quiet one, that no
// epoll watches. Socket filters split the traffic between the two: the
// quiet socket accepts exactly the routine adverts (SetRoutine), the
// watched one everything else. Drain reads both and merges them by arrival
// time (SO_TIMESTAMPNS), so the engine sees one stream in the order the
// kernel received it, and every packet is still checked (TTL, checksum) in
// user space before it counts. An idle backup then wakes once per
// Master_Down_Interval minus an advert interval instead of once per
// advert, and its master's send no longer wakes a thread on the backup.

// routineAdvert is an advert a backup need not wake for: one from src
// whose first six bytes (version and type, VRID, priority, address count,
// interval) are head.
type routineAdvert struct {
	src  netip.Addr
	head [6]byte
}

// Filter verdicts: how many bytes of the packet to keep (all), or none.
const (
	filterAccept = 0x40000
	filterDrop   = 0
)

// acceptAll is a socket filter that keeps every packet.
var acceptAll = []unix.SockFilter{{Code: 0x06, K: filterAccept}}

// cBPF opcodes used below.
const (
	bpfLdW     = 0x20 // A = word at k
	bpfLdH     = 0x28 // A = half-word at k
	bpfLdWInd  = 0x40 // A = word at x+k
	bpfLdHInd  = 0x48 // A = half-word at x+k
	bpfLdLen   = 0x80 // A = packet length
	bpfLdxMsh  = 0xb1 // X = 4*(byte at k & 0xf)
	bpfTxa     = 0x87 // A = X
	bpfTax     = 0x07 // X = A
	bpfAddK    = 0x04 // A += k
	bpfJeqK    = 0x15 // A == k ?
	bpfJgeK    = 0x35 // A >= k ?
	bpfJgeX    = 0x3d // A >= X ?
	bpfRetK    = 0x06 // return k
	bpfNetOff  = -0x100000
	vrrpHeadSz = 6
)

// routineFilter is a socket filter that returns match for a packet that is
// one of rs and other for any other packet (a packet too short to tell is
// "other": the watched socket takes it, and user space counts it). An IPv4
// raw socket's filter sees the packet from its IP header, an IPv6 one's
// from the VRRP header (the source is then read at the network header).
func routineFilter(v6 bool, rs []routineAdvert, match, other uint32) []unix.SockFilter {
	ins := func(code uint16, jt, jf uint8, k uint32) unix.SockFilter {
		return unix.SockFilter{Code: code, Jt: jt, Jf: jf, K: k}
	}
	var p []unix.SockFilter
	if v6 {
		p = append(p,
			ins(bpfLdLen, 0, 0, 0),
			ins(bpfJgeK, 1, 0, vrrpHeadSz),
			ins(bpfRetK, 0, 0, other),
		)
	} else {
		p = append(p,
			ins(bpfLdxMsh, 0, 0, 0), // X = IP header length
			ins(bpfTxa, 0, 0, 0),
			ins(bpfAddK, 0, 0, vrrpHeadSz),
			ins(bpfTax, 0, 0, 0),
			ins(bpfLdLen, 0, 0, 0),
			ins(bpfJgeX, 1, 0, 0),
			ins(bpfRetK, 0, 0, other),
			ins(bpfLdxMsh, 0, 0, 0),
		)
	}
	for _, r := range rs {
		// Each block falls through on a match and jumps to the next block
		// on the first difference; jf counts the instructions left in it.
		var cmp []unix.SockFilter
		if v6 {
			a := r.src.As16()
			for i := 0; i < 16; i += 4 {
				cmp = append(cmp, ins(bpfLdW, 0, 0, uint32(int32(bpfNetOff+8+i))), ins(bpfJeqK, 0, 0, binary.BigEndian.Uint32(a[i:])))
			}
			cmp = append(cmp, ins(bpfLdW, 0, 0, 0), ins(bpfJeqK, 0, 0, binary.BigEndian.Uint32(r.head[:4])))
			cmp = append(cmp, ins(bpfLdH, 0, 0, 4), ins(bpfJeqK, 0, 0, uint32(binary.BigEndian.Uint16(r.head[4:]))))
		} else {
			a := r.src.As4()
			cmp = append(cmp, ins(bpfLdW, 0, 0, 12), ins(bpfJeqK, 0, 0, binary.BigEndian.Uint32(a[:])))
			cmp = append(cmp, ins(bpfLdWInd, 0, 0, 0), ins(bpfJeqK, 0, 0, binary.BigEndian.Uint32(r.head[:4])))
			cmp = append(cmp, ins(bpfLdHInd, 0, 0, 4), ins(bpfJeqK, 0, 0, uint32(binary.BigEndian.Uint16(r.head[4:]))))
		}
		cmp = append(cmp, ins(bpfRetK, 0, 0, match))
		for i := range cmp {
			if cmp[i].Code == bpfJeqK {
				cmp[i].Jf = uint8(len(cmp) - 1 - i)
			}
		}
		p = append(p, cmp...)
	}
	return append(p, ins(bpfRetK, 0, 0, other))
}

// SetRoutine sets (on) or clears the routine advert of key (the owner's
// name for one instance) on a Manual socket: adverts from src whose first
// six bytes are head. A socket that is not Manual ignores it. The filters
// change only when the set of adverts does. Call it from the goroutine
// that calls Drain.
func (s *VRRPSocket) SetRoutine(key any, src netip.Addr, head [6]byte, on bool) error {
	if s.quietFd < 0 {
		return nil
	}
	r := routineAdvert{src: src, head: head}
	if !on {
		r = routineAdvert{}
	}
	if old, ok := s.routines[key]; ok == on && old == r {
		return nil
	}
	if on {
		s.routines[key] = r
	} else {
		delete(s.routines, key)
	}
	set := make([]routineAdvert, 0, len(s.routines))
	for _, r := range s.routines {
		if !slices.Contains(set, r) {
			set = append(set, r)
		}
	}
	// Every packet must be accepted by one of the two sockets at every
	// moment (one taken twice is harmless, one lost is not): open the
	// watched socket to everything, then give the quiet one its new set,
	// then close the watched one to it.
	quiet, watched := dropAll, acceptAll
	if len(set) > 0 {
		quiet = routineFilter(s.cfg.IPv6, set, filterAccept, filterDrop)
		watched = routineFilter(s.cfg.IPv6, set, filterDrop, filterAccept)
	}
	if err := s.attachWatched(acceptAll); err != nil {
		return err
	}
	s.quietUsed = true
	if err := attachFilter(s.quietFd, quiet); err != nil {
		return fmt.Errorf("vrrp socket on %s: quiet filter: %w", s.cfg.Interface, err)
	}
	return s.attachWatched(watched)
}

func (s *VRRPSocket) attachWatched(f []unix.SockFilter) error {
	var err error
	cerr := s.rc.Control(func(fd uintptr) { err = attachFilter(int(fd), f) })
	if err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("vrrp socket on %s: filter: %w", s.cfg.Interface, err)
	}
	return nil
}

func attachFilter(fd int, f []unix.SockFilter) error {
	return unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &unix.SockFprog{Len: uint16(len(f)), Filter: &f[0]})
}

// openQuiet opens the quiet socket: a receiving socket like the watched
// one, with a filter that takes nothing until SetRoutine.
func (s *VRRPSocket) openQuiet() (int, error) {
	fd, err := s.rawSocket("quiet")
	if err != nil {
		return -1, err
	}
	err = attachFilter(fd, dropAll)
	if err == nil {
		err = s.setOptions(fd, false)
	}
	if err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("quiet socket: %w", err)
	}
	return fd, nil
}

// recvQueue is one receiving socket's side of a Drain: the packets of its
// last recvmmsg, decoded, and whether its queue is known to be empty.
type recvQueue struct {
	fd    uintptr
	batch *recvBatch
	pkts  []VRRPPacket // decoded, not yet delivered: pkts[head:]
	head  int
	dry   bool
}

// fill reads the next batch when every packet of the last one is
// delivered, until one is valid or the queue is empty.
func (q *recvQueue) fill(s *VRRPSocket) {
	for tries := 0; q.head == len(q.pkts) && !q.dry && tries < drainMax; tries++ {
		q.pkts, q.head = q.pkts[:0], 0
		n, errno := rawRecvmmsg(q.fd, q.batch, drainBatch)
		switch errno {
		case 0:
		case unix.EAGAIN:
			q.dry = true
			return
		default:
			continue // EINTR, ENOBUFS and the like: the next read may work
		}
		q.dry = n < drainBatch
		wall := time.Now()
		b := q.batch
		for i := range n {
			m := &b.msgs[i].hdr
			oob := b.oobs[i][:m.Controllen]
			pkt, ok := s.decode(b.bufs[i][:b.msgs[i].n], oob, b.froms[i].addrPort().Addr())
			if !ok {
				continue
			}
			pkt.At = arrival(oob, wall)
			q.pkts = append(q.pkts, pkt)
		}
	}
}

// arrival is a packet's kernel receive time (SCM_TIMESTAMPNS) on the
// monotonic clock of now (a time from the wall clock alone would not
// compare reliably with the engine's deadlines), or now when it has none.
func arrival(oob []byte, now time.Time) time.Time {
	for c := cmsgs(oob); ; {
		level, typ, data, rest, ok := c.next()
		if !ok {
			return now
		}
		if level == unix.SOL_SOCKET && typ == unix.SCM_TIMESTAMPNS && len(data) >= 16 {
			ts := time.Unix(int64(binary.NativeEndian.Uint64(data)), int64(binary.NativeEndian.Uint64(data[8:])))
			if age := now.Sub(ts); age > 0 {
				return now.Add(-age)
			}
			return now
		}
		c = rest
	}
}
