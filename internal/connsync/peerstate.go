package connsync

// The peer state message codec: what one director tells the other about
// its half of the cluster, carried by PeerChannel.
//
// # Why
//
// The kernel's sync daemons carry the connections, but nothing else: each
// director runs its own health checks and takes its operator's commands.
// If the standby thinks a real server is down that the master still sends
// connections to, or an operator drained a server on the master only, the
// standby's table differs from the master's, and the first thing a
// failover does is change where traffic goes. The peer state carries what
// the kernel cannot: the health verdicts and administrative overrides (so
// the standby programs the master's view), the config epoch (so a
// director knows its peer runs the same services), and the number of
// connections each holds (so a recovering director can wait until it holds
// the master's connections before it preempts).
//
// # Messages (payload of an authenticated heartbeat frame, ≤ 1024 bytes)
//
//	STATE  'S' version=1 gen(8) ack(8) epoch(8) flags(1) conns(8) pages(2)
//	PAGE   'P' version=1 gen(8) page(2) pages(2) count(2) entries...
//	entry  keylen(1) key real(addrlen(1) addr port(2)) flags(1) weight(2) at(8)
//
// STATE is sent every interval and at once when the state changes. gen
// numbers the sender's entry list, changed whenever an entry changes; ack
// is the latest gen of the receiver's list the sender holds complete; the
// entry list travels in PAGE messages, resent while the receiver's ack
// lags. flags: bit 0 = the sender holds the virtual addresses (master).
// Integers are big-endian; at is Unix nanoseconds (0: never).
//
// Entries list only what differs from the default (a real server that is
// healthy and has no override is not listed), so a healthy cluster's
// state fits one datagram whatever its size.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// PeerState is one director's state as its peer sees it.
type PeerState struct {
	// Epoch identifies the services configuration (a hash): two directors
	// with different epochs run different services and must not adopt each
	// other's verdicts.
	Epoch uint64
	// Master: the sender holds the virtual addresses.
	Master bool
	// Conns is the number of IPVS connections in the sender's table.
	Conns uint64
	// Entries are the real servers that are down or overridden, sorted.
	Entries []PeerEntry
}

// PeerEntry is the state of one real server of one virtual service, where
// it differs from the default (healthy, no override).
type PeerEntry struct {
	Service string // the service's config key, e.g. tcp/192.0.2.100:80
	Real    netip.AddrPort
	// Down: the sender's checks find it failed.
	Down bool
	// Override: an operator's setting, and when it was set or cleared
	// (AdminAt, zero if never): the most recent one wins on both nodes.
	Drained   bool
	Weight    int // with HasWeight
	HasWeight bool
	AdminAt   int64 // Unix nanoseconds
}

// Key sorts and identifies entries.
func (e PeerEntry) Key() string { return e.Service + " " + e.Real.String() }

const (
	msgState       = 'S'
	msgPage        = 'P'
	peerVersion    = 1
	stateLen       = 1 + 1 + 8 + 8 + 8 + 1 + 8 + 2
	pageHeaderLen  = 1 + 1 + 8 + 2 + 2 + 2
	maxServiceKey  = 255
	flagMaster     = 1
	entryDown      = 1
	entryDrained   = 2
	entryHasWeight = 4
	entryFlags     = entryDown | entryDrained | entryHasWeight
)

// stateMsg is a decoded STATE message.
type stateMsg struct {
	Gen, Ack uint64
	Epoch    uint64
	Master   bool
	Conns    uint64
	Pages    int
}

// pageMsg is a decoded PAGE message.
type pageMsg struct {
	Gen         uint64
	Page, Pages int
	Entries     []PeerEntry
}

// Errors of the peer message decoder; every one is counted.
var (
	errPeerTruncated = errors.New("truncated")
	errPeerVersion   = errors.New("unknown version")
	errPeerType      = errors.New("unknown message type")
	errPeerMalformed = errors.New("malformed")
)

func encodeState(m stateMsg) []byte {
	b := make([]byte, 0, stateLen)
	b = append(b, msgState, peerVersion)
	b = binary.BigEndian.AppendUint64(b, m.Gen)
	b = binary.BigEndian.AppendUint64(b, m.Ack)
	b = binary.BigEndian.AppendUint64(b, m.Epoch)
	var flags byte
	if m.Master {
		flags |= flagMaster
	}
	b = append(b, flags)
	b = binary.BigEndian.AppendUint64(b, m.Conns)
	return binary.BigEndian.AppendUint16(b, uint16(m.Pages))
}

func appendEntry(b []byte, e PeerEntry) []byte {
	b = append(b, byte(len(e.Service)))
	b = append(b, e.Service...)
	a := e.Real.Addr().Unmap()
	b = append(b, byte(a.BitLen()/8))
	b = append(b, a.AsSlice()...)
	b = binary.BigEndian.AppendUint16(b, e.Real.Port())
	var flags byte
	if e.Down {
		flags |= entryDown
	}
	if e.Drained {
		flags |= entryDrained
	}
	if e.HasWeight {
		flags |= entryHasWeight
	}
	b = append(b, flags)
	b = binary.BigEndian.AppendUint16(b, uint16(e.Weight))
	return binary.BigEndian.AppendUint64(b, uint64(e.AdminAt))
}

// encodePages splits entries into PAGE messages of at most max bytes.
// Entries whose service key is too long for the format are left out and
// counted in skipped (config keys are far shorter).
func encodePages(gen uint64, entries []PeerEntry, max int) (pages [][]byte, skipped int) {
	var cur []byte
	count := 0
	flush := func() {
		if cur != nil {
			binary.BigEndian.PutUint16(cur[pageHeaderLen-2:], uint16(count))
			pages = append(pages, cur)
		}
		cur, count = nil, 0
	}
	for _, e := range entries {
		if len(e.Service) > maxServiceKey || !e.Real.IsValid() {
			skipped++
			continue
		}
		eb := appendEntry(nil, e)
		if cur != nil && len(cur)+len(eb) > max {
			flush()
		}
		if cur == nil {
			cur = make([]byte, 0, max)
			cur = append(cur, msgPage, peerVersion)
			cur = binary.BigEndian.AppendUint64(cur, gen)
			cur = append(cur, 0, 0, 0, 0, 0, 0) // page, pages, count: filled below
		}
		cur = append(cur, eb...)
		count++
	}
	flush()
	for i, p := range pages {
		binary.BigEndian.PutUint16(p[10:], uint16(i))
		binary.BigEndian.PutUint16(p[12:], uint16(len(pages)))
	}
	return pages, skipped
}

// decodePeerMsg decodes one message: a stateMsg or a pageMsg.
func decodePeerMsg(b []byte) (any, error) {
	if len(b) < 2 {
		return nil, errPeerTruncated
	}
	if b[1] != peerVersion {
		return nil, errPeerVersion
	}
	switch b[0] {
	case msgState:
		if len(b) != stateLen {
			if len(b) < stateLen {
				return nil, errPeerTruncated
			}
			return nil, fmt.Errorf("%w: %d trailing bytes", errPeerMalformed, len(b)-stateLen)
		}
		m := stateMsg{
			Gen:   binary.BigEndian.Uint64(b[2:]),
			Ack:   binary.BigEndian.Uint64(b[10:]),
			Epoch: binary.BigEndian.Uint64(b[18:]),
			Conns: binary.BigEndian.Uint64(b[27:]),
			Pages: int(binary.BigEndian.Uint16(b[35:])),
		}
		flags := b[26]
		if flags&^flagMaster != 0 {
			return nil, fmt.Errorf("%w: unknown flags %#x", errPeerMalformed, flags)
		}
		m.Master = flags&flagMaster != 0
		return m, nil
	case msgPage:
		if len(b) < pageHeaderLen {
			return nil, errPeerTruncated
		}
		m := pageMsg{
			Gen:   binary.BigEndian.Uint64(b[2:]),
			Page:  int(binary.BigEndian.Uint16(b[10:])),
			Pages: int(binary.BigEndian.Uint16(b[12:])),
		}
		count := int(binary.BigEndian.Uint16(b[14:]))
		if m.Page >= m.Pages {
			return nil, fmt.Errorf("%w: page %d of %d", errPeerMalformed, m.Page, m.Pages)
		}
		rest := b[pageHeaderLen:]
		for range count {
			e, n, err := decodeEntry(rest)
			if err != nil {
				return nil, err
			}
			m.Entries = append(m.Entries, e)
			rest = rest[n:]
		}
		if len(rest) != 0 {
			return nil, fmt.Errorf("%w: %d trailing bytes", errPeerMalformed, len(rest))
		}
		return m, nil
	}
	return nil, errPeerType
}

func decodeEntry(b []byte) (PeerEntry, int, error) {
	var e PeerEntry
	if len(b) < 1 {
		return e, 0, errPeerTruncated
	}
	kl := int(b[0])
	if len(b) < 1+kl+1 {
		return e, 0, errPeerTruncated
	}
	e.Service = string(b[1 : 1+kl])
	if kl == 0 || strings.ContainsAny(e.Service, "\x00\n") {
		return e, 0, fmt.Errorf("%w: service key %q", errPeerMalformed, e.Service)
	}
	off := 1 + kl
	al := int(b[off])
	if al != 4 && al != 16 {
		return e, 0, fmt.Errorf("%w: address length %d", errPeerMalformed, al)
	}
	off++
	if len(b) < off+al+2+1+2+8 {
		return e, 0, errPeerTruncated
	}
	addr, _ := netip.AddrFromSlice(b[off : off+al])
	off += al
	e.Real = netip.AddrPortFrom(addr, binary.BigEndian.Uint16(b[off:]))
	off += 2
	flags := b[off]
	off++
	if flags&^entryFlags != 0 {
		return e, 0, fmt.Errorf("%w: unknown entry flags %#x", errPeerMalformed, flags)
	}
	e.Down, e.Drained, e.HasWeight = flags&entryDown != 0, flags&entryDrained != 0, flags&entryHasWeight != 0
	e.Weight = int(binary.BigEndian.Uint16(b[off:]))
	off += 2
	e.AdminAt = int64(binary.BigEndian.Uint64(b[off:]))
	off += 8
	return e, off, nil
}

// sortEntries orders entries by Key, so equal lists encode equally.
func sortEntries(es []PeerEntry) {
	slices.SortFunc(es, func(a, b PeerEntry) int { return strings.Compare(a.Key(), b.Key()) })
}
