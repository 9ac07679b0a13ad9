package connsync

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/hadirector/hadirector/internal/ipvs"
)

// Errors Encode returns, wrapped with details; test with errors.Is.
var (
	ErrVersion  = errors.New("connsync: sync protocol version must be 0 or 1")
	ErrTooLarge = errors.New("connsync: message too large")
	ErrEntry    = errors.New("connsync: entry cannot be encoded")
)

// Encode encodes m as the kernel's master would send it: version 1 (or 0 if
// m.Version is 0), entries padded to 4 bytes, options in the order SEQ_DATA,
// PE_DATA, PE_NAME. In v1, SEQ_DATA is written when HasSeq is set; in v0 the
// sequence data follows when Flags has IN_SEQ or OUT_SEQ, as the kernel
// decides. Skip is ignored.
//
// It refuses more than 255 entries, a message over 65535 bytes, an entry
// whose addresses are not all of its Family (IPv4 only in v0), flags over 16
// bits in v0, PE data over 255 bytes or a PE name over 16.
func Encode(m *Message) ([]byte, error) {
	if len(m.Conns) > 0xff {
		return nil, fmt.Errorf("%w: %d entries, at most 255", ErrTooLarge, len(m.Conns))
	}
	var (
		b   []byte
		err error
	)
	switch m.Version {
	case 0:
		b, err = encodeV0(m)
	case protoVersion:
		b, err = encodeV1(m)
	default:
		return nil, fmt.Errorf("%w: %d", ErrVersion, m.Version)
	}
	if err != nil {
		return nil, err
	}
	if len(b) > maxMessageLen {
		return nil, fmt.Errorf("%w: %d bytes, at most %d", ErrTooLarge, len(b), maxMessageLen)
	}
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	return b, nil
}

func encodeV1(m *Message) ([]byte, error) {
	b := []byte{0, m.SyncID, 0, 0, uint8(len(m.Conns)), protoVersion, 0, 0}
	for i := range m.Conns {
		c := &m.Conns[i]
		is6, err := c.checkEncode(i)
		if err != nil {
			return nil, err
		}
		// The kernel pads before appending an entry, so the last one is
		// never padded.
		for len(b)%4 != 0 {
			b = append(b, 0)
		}
		start := len(b)
		typ := uint8(0)
		if is6 {
			typ = typeInet6
		}
		b = append(b, typ, uint8(c.Protocol))
		b = binary.BigEndian.AppendUint16(b, 0) // ver_size, below
		b = binary.BigEndian.AppendUint32(b, c.Flags)
		b = binary.BigEndian.AppendUint16(b, c.State)
		b = binary.BigEndian.AppendUint16(b, c.Client.Port())
		b = binary.BigEndian.AppendUint16(b, c.Virtual.Port())
		b = binary.BigEndian.AppendUint16(b, c.Real.Port())
		b = binary.BigEndian.AppendUint32(b, c.FWMark)
		b = binary.BigEndian.AppendUint32(b, uint32(c.Timeout/time.Second))
		for _, a := range []netip.Addr{c.Client.Addr(), c.Virtual.Addr(), c.Real.Addr()} {
			b = append(b, a.AsSlice()...)
		}
		if c.HasSeq {
			b = append(b, optSeqData, seqOptLen)
			b = appendSeq(b, c.InSeq, binary.BigEndian)
			b = appendSeq(b, c.OutSeq, binary.BigEndian)
		}
		if len(c.PEData) > 0 {
			b = append(b, optPEData, uint8(len(c.PEData)))
			b = append(b, c.PEData...)
		}
		if len(c.PEName) > 0 {
			b = append(b, optPEName, uint8(len(c.PEName)))
			b = append(b, c.PEName...)
		}
		size := len(b) - start
		if size > sizeMask {
			return nil, fmt.Errorf("%w: entry %d is %d bytes, at most %d", ErrEntry, i, size, sizeMask)
		}
		binary.BigEndian.PutUint16(b[start+2:], uint16(size))
		if len(b) > maxMessageLen {
			return nil, fmt.Errorf("%w: over %d bytes at entry %d", ErrTooLarge, maxMessageLen, i)
		}
	}
	return b, nil
}

func encodeV0(m *Message) ([]byte, error) {
	if len(m.Conns) == 0 {
		// A v0 header with a count of 0 would read as a v1 header.
		return []byte{0, m.SyncID, 0, 0}, nil
	}
	b := []byte{uint8(len(m.Conns)), m.SyncID, 0, 0}
	for i := range m.Conns {
		c := &m.Conns[i]
		is6, err := c.checkEncode(i)
		switch {
		case err != nil:
			return nil, err
		case is6:
			return nil, fmt.Errorf("%w: entry %d: v0 carries IPv4 only", ErrEntry, i)
		case c.Flags > 0xffff:
			return nil, fmt.Errorf("%w: entry %d: flags %#x do not fit v0's 16 bits", ErrEntry, i, c.Flags)
		}
		b = append(b, 0, uint8(c.Protocol))
		b = binary.BigEndian.AppendUint16(b, c.Client.Port())
		b = binary.BigEndian.AppendUint16(b, c.Virtual.Port())
		b = binary.BigEndian.AppendUint16(b, c.Real.Port())
		for _, a := range []netip.Addr{c.Client.Addr(), c.Virtual.Addr(), c.Real.Addr()} {
			b = append(b, a.AsSlice()...)
		}
		b = binary.BigEndian.AppendUint16(b, uint16(c.Flags))
		b = binary.BigEndian.AppendUint16(b, c.State)
		if c.Flags&FlagSeqMask != 0 {
			b = appendSeq(b, c.InSeq, binary.NativeEndian)
			b = appendSeq(b, c.OutSeq, binary.NativeEndian)
		}
		if len(b) > maxMessageLen {
			return nil, fmt.Errorf("%w: over %d bytes at entry %d", ErrTooLarge, maxMessageLen, i)
		}
	}
	return b, nil
}

// checkEncode validates c for Encode and reports whether it is IPv6.
func (c *Conn) checkEncode(i int) (is6 bool, err error) {
	switch c.Family {
	case ipvs.IPv4, ipvs.IPv6:
		is6 = c.Family == ipvs.IPv6
	default:
		return false, fmt.Errorf("%w: entry %d: family %v", ErrEntry, i, c.Family)
	}
	for _, a := range []netip.Addr{c.Client.Addr(), c.Virtual.Addr(), c.Real.Addr()} {
		if !a.IsValid() || a.Is6() != is6 || a.Zone() != "" {
			return false, fmt.Errorf("%w: entry %d: address %v is not %v", ErrEntry, i, a, c.Family)
		}
	}
	switch {
	case c.Protocol > 0xff:
		return false, fmt.Errorf("%w: entry %d: protocol %d", ErrEntry, i, c.Protocol)
	case c.Timeout < 0 || c.Timeout/time.Second > 0xffffffff:
		return false, fmt.Errorf("%w: entry %d: timeout %v", ErrEntry, i, c.Timeout)
	case len(c.PEData) > 0xff:
		return false, fmt.Errorf("%w: entry %d: PE data of %d bytes, at most 255", ErrEntry, i, len(c.PEData))
	case len(c.PEName) > peNameMaxLen:
		return false, fmt.Errorf("%w: entry %d: PE name of %d bytes, at most %d", ErrEntry, i, len(c.PEName), peNameMaxLen)
	}
	return is6, nil
}

func appendSeq(b []byte, s Seq, o binary.AppendByteOrder) []byte {
	b = o.AppendUint32(b, s.Init)
	b = o.AppendUint32(b, s.Delta)
	return o.AppendUint32(b, s.PrevDelta)
}
