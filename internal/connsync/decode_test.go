package connsync

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"net/netip"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hadirector/hadirector/internal/ipvs"
)

// The byte slices here are written by hand from the layouts in
// ip_vs_sync.c, not with Encode, so that the decoder and the encoder are each
// checked against the kernel's format rather than against each other.

var ap = netip.MustParseAddrPort

// hdr1 is a v1 header: reserved, syncid, size, count, version, spare.
func hdr1(syncID, count uint8, size uint16) []byte {
	return []byte{0, syncID, byte(size >> 8), byte(size), count, 1, 0, 0}
}

// ent is one v1 entry's fixed fields, for the hand-built messages.
type ent struct {
	typ, proto    uint8
	ver           uint8 // entry version, top 4 bits of ver_size
	size          int   // ver_size's size; 0 = the real length
	flags         uint32
	state         uint16
	c, v, d       netip.AddrPort
	fwmark, tmout uint32
	opts          []byte
}

func (e ent) bytes() []byte {
	b := make([]byte, 24, 72+len(e.opts))
	b[0], b[1] = e.typ, e.proto
	binary.BigEndian.PutUint32(b[4:], e.flags)
	binary.BigEndian.PutUint16(b[8:], e.state)
	binary.BigEndian.PutUint16(b[10:], e.c.Port())
	binary.BigEndian.PutUint16(b[12:], e.v.Port())
	binary.BigEndian.PutUint16(b[14:], e.d.Port())
	binary.BigEndian.PutUint32(b[16:], e.fwmark)
	binary.BigEndian.PutUint32(b[20:], e.tmout)
	b = append(b, e.c.Addr().AsSlice()...)
	b = append(b, e.v.Addr().AsSlice()...)
	b = append(b, e.d.Addr().AsSlice()...)
	b = append(b, e.opts...)
	size := e.size
	if size == 0 {
		size = len(b)
	}
	binary.BigEndian.PutUint16(b[2:], uint16(e.ver)<<12|uint16(size))
	return b
}

// msg1 is a v1 message of the entries, each but the last padded to 4 bytes,
// with the right count and size.
func msg1(syncID uint8, entries ...[]byte) []byte {
	b := hdr1(syncID, uint8(len(entries)), 0)
	for i, e := range entries {
		b = append(b, e...)
		if i < len(entries)-1 {
			for len(b)%4 != 0 {
				b = append(b, 0)
			}
		}
	}
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	return b
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

var (
	tcpEst = ent{proto: 6, state: 1, c: ap("10.0.1.2:50000"), v: ap("10.0.1.100:80"), d: ap("10.0.2.2:8080"), tmout: 900}
	conn4  = Conn{Family: ipvs.IPv4, Protocol: ipvs.TCP, State: 1, Client: ap("10.0.1.2:50000"),
		Virtual: ap("10.0.1.100:80"), Real: ap("10.0.2.2:8080"), Timeout: 900 * time.Second}
)

func TestDecodeV1IPv4Literal(t *testing.T) {
	b := []byte{
		0x00, 0x05, 0x00, 0x2c, // reserved, syncid 5, size 44
		0x01, 0x01, 0x00, 0x00, // 1 entry, version 1, spare
		0x00, 0x06, 0x00, 0x24, // IPv4, TCP, version 0 size 36
		0x00, 0x00, 0x01, 0x00, // flags: INACTIVE, NAT
		0x00, 0x02, 0xc3, 0x50, // state 2 (SYN_SENT), cport 50000
		0x00, 0x50, 0x1f, 0x90, // vport 80, dport 8080
		0x00, 0x00, 0x00, 0x00, // fwmark
		0x00, 0x00, 0x00, 0x3c, // timeout 60 s
		10, 0, 1, 2, 10, 0, 1, 100, 10, 0, 2, 2,
	}
	var m Message
	if err := Decode(b, &m); err != nil {
		t.Fatal(err)
	}
	want := Message{Version: 1, SyncID: 5, Conns: []Conn{{
		Family: ipvs.IPv4, Protocol: ipvs.TCP, Flags: FlagInactive, State: 2,
		Client: ap("10.0.1.2:50000"), Virtual: ap("10.0.1.100:80"), Real: ap("10.0.2.2:8080"),
		Timeout: time.Minute,
	}}}
	checkMessage(t, &m, &want)
	c := &m.Conns[0]
	if c.Forwarding() != ipvs.NAT || c.Template() || c.StateName() != "SYN_SENT" {
		t.Errorf("Forwarding %v, Template %v, StateName %q", c.Forwarding(), c.Template(), c.StateName())
	}
}

func TestDecodeV1(t *testing.T) {
	seq := []byte{optSeqData, 24,
		0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, // in: init, delta, previous delta
		0, 0, 0, 4, 0xff, 0xff, 0xff, 0xfe, 0, 0, 0, 6} // out
	v6 := ent{typ: 1, proto: 17, c: ap("[2001:db8::1]:5353"), v: ap("[2001:db8::100]:53"),
		d: ap("[2001:db8:1::2]:53"), tmout: 300, flags: 3}
	conn6 := Conn{Family: ipvs.IPv6, Protocol: ipvs.UDP, Flags: 3, Client: ap("[2001:db8::1]:5353"),
		Virtual: ap("[2001:db8::100]:53"), Real: ap("[2001:db8:1::2]:53"), Timeout: 5 * time.Minute}
	withSeq := func(c Conn) Conn {
		c.HasSeq, c.InSeq, c.OutSeq = true, Seq{1, 2, 3}, Seq{4, 0xfffffffe, 6}
		return c
	}
	withOpts := func(e ent, opts ...byte) ent { e.opts = opts; return e }
	with := func(c Conn, f func(*Conn)) Conn { f(&c); return c }

	tests := []struct {
		name string
		b    []byte
		want []Conn
	}{
		{"no entries", msg1(9), nil},
		{"IPv4", msg1(9, tcpEst.bytes()), []Conn{conn4}},
		{"IPv6", msg1(9, v6.bytes()), []Conn{conn6}},
		{"IPv6 type with more bits set", msg1(9, ent{typ: 0x03, proto: 17, c: v6.c, v: v6.v, d: v6.d, tmout: 300, flags: 3}.bytes()),
			[]Conn{conn6}},
		{"SEQ_DATA", msg1(9, withOpts(tcpEst, seq...).bytes()), []Conn{withSeq(conn4)}},
		{"SEQ_DATA marked optional is still read", msg1(9, withOpts(tcpEst, append([]byte{optSeqData | optParam}, seq[1:]...)...).bytes()),
			[]Conn{withSeq(conn4)}},
		{"PE data and name, then padding before an IPv6 entry",
			msg1(9, withOpts(tcpEst, optPEData, 3, 'a', 'b', 'c', optPEName, 3, 's', 'i', 'p').bytes(), v6.bytes()),
			[]Conn{with(conn4, func(c *Conn) { c.PEData, c.PEName = []byte("abc"), []byte("sip") }), conn6}},
		{"IPv6 with SEQ_DATA then IPv4",
			msg1(9, withOpts(v6, seq...).bytes(), tcpEst.bytes()), []Conn{withSeq(conn6), conn4}},
		{"unknown optional option is ignored",
			msg1(9, withOpts(tcpEst, 0x40|9, 2, 0xaa, 0xbb).bytes()), []Conn{conn4}},
		{"unknown mandatory option skips the entry, not the message",
			msg1(9, withOpts(tcpEst, 9, 1, 0xaa).bytes(), v6.bytes()),
			[]Conn{with(conn4, func(c *Conn) { c.Skip = DropUnknownOption }), conn6}},
		{"options after an unknown mandatory one are not read",
			msg1(9, withOpts(tcpEst, 9, 1, 0xaa, optSeqData, 1, 0).bytes(), v6.bytes()),
			[]Conn{with(conn4, func(c *Conn) { c.Skip = DropUnknownOption }), conn6}},
		{"fwmark template",
			msg1(9, ent{proto: 0, flags: FlagTemplate | 3, state: 1, c: ap("192.0.2.0:0"), v: ap("0.0.0.42:0"),
				d: ap("198.51.100.7:0"), fwmark: 42, tmout: 360}.bytes()),
			[]Conn{{Family: ipvs.IPv4, Flags: FlagTemplate | 3, State: 1, Client: ap("192.0.2.0:0"),
				Virtual: ap("0.0.0.42:0"), Real: ap("198.51.100.7:0"), FWMark: 42, Timeout: 6 * time.Minute}}},
		{"trailing bytes after the last entry are ignored",
			func() []byte {
				b := append(msg1(9, tcpEst.bytes()), 1, 2, 3)
				binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
				return b
			}(), []Conn{conn4}},
		{"unknown protocol skipped", msg1(9, ent{proto: 47, c: tcpEst.c, v: tcpEst.v, d: tcpEst.d}.bytes(), v6.bytes()),
			[]Conn{{Family: ipvs.IPv4, Protocol: 47, Client: tcpEst.c, Virtual: tcpEst.v, Real: tcpEst.d, Skip: DropUnknownProtocol}, conn6}},
		{"TCP state 11 skipped", msg1(9, ent{proto: 6, state: 11, c: tcpEst.c, v: tcpEst.v, d: tcpEst.d}.bytes()),
			[]Conn{{Family: ipvs.IPv4, Protocol: ipvs.TCP, State: 11, Client: tcpEst.c, Virtual: tcpEst.v, Real: tcpEst.d, Skip: DropBadState}}},
		{"UDP state 1 skipped", msg1(9, ent{proto: 17, state: 1, c: tcpEst.c, v: tcpEst.v, d: tcpEst.d}.bytes()),
			[]Conn{{Family: ipvs.IPv4, Protocol: ipvs.UDP, State: 1, Client: tcpEst.c, Virtual: tcpEst.v, Real: tcpEst.d, Skip: DropBadState}}},
		{"SCTP state 13 (CLOSED) kept, ESP state 0 kept",
			msg1(9, ent{proto: 132, state: 13, c: tcpEst.c, v: tcpEst.v, d: tcpEst.d}.bytes(), ent{proto: 50, c: tcpEst.c, v: tcpEst.v, d: tcpEst.d}.bytes()),
			[]Conn{{Family: ipvs.IPv4, Protocol: ipvs.SCTP, State: 13, Client: tcpEst.c, Virtual: tcpEst.v, Real: tcpEst.d},
				{Family: ipvs.IPv4, Protocol: 50, Client: tcpEst.c, Virtual: tcpEst.v, Real: tcpEst.d}}},
		{"template state 2 skipped, whatever its protocol", msg1(9, ent{proto: 47, flags: FlagTemplate, state: 2, c: tcpEst.c, v: tcpEst.v, d: tcpEst.d}.bytes()),
			[]Conn{{Family: ipvs.IPv4, Protocol: 47, Flags: FlagTemplate, State: 2, Client: tcpEst.c, Virtual: tcpEst.v, Real: tcpEst.d, Skip: DropBadState}}},
		{"PE data without a name skipped", msg1(9, withOpts(tcpEst, optPEData, 1, 'x').bytes()),
			[]Conn{with(conn4, func(c *Conn) { c.PEData, c.Skip = []byte("x"), DropBadPE })}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var m Message
			if err := Decode(tt.b, &m); err != nil {
				t.Fatal(err)
			}
			checkMessage(t, &m, &Message{Version: 1, SyncID: 9, Conns: tt.want})
		})
	}
}

func TestDecodeV0(t *testing.T) {
	entry := func(proto uint8, flags, state uint16) []byte {
		return []byte{
			0, proto, 0xc3, 0x50, 0x00, 0x50, 0x1f, 0x90, // reserved, protocol, cport, vport, dport
			10, 0, 1, 2, 10, 0, 1, 100, 10, 0, 2, 2, // caddr, vaddr, daddr
			byte(flags >> 8), byte(flags), byte(state >> 8), byte(state),
		}
	}
	v0 := func(syncID uint8, entries ...[]byte) []byte {
		b := cat(append([][]byte{{uint8(len(entries)), syncID, 0, 0}}, entries...)...)
		binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
		return b
	}
	// Sequence data in v0 is a memcpy of host-order structs.
	seq := make([]byte, 0, 24)
	for _, v := range []uint32{1, 2, 3, 4, 5, 6} {
		seq = binary.NativeEndian.AppendUint32(seq, v)
	}
	base := Conn{Family: ipvs.IPv4, Protocol: ipvs.TCP, State: 1,
		Client: ap("10.0.1.2:50000"), Virtual: ap("10.0.1.100:80"), Real: ap("10.0.2.2:8080")}
	with := func(f func(*Conn)) Conn { c := base; f(&c); return c }

	tests := []struct {
		name string
		b    []byte
		want []Conn
	}{
		{"empty", []byte{0, 7, 0, 4}, nil},
		{"one entry", v0(7, entry(6, 0, 1)), []Conn{base}},
		{"sequence data follows IN_SEQ", v0(7, cat(entry(6, FlagInSeq, 1), seq), entry(6, 0, 1)),
			[]Conn{with(func(c *Conn) { c.Flags, c.HasSeq, c.InSeq, c.OutSeq = FlagInSeq, true, Seq{1, 2, 3}, Seq{4, 5, 6} }), base}},
		{"template, DR", v0(7, entry(6, FlagTemplate|3, 1)), []Conn{with(func(c *Conn) { c.Flags = FlagTemplate | 3 })}},
		{"bad state and unknown protocol skipped", v0(7, entry(6, 0, 11), entry(99, 0, 0), entry(6, 0, 1)),
			[]Conn{with(func(c *Conn) { c.State, c.Skip = 11, DropBadState }),
				with(func(c *Conn) { c.Protocol, c.State, c.Skip = 99, 0, DropUnknownProtocol }), base}},
		{"trailing bytes ignored", func() []byte {
			b := append(v0(7, entry(6, 0, 1)), 0xee)
			binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
			return b
		}(), []Conn{base}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var m Message
			if err := Decode(tt.b, &m); err != nil {
				t.Fatal(err)
			}
			checkMessage(t, &m, &Message{Version: 0, SyncID: 7, Conns: tt.want})
		})
	}
}

// Every message-level drop, with the entries the backup applied before it.
func TestDecodeDrops(t *testing.T) {
	good := tcpEst.bytes()
	withSize := func(b []byte, size int) []byte {
		b = bytes.Clone(b)
		binary.BigEndian.PutUint16(b[2:], uint16(size))
		return b
	}
	entryWith := func(f func(*ent)) []byte { e := tcpEst; f(&e); return e.bytes() }
	v0entry := []byte{0, 6, 0, 1, 0, 2, 0, 3, 10, 0, 0, 1, 10, 0, 0, 2, 10, 0, 0, 3, 0, 0, 0, 1}

	tests := []struct {
		name    string
		dec     Decoder
		b       []byte
		want    DropReason
		applied int // entries decoded (and applied by the backup) before the drop
	}{
		{name: "nil", b: nil, want: DropTruncated},
		{name: "3 bytes", b: []byte{0, 1, 0}, want: DropTruncated},
		{name: "oversized for the backup's maxlen", dec: Decoder{MaxLen: 40}, b: msg1(1, good), want: DropOversized},
		{name: "size field too small", b: withSize(msg1(1, good), 43), want: DropBadSize},
		{name: "size field too large", b: withSize(msg1(1, good), 45), want: DropBadSize},
		{name: "wrong sync ID", dec: Decoder{SyncID: 2}, b: msg1(1, good), want: DropWrongSyncID},
		{name: "version 2", b: func() []byte { b := msg1(1, good); b[5] = 2; return b }(), want: DropBadVersion},
		{name: "spare set", b: func() []byte { b := msg1(1, good); b[7] = 1; return b }(), want: DropBadVersion},
		{name: "reserved 0 and 6 bytes", b: []byte{0, 1, 0, 6, 1, 1}, want: DropBadVersion},
		{name: "count says 2, one entry", b: func() []byte { b := msg1(1, good); b[4] = 2; return b }(), want: DropShortEntry, applied: 1},
		{name: "entry shorter than 36 bytes", b: withSize(cat(hdr1(1, 1, 0), good[:35]), 43), want: DropShortEntry},
		{name: "entry size overruns", b: msg1(1, good, entryWith(func(e *ent) { e.size = 40 })), want: DropEntryOverrun, applied: 1},
		{name: "entry version 1", b: msg1(1, good, entryWith(func(e *ent) { e.ver = 1 })), want: DropBadEntryVersion, applied: 1},
		{name: "entry type 2", b: msg1(1, good, entryWith(func(e *ent) { e.typ = 2 })), want: DropBadType, applied: 1},
		{name: "entry size below the fixed part", b: msg1(1, good, entryWith(func(e *ent) { e.size = 35 })), want: DropBadEntrySize, applied: 1},
		{name: "entry size 0", b: cat(hdr1(1, 2, 80), good, []byte{0, 6, 0, 0}, make([]byte, 32)),
			want: DropBadEntrySize, applied: 1},
		{name: "IPv6 type in 36 bytes", b: msg1(1, good, entryWith(func(e *ent) { e.typ = 1 })), want: DropBadEntrySize, applied: 1},
		{name: "option header cut", b: msg1(1, entryWith(func(e *ent) { e.opts = []byte{optPEData} })), want: DropBadOption},
		{name: "option length 0", b: msg1(1, entryWith(func(e *ent) { e.opts = []byte{0x49, 0} })), want: DropBadOption},
		{name: "option past the entry", b: msg1(1, entryWith(func(e *ent) { e.opts = []byte{optPEData, 3, 'a', 'b'} })), want: DropBadOption},
		{name: "option past the entry's size, within the message", b: msg1(1,
			entryWith(func(e *ent) { e.opts, e.size = []byte{optPEData, 2, 'a', 'b'}, 39 })), want: DropBadOption},
		{name: "SEQ_DATA of 23 bytes", b: msg1(1, entryWith(func(e *ent) { e.opts = append([]byte{optSeqData, 23}, make([]byte, 23)...) })), want: DropBadOption},
		{name: "SEQ_DATA twice", b: msg1(1, entryWith(func(e *ent) {
			e.opts = cat([]byte{optSeqData, 24}, make([]byte, 24), []byte{optSeqData | optParam, 24}, make([]byte, 24))
		})), want: DropBadOption},
		{name: "PE_DATA twice", b: msg1(1, entryWith(func(e *ent) { e.opts = []byte{optPEData, 1, 'a', optPEData, 1, 'b'} })), want: DropBadOption},
		{name: "PE_NAME of 17 bytes", b: msg1(1, entryWith(func(e *ent) { e.opts = append([]byte{optPEName, 17}, make([]byte, 17)...) })), want: DropBadOption},
		{name: "PE_NAME twice", b: msg1(1, entryWith(func(e *ent) { e.opts = []byte{optPEName, 1, 'a', optPEName, 1, 'b'} })), want: DropBadOption},
		{name: "bad entry after a good and a skipped one", b: msg1(1, good, entryWith(func(e *ent) { e.state = 99 }), entryWith(func(e *ent) { e.typ = 4 })),
			want: DropBadType, applied: 2},
		{name: "v0 entry cut", b: withSize(cat([]byte{2, 1, 0, 0}, v0entry, v0entry[:23]), 51), want: DropShortEntry, applied: 1},
		{name: "v0 sequence data cut", b: func() []byte {
			e := bytes.Clone(v0entry)
			e[20] = FlagOutSeq >> 8 // flags are big-endian at 20
			return withSize(cat([]byte{1, 1, 0, 0}, e, make([]byte, 23)), 51)
		}(), want: DropShortEntry},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var m Message
			err := tt.dec.Decode(tt.b, &m)
			if got := Reason(err); got != tt.want {
				t.Fatalf("Decode = %v (reason %v), want reason %v", err, got, tt.want)
			}
			if _, ok := errors.AsType[*DecodeError](err); !ok || !strings.Contains(err.Error(), tt.want.String()) {
				t.Errorf("error %q is no *DecodeError naming %q", err, tt.want)
			}
			if len(m.Conns) != tt.applied {
				t.Errorf("%d entries before the drop, want %d: %+v", len(m.Conns), tt.applied, m.Conns)
			}
		})
	}
}

func TestDecoderFilters(t *testing.T) {
	b := msg1(3, tcpEst.bytes())
	for _, d := range []Decoder{{}, {SyncID: 3}, {MaxLen: len(b)}} {
		var m Message
		if err := d.Decode(b, &m); err != nil || len(m.Conns) != 1 {
			t.Errorf("%+v.Decode = %v, %d entries", d, err, len(m.Conns))
		}
	}
	var m Message
	if err := (Decoder{SyncID: 4}).Decode(b, &m); Reason(err) != DropWrongSyncID || m.SyncID != 3 {
		t.Errorf("wrong sync ID: %v, SyncID %d (want it reported)", err, m.SyncID)
	}
}

// Decoding into a used Message resets it.
func TestDecodeReuse(t *testing.T) {
	var m Message
	pe := tcpEst
	pe.opts = []byte{optPEData, 2, 'h', 'i', optPEName, 3, 's', 'i', 'p'}
	if err := Decode(msg1(1, pe.bytes(), tcpEst.bytes()), &m); err != nil || len(m.Conns) != 2 {
		t.Fatal(err, m.Conns)
	}
	if err := Decode([]byte{0, 2, 0, 4}, &m); err != nil {
		t.Fatal(err)
	}
	checkMessage(t, &m, &Message{Version: 0, SyncID: 2})
	if err := Decode(msg1(1, tcpEst.bytes()), &m); err != nil {
		t.Fatal(err)
	}
	checkMessage(t, &m, &Message{Version: 1, SyncID: 1, Conns: []Conn{conn4}})
}

func TestDecodeDoesNotAllocate(t *testing.T) {
	pe := tcpEst
	pe.opts = []byte{optPEData, 2, 'h', 'i', optPEName, 3, 's', 'i', 'p'}
	entries := [][]byte{pe.bytes()}
	for range 39 {
		entries = append(entries, tcpEst.bytes())
	}
	b := msg1(1, entries...)
	var m Message
	if err := Decode(b, &m); err != nil { // sizes m
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(100, func() { _ = Decode(b, &m) }); n != 0 {
		t.Errorf("Decode allocates %v times per message once m is sized", n)
	}
}

func TestRoundTrip(t *testing.T) {
	many := make([]Conn, 255)
	for i := range many {
		many[i] = conn4
		many[i].Client = netip.AddrPortFrom(conn4.Client.Addr(), uint16(i))
	}
	pe := conn4
	pe.PEData, pe.PEName, pe.Flags = []byte("call-id-1234"), []byte("sip"), FlagTemplate|3
	v6 := Conn{Family: ipvs.IPv6, Protocol: ipvs.SCTP, Flags: FlagInactive | FlagSeqMask | FlagNFCT, State: 8,
		Client: ap("[2001:db8::1]:1"), Virtual: ap("[2001:db8::2]:2"), Real: ap("[2001:db8::3]:3"),
		FWMark: 0xffffffff, Timeout: 0xffffffff * time.Second, HasSeq: true, InSeq: Seq{1, 2, 3}, OutSeq: Seq{4, 5, 6}}
	v0seq := conn4
	v0seq.Timeout, v0seq.Flags, v0seq.HasSeq, v0seq.OutSeq = 0, FlagOutSeq, true, Seq{7, 8, 9}
	v0plain := conn4
	v0plain.Timeout = 0

	tests := []struct {
		name string
		m    Message
		size int // expected encoded size, 0 = unchecked
	}{
		{"v1 empty", Message{Version: 1, SyncID: 1}, 8},
		{"v1 IPv4", Message{Version: 1, SyncID: 255, Conns: []Conn{conn4}}, 8 + 36},
		{"v1 PE then IPv6 with SEQ", Message{Version: 1, Conns: []Conn{pe, v6}}, 8 + 36 + 14 + 5 + 1 + 72 + 26},
		{"v1 255 entries", Message{Version: 1, Conns: many}, 8 + 255*36},
		{"v0 empty", Message{Version: 0, SyncID: 4}, 4},
		{"v0 with sequence data", Message{Version: 0, SyncID: 4, Conns: []Conn{v0seq, v0plain}}, 4 + 48 + 24},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := Encode(&tt.m)
			if err != nil {
				t.Fatal(err)
			}
			if tt.size != 0 && len(b) != tt.size {
				t.Errorf("encoded %d bytes, want %d", len(b), tt.size)
			}
			var m Message
			if err := Decode(b, &m); err != nil {
				t.Fatal(err)
			}
			checkMessage(t, &m, &tt.m)
		})
	}
}

func TestEncodeErrors(t *testing.T) {
	bad := func(f func(*Conn)) Message { c := conn4; f(&c); return Message{Version: 1, Conns: []Conn{c}} }
	tests := []struct {
		name string
		m    Message
		want error
	}{
		{"version 2", Message{Version: 2}, ErrVersion},
		{"256 entries", Message{Version: 1, Conns: make([]Conn, 256)}, ErrTooLarge},
		{"too large", Message{Version: 1, Conns: func() []Conn {
			// 196 IPv6 entries with full PE data: 196 × 336 bytes > 65535.
			c := conn4
			c.Family, c.Client, c.Virtual, c.Real = ipvs.IPv6, ap("[::1]:1"), ap("[::1]:1"), ap("[::1]:1")
			c.PEData, c.PEName = make([]byte, 255), []byte("sip")
			cs := make([]Conn, 196)
			for i := range cs {
				cs[i] = c
			}
			return cs
		}()}, ErrTooLarge},
		{"no family", bad(func(c *Conn) { c.Family = 0 }), ErrEntry},
		{"IPv6 address in IPv4 entry", bad(func(c *Conn) { c.Real = ap("[::1]:1") }), ErrEntry},
		{"IPv4-mapped address in IPv4 entry", bad(func(c *Conn) { c.Real = ap("[::ffff:10.0.0.1]:1") }), ErrEntry},
		{"zero address", bad(func(c *Conn) { c.Client = netip.AddrPort{} }), ErrEntry},
		{"protocol 256", bad(func(c *Conn) { c.Protocol = 256 }), ErrEntry},
		{"negative timeout", bad(func(c *Conn) { c.Timeout = -time.Second }), ErrEntry},
		{"PE data 256", bad(func(c *Conn) { c.PEData = make([]byte, 256) }), ErrEntry},
		{"PE name 17", bad(func(c *Conn) { c.PEName = make([]byte, 17) }), ErrEntry},
		{"v0 IPv6", Message{Version: 0, Conns: []Conn{{Family: ipvs.IPv6, Client: ap("[::1]:1"), Virtual: ap("[::1]:1"), Real: ap("[::1]:1")}}}, ErrEntry},
		{"v0 32-bit flags", Message{Version: 0, Conns: []Conn{{Family: ipvs.IPv4, Flags: FlagNFCT, Client: conn4.Client, Virtual: conn4.Virtual, Real: conn4.Real}}}, ErrEntry},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Encode(&tt.m); !errors.Is(err, tt.want) {
				t.Fatalf("Encode = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestStateName(t *testing.T) {
	tests := []struct {
		c    Conn
		want string
	}{
		{Conn{Protocol: ipvs.TCP, State: 1}, "ESTABLISHED"},
		{Conn{Protocol: ipvs.TCP, State: 10}, "SYNACK"},
		{Conn{Protocol: ipvs.TCP, State: 11}, "ERR!"},
		{Conn{Protocol: ipvs.UDP}, "UDP"},
		{Conn{Protocol: ipvs.SCTP, State: 13}, "CLOSED"},
		{Conn{Protocol: ipvs.TCP, Flags: FlagTemplate, State: 1}, "ASSURED"},
		{Conn{Flags: FlagTemplate}, "NONE"},
		{Conn{Protocol: 0}, "NONE"},
		{Conn{Protocol: 50}, "ERR!"},
	}
	for _, tt := range tests {
		if got := tt.c.StateName(); got != tt.want {
			t.Errorf("%+v.StateName() = %q, want %q", tt.c, got, tt.want)
		}
	}
}

func TestReason(t *testing.T) {
	if Reason(nil) != DropNone || Reason(errors.New("x")) != DropUnknown {
		t.Fatal("Reason of nil or a foreign error")
	}
	seen := map[string]bool{}
	for r := range DropReason(NumDropReasons) {
		s := r.String()
		if s == "" || strings.HasPrefix(s, "DropReason(") || seen[s] {
			t.Errorf("reason %d has name %q", int(r), s)
		}
		seen[s] = true
	}
	if s := DropReason(NumDropReasons).String(); s != "DropReason(17)" {
		t.Errorf("out-of-range name %q", s)
	}
}

func TestCounters(t *testing.T) {
	var c Counters
	var m Message
	t0 := time.Unix(1000, 0)
	skipped := tcpEst
	skipped.state = 99
	good := msg1(1, tcpEst.bytes(), skipped.bytes(), tcpEst.bytes())
	c.Observe(&m, Decode(good, &m), t0)
	badType := tcpEst
	badType.typ = 2
	bad := msg1(2, tcpEst.bytes(), badType.bytes())
	c.Observe(&m, Decode(bad, &m), t0.Add(time.Second))
	c.Observe(&m, Decode([]byte{1}, &m), t0.Add(2*time.Second))

	s := c.Stats()
	var want Stats
	want.Messages, want.Entries = 3, 3
	want.Skipped[DropBadState] = 1
	want.Drops[DropBadType], want.Drops[DropTruncated] = 1, 1
	want.LastAccepted, want.LastDrop = t0, t0.Add(2*time.Second)
	if s != want {
		t.Errorf("Stats() =\n%+v\nwant\n%+v", s, want)
	}
}

func checkMessage(t *testing.T, got, want *Message) {
	t.Helper()
	if got.Version != want.Version || got.SyncID != want.SyncID {
		t.Errorf("Version %d SyncID %d, want %d %d", got.Version, got.SyncID, want.Version, want.SyncID)
	}
	if len(got.Conns) != len(want.Conns) {
		t.Fatalf("%d entries, want %d:\n got %+v\nwant %+v", len(got.Conns), len(want.Conns), got.Conns, want.Conns)
	}
	for i := range got.Conns {
		g, w := got.Conns[i], want.Conns[i]
		if !reflect.DeepEqual(g, w) {
			t.Errorf("entry %d:\n got %+v\nwant %+v", i, g, w)
		}
	}
}

// Datagrams the real kernel sent (captured in the VM by TestSyncReachesBackup).
func TestDecodeKernelCaptures(t *testing.T) {
	var got []Message
	for _, b := range kernelCaptures(t) {
		var m Message
		if err := (Decoder{SyncID: 5, MaxLen: 1472}).Decode(b, &m); err != nil {
			t.Fatalf("kernel datagram %x: %v", b, err)
		}
		got = append(got, m)
	}
	conn := func(port uint16, flags uint32, state uint16, timeout time.Duration) Conn {
		return Conn{Family: ipvs.IPv4, Protocol: ipvs.TCP, Flags: flags, State: state,
			Client:  netip.AddrPortFrom(netip.MustParseAddr("10.0.1.2"), port),
			Virtual: ap("10.0.1.100:80"), Real: ap("10.0.2.2:8080"), Timeout: timeout}
	}
	want := []Message{
		{Version: 1, SyncID: 5, Conns: []Conn{conn(36328, 0, 1, 900*time.Second)}},
		{Version: 1, SyncID: 5, Conns: []Conn{conn(36328, FlagInactive, 7, time.Minute), conn(36328, FlagInactive, 5, 2*time.Minute)}},
		{Version: 0, SyncID: 5, Conns: []Conn{conn(36344, 0, 1, 0)}},
	}
	if len(got) != len(want) {
		t.Fatalf("%d datagrams, want %d", len(got), len(want))
	}
	for i := range want {
		checkMessage(t, &got[i], &want[i])
	}
	names := []string{got[1].Conns[0].StateName(), got[1].Conns[1].StateName()}
	if names[0] != "CLOSE_WAIT" || names[1] != "TIME_WAIT" {
		t.Errorf("closing states %v", names)
	}
}

// kernelCaptures reads testdata/kernel-sync.hex.
func kernelCaptures(tb testing.TB) [][]byte {
	tb.Helper()
	data, err := os.ReadFile("testdata/kernel-sync.hex")
	if err != nil {
		tb.Fatal(err)
	}
	var out [][]byte
	for line := range strings.Lines(string(data)) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		b, err := hex.DecodeString(line)
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}
