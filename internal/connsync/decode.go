package connsync

// The IPVS sync protocol, as net/netfilter/ipvs/ip_vs_sync.c writes
// (ip_vs_sync_conn, ip_vs_sync_conn_v0) and reads (ip_vs_process_message,
// ip_vs_proc_sync_conn, ip_vs_process_message_v0) it. One UDP datagram is one
// message. Multi-byte fields are big-endian unless said otherwise.
//
// Version 1 (sysctl net.ipv4.vs.sync_version=1, the default):
//
//	 0                   1                   2                   3
//	 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|   Reserved=0  |    SyncID     |            Size               |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|  Count Conns  |  Version=1    |          Spare=0              |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|    Type       |    Protocol   | Ver.  |  Size (entry+options) |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                             Flags                             |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|            State              |         cport                 |
//	|            vport              |         dport                 |
//	|                             fwmark                            |
//	|                        timeout (seconds)                      |
//	|          caddr, vaddr, daddr: 4 bytes each, or 16 for IPv6    |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	| Option type   | Option length |  Option data ...              |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	| zero padding to 4 bytes, only before a following entry        |
//
// Size in the header counts the whole datagram, padding included; an entry's
// Size counts its fixed part and options, not its padding. Type 0 is IPv4;
// bit 0 set is IPv6. Options: SEQ_DATA (1, 24 bytes: in_seq then out_seq, each
// init_seq, delta, previous_delta), PE_DATA (2, up to 255 bytes), PE_NAME (3,
// up to 16 bytes). The 0x40 bit marks an option the receiver may ignore; an
// unknown option without it makes the backup ignore the entry.
//
// Version 0 (sync_version=0; IPv4 only): a 4-byte header (Count Conns,
// SyncID, Size) and 24-byte entries (reserved, protocol, cport, vport, dport,
// caddr, vaddr, daddr, 16-bit flags, state), each followed by 24 bytes of
// sequence data when its flags have IN_SEQ or OUT_SEQ. That sequence data is
// a memcpy of kernel structs, so it is in the sender's byte order, which the
// receiving kernel reads as its own: this decoder reads it in this machine's
// order, as the local kernel would. A v0 message has no timeout and no fwmark.
//
// The backup tells the versions apart by the first header byte: a v1 message
// starts with 0 (Reserved), a v0 message with its (nonzero) entry count. It
// reads the message as v1 only if Reserved is 0, Version 1 and Spare 0, and as
// v0 otherwise.
//
// How the backup treats faults matters for what the standby learns:
//   - Faults in the header (too short, Size not the datagram length, another
//     sync ID) drop the whole message.
//   - Faults in an entry's framing (too short, overrunning the message, entry
//     version not 0, bad type, malformed options) drop that entry and the
//     rest of the message; the entries before it are already applied.
//   - An entry the backup cannot use (unknown mandatory option, unknown
//     protocol, state out of range, persistence-engine data without a name)
//     is skipped and the next entry is read.
//
// Decode mirrors this: it returns a *DecodeError for the first two kinds,
// leaving in the Message the entries the backup applied before the fault,
// and marks skipped entries in Conn.Skip.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"time"

	"github.com/hadirector/hadirector/internal/ipvs"
)

// Protocol constants.
const (
	// DefaultPort is the kernel's default sync UDP port (IP_VS_SYNC_PORT).
	// With sync_ports > 1, thread i uses port+i.
	DefaultPort = 8848

	headerLenV0   = 4
	headerLenV1   = 8
	entryLenV0    = 24 // struct ip_vs_sync_conn_v0
	seqLenV0      = 24 // struct ip_vs_sync_conn_options, after a v0 entry
	entryLenV4    = 36 // struct ip_vs_sync_v4
	entryLenV6    = 72 // struct ip_vs_sync_v6
	protoVersion  = 1  // SYNC_PROTO_VER
	typeInet6     = 1  // STYPE_F_INET6
	verShift      = 12 // SVER_SHIFT
	sizeMask      = 0x0fff
	optSeqData    = 1
	optPEData     = 2
	optPEName     = 3
	optParam      = 0x40 // IPVS_OPT_F_PARAM: the option may be ignored
	seqOptLen     = 24
	peNameMaxLen  = 16 // IP_VS_PENAME_MAXLEN
	tplStates     = 2  // IP_VS_CTPL_S_LAST: templates are NONE or ASSURED
	maxMessageLen = 0xffff
)

// DefaultGroup is the kernel's default sync multicast group, 224.0.0.81
// (IP_VS_SYNC_GROUP).
var DefaultGroup = netip.AddrFrom4([4]byte{224, 0, 0, 81})

// Connection flags (IP_VS_CONN_F_* in include/uapi/linux/ip_vs.h), as they
// appear in [Conn.Flags].
const (
	FlagFwdMask   = 0x0007 // forwarding method: see [Conn.Forwarding]
	FlagSync      = 0x0020 // created from sync (a node re-syncing such an entry sends it on)
	FlagHashed    = 0x0040 // kernel-internal, cleared by the sender
	FlagNoOutput  = 0x0080
	FlagInactive  = 0x0100 // not established
	FlagOutSeq    = 0x0200
	FlagInSeq     = 0x0400
	FlagSeqMask   = FlagInSeq | FlagOutSeq // sequence adjustment (NAT): SEQ_DATA is sent
	FlagNoCPort   = 0x0800
	FlagTemplate  = 0x1000 // a persistence template, not a connection
	FlagOnePacket = 0x2000 // never synced
	FlagNFCT      = 0x10000

	// FlagBackupMask are the flags the backup takes from a message
	// (IP_VS_CONN_F_BACKUP_MASK); it drops the others.
	FlagBackupMask = FlagFwdMask | FlagNoOutput | FlagInactive | FlagSeqMask | FlagNoCPort | FlagTemplate
)

// Message is one sync datagram.
type Message struct {
	Version int // 1, or 0 for the legacy format
	SyncID  uint8
	// Conns are the entries in message order: on a decode error, those
	// before the fault (which the backup has applied). Entries the backup
	// skips are included, with their Skip reason.
	Conns []Conn

	pe []byte // storage for the Conns' PEData and PEName
}

// Conn is one connection (or persistence template) entry.
type Conn struct {
	Family   ipvs.Family
	Protocol ipvs.Protocol // IP protocol number; 0 (IPPROTO_IP) for fwmark templates
	// Flags are the master's connection flags without FlagHashed (16 bits
	// in v0). The backup keeps only FlagBackupMask of them.
	Flags uint32
	// State is the protocol state, e.g. 1 for TCP ESTABLISHED; see
	// [Conn.StateName].
	State uint16
	// Client, Virtual and Real are the connection's addresses. In a template
	// Client may be a masked network and ports may be 0; in a fwmark
	// template Virtual holds the fwmark as an IPv4 address.
	Client, Virtual, Real netip.AddrPort
	FWMark                uint32
	// Timeout is the master's full timeout for the entry's state, in whole
	// seconds: the backup expires the entry this long after this message.
	// It is 0 in v0, where the backup uses its own timeout table.
	Timeout time.Duration

	// HasSeq says whether InSeq and OutSeq were sent (SEQ_DATA in v1; the
	// IN_SEQ/OUT_SEQ flags in v0).
	HasSeq        bool
	InSeq, OutSeq Seq

	// PEName and PEData are the persistence engine ("sip") and its data.
	// They live in the Message's storage: valid until the next Decode into
	// it.
	PEName, PEData []byte

	// Skip is why the kernel's backup ignores this entry, or DropNone if it
	// applies it. Decode sets only the entry-level reasons (DropUnknownOption,
	// DropUnknownProtocol, DropBadState, DropBadPE).
	Skip DropReason
}

// Seq is the sequence-number adjustment of one direction of a NAT connection
// whose payload a helper (e.g. ip_vs_ftp) resized (struct ip_vs_seq).
type Seq struct {
	Init      uint32 // adjust from this sequence number on
	Delta     uint32 // by this much
	PrevDelta uint32 // and before Init by this much
}

// Template reports whether c is a persistence template.
func (c *Conn) Template() bool { return c.Flags&FlagTemplate != 0 }

// Forwarding is the master's forwarding method for c. (The backup uses its
// own destination's method when it has the destination.) Bypass (4) has no
// [ipvs.Forwarding] name.
func (c *Conn) Forwarding() ipvs.Forwarding { return ipvs.Forwarding(c.Flags & FlagFwdMask) }

// StateName is c's state as /proc/net/ip_vs_conn shows it (the kernel's
// ip_vs_state_name): "ESTABLISHED", "UDP", "ASSURED", ...
func (c *Conn) StateName() string {
	names := stateNames(c.Protocol)
	if c.Template() {
		names = tplStateNames
	} else if names == nil {
		if c.Protocol == 0 {
			return "NONE"
		}
		return "ERR!"
	}
	if int(c.State) >= len(names) {
		return "ERR!"
	}
	return names[c.State]
}

var (
	tcpStateNames = []string{"NONE", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT",
		"TIME_WAIT", "CLOSE", "CLOSE_WAIT", "LAST_ACK", "LISTEN", "SYNACK"}
	sctpStateNames = []string{"NONE", "INIT1", "INIT", "COOKIE_SENT", "COOKIE_REPLIED",
		"COOKIE_WAIT", "COOKIE", "COOKIE_ECHOED", "ESTABLISHED", "SHUTDOWN_SENT",
		"SHUTDOWN_RECEIVED", "SHUTDOWN_ACK_SENT", "REJECTED", "CLOSED"}
	udpStateNames = []string{"UDP"}
	tplStateNames = []string{"NONE", "ASSURED"}
)

const (
	protoESP = 50
	protoAH  = 51
)

func stateNames(p ipvs.Protocol) []string {
	switch p {
	case ipvs.TCP:
		return tcpStateNames
	case ipvs.UDP:
		return udpStateNames
	case ipvs.SCTP:
		return sctpStateNames
	}
	return nil
}

// numStates is the number of states of protocol p in the kernel
// (ip_vs_protocol.num_states), and false for a protocol IPVS does not know.
// AH and ESP have no state names but one state.
func numStates(p ipvs.Protocol) (int, bool) {
	switch p {
	case protoAH, protoESP:
		return 1, true
	}
	names := stateNames(p)
	return len(names), names != nil
}

// Decoder decodes with the filters of a kernel backup configured like it.
// The zero Decoder filters nothing.
type Decoder struct {
	// SyncID drops messages with another sync ID (DropWrongSyncID), as a
	// backup started with this sync ID does. 0 accepts every sync ID.
	SyncID uint8
	// MaxLen drops datagrams longer than this (DropOversized): the backup
	// reads at most its sync_maxlen bytes, so the truncated message fails
	// its size check. 0 means no limit.
	MaxLen int
}

// Decode decodes b as a kernel backup with sync ID 0 and no length limit does:
// it is Decoder{}.Decode.
func Decode(b []byte, m *Message) error { return Decoder{}.Decode(b, m) }

// Decode decodes the sync datagram b into m, reusing m's storage: once m has
// room for the entries (and persistence-engine data), it does not allocate
// unless it fails. It never panics and never retains b.
//
// A nil error means the backup applies the message: all its entries but
// those with a Skip reason. Otherwise the error is a *DecodeError; m then
// holds the header fields read so far and the entries before the fault, which
// the backup has applied. Use [Reason] to count it.
func (d Decoder) Decode(b []byte, m *Message) error {
	m.Version, m.SyncID, m.Conns, m.pe = 0, 0, m.Conns[:0], m.pe[:0]
	if d.MaxLen > 0 && len(b) > d.MaxLen {
		return drop(DropOversized, "%d bytes, the backup reads at most %d (its sync maxlen)", len(b), d.MaxLen)
	}
	if len(b) < headerLenV0 {
		return drop(DropTruncated, "%d bytes, the header needs %d", len(b), headerLenV0)
	}
	if size := int(binary.BigEndian.Uint16(b[2:])); size != len(b) {
		return drop(DropBadSize, "size field %d, datagram %d bytes", size, len(b))
	}
	m.SyncID = b[1]
	if d.SyncID != 0 && m.SyncID != d.SyncID {
		return drop(DropWrongSyncID, "sync ID %d, want %d", m.SyncID, d.SyncID)
	}
	switch {
	case b[0] != 0: // a v0 entry count
		return m.decodeV0(b)
	case len(b) >= headerLenV1 && b[5] == protoVersion && b[6] == 0 && b[7] == 0:
		m.Version = protoVersion
		return m.decodeV1(b)
	case len(b) == headerLenV0:
		return nil // an empty v0 message
	case len(b) < headerLenV1:
		// The backup reads the v1 fields past the datagram (stale buffer
		// bytes) and applies nothing either way.
		return drop(DropBadVersion, "%d bytes: a v1 header needs %d, a v0 message with no entries is 4", len(b), headerLenV1)
	}
	// The backup reads this as a v0 message with no entries: nothing.
	return drop(DropBadVersion, "reserved byte 0 but version %d, spare %#04x (v1 needs 1 and 0)",
		int8(b[5]), binary.BigEndian.Uint16(b[6:]))
}

func (m *Message) decodeV1(b []byte) error {
	count := int(b[4])
	next := headerLenV1 // where the next entry starts (the kernel's msg_end)
	for i := range count {
		p := next
		if p+entryLenV4 > len(b) {
			return drop(DropShortEntry, "entry %d of %d at offset %d: %d bytes left, an entry needs at least %d",
				i, count, p, max(len(b)-p, 0), entryLenV4)
		}
		verSize := binary.BigEndian.Uint16(b[p+2:])
		size := int(verSize & sizeMask)
		if p+size > len(b) {
			return drop(DropEntryOverrun, "entry %d at offset %d: size %d overruns the %d-byte message", i, p, size, len(b))
		}
		if v := verSize >> verShift; v != 0 {
			return drop(DropBadEntryVersion, "entry %d at offset %d: entry version %d", i, p, v)
		}
		// The kernel reads the type before it checks the size against it:
		// at least entryLenV4 bytes are there.
		if err := m.decodeEntryV1(b[p:], size, i); err != nil {
			return err
		}
		next = p + (size+3)&^3 // entries are 4-byte aligned
	}
	return nil
}

// decodeEntryV1 decodes the entry of the given size at the start of b.
func (m *Message) decodeEntryV1(b []byte, size, i int) error {
	c := Conn{Protocol: ipvs.Protocol(b[1])}
	var fixed int
	switch t := b[0]; {
	case t&typeInet6 != 0:
		c.Family, fixed = ipvs.IPv6, entryLenV6
	case t == 0:
		c.Family, fixed = ipvs.IPv4, entryLenV4
	default:
		return drop(DropBadType, "entry %d: type %#02x", i, t)
	}
	if size < fixed {
		return drop(DropBadEntrySize, "entry %d: size %d, a %v entry needs %d", i, size, c.Family, fixed)
	}
	e := b[:size]
	c.Flags = binary.BigEndian.Uint32(e[4:])
	c.State = binary.BigEndian.Uint16(e[8:])
	cport, vport, dport := binary.BigEndian.Uint16(e[10:]), binary.BigEndian.Uint16(e[12:]), binary.BigEndian.Uint16(e[14:])
	c.FWMark = binary.BigEndian.Uint32(e[16:])
	c.Timeout = time.Duration(binary.BigEndian.Uint32(e[20:])) * time.Second
	if c.Family == ipvs.IPv6 {
		c.Client = netip.AddrPortFrom(netip.AddrFrom16([16]byte(e[24:40])), cport)
		c.Virtual = netip.AddrPortFrom(netip.AddrFrom16([16]byte(e[40:56])), vport)
		c.Real = netip.AddrPortFrom(netip.AddrFrom16([16]byte(e[56:72])), dport)
	} else {
		c.Client = netip.AddrPortFrom(netip.AddrFrom4([4]byte(e[24:28])), cport)
		c.Virtual = netip.AddrPortFrom(netip.AddrFrom4([4]byte(e[28:32])), vport)
		c.Real = netip.AddrPortFrom(netip.AddrFrom4([4]byte(e[32:36])), dport)
	}

	var havePEData, havePEName bool
options:
	for opts := e[fixed:]; len(opts) > 0; {
		if len(opts) < 2 {
			return drop(DropBadOption, "entry %d: 1 byte left for an option header", i)
		}
		typ, n := opts[0], int(opts[1])
		if n == 0 || 2+n > len(opts) {
			return drop(DropBadOption, "entry %d: option %#02x of length %d with %d bytes left", i, typ, n, len(opts)-2)
		}
		data := opts[2 : 2+n]
		// The kernel switches on the type without the 0x40 bit: a known
		// type marked optional is still read and checked.
		switch typ &^ optParam {
		case optSeqData:
			if n != seqOptLen {
				return drop(DropBadOption, "entry %d: SEQ_DATA of length %d, want %d", i, n, seqOptLen)
			}
			if c.HasSeq {
				return drop(DropBadOption, "entry %d: SEQ_DATA twice", i)
			}
			c.HasSeq = true
			c.InSeq = seqFrom(data[0:12], binary.BigEndian)
			c.OutSeq = seqFrom(data[12:24], binary.BigEndian)
		case optPEData: // a u8 length never exceeds IP_VS_PEDATA_MAXLEN (255)
			if havePEData {
				return drop(DropBadOption, "entry %d: PE_DATA twice", i)
			}
			havePEData = true
			c.PEData = m.keep(data)
		case optPEName:
			if n > peNameMaxLen {
				return drop(DropBadOption, "entry %d: PE_NAME of length %d, at most %d", i, n, peNameMaxLen)
			}
			if havePEName {
				return drop(DropBadOption, "entry %d: PE_NAME twice", i)
			}
			havePEName = true
			c.PEName = m.keep(data)
		default:
			if typ&optParam == 0 {
				// The backup stops reading this entry here and skips it.
				c.Skip = DropUnknownOption
				break options
			}
		}
		opts = opts[2+n:]
	}
	if c.Skip == DropNone {
		c.Skip = c.check()
	}
	m.Conns = append(m.Conns, c)
	return nil
}

// check is the backup's test of an entry whose framing is sound: whether it
// knows its protocol, state and persistence engine.
func (c *Conn) check() DropReason {
	if c.Template() {
		if c.State >= tplStates {
			return DropBadState
		}
	} else {
		n, ok := numStates(c.Protocol)
		if !ok {
			return DropUnknownProtocol
		}
		if int(c.State) >= n {
			return DropBadState
		}
	}
	// The backup looks the name up (loading ip_vs_pe_<name>); whether that
	// works is the backup's business. Data without a name never does.
	if len(c.PEData) > 0 && len(c.PEName) == 0 {
		return DropBadPE
	}
	return DropNone
}

func (m *Message) decodeV0(b []byte) error {
	count := int(b[0])
	p := headerLenV0
	for i := range count {
		if p+entryLenV0 > len(b) {
			return drop(DropShortEntry, "v0 entry %d of %d at offset %d: %d bytes left, an entry needs %d",
				i, count, p, len(b)-p, entryLenV0)
		}
		e := b[p : p+entryLenV0]
		c := Conn{
			Family:   ipvs.IPv4,
			Protocol: ipvs.Protocol(e[1]),
			Client:   netip.AddrPortFrom(netip.AddrFrom4([4]byte(e[8:12])), binary.BigEndian.Uint16(e[2:])),
			Virtual:  netip.AddrPortFrom(netip.AddrFrom4([4]byte(e[12:16])), binary.BigEndian.Uint16(e[4:])),
			Real:     netip.AddrPortFrom(netip.AddrFrom4([4]byte(e[16:20])), binary.BigEndian.Uint16(e[6:])),
			Flags:    uint32(binary.BigEndian.Uint16(e[20:])),
			State:    binary.BigEndian.Uint16(e[22:]),
		}
		p += entryLenV0
		if c.Flags&FlagSeqMask != 0 {
			if p+seqLenV0 > len(b) {
				return drop(DropShortEntry, "v0 entry %d: its flags announce %d bytes of sequence data, %d left",
					i, seqLenV0, len(b)-p)
			}
			c.HasSeq = true
			c.InSeq = seqFrom(b[p:p+12], binary.NativeEndian)
			c.OutSeq = seqFrom(b[p+12:p+24], binary.NativeEndian)
			p += seqLenV0
		}
		c.Skip = c.check()
		m.Conns = append(m.Conns, c)
	}
	return nil
}

func seqFrom(b []byte, o binary.ByteOrder) Seq {
	return Seq{Init: o.Uint32(b), Delta: o.Uint32(b[4:]), PrevDelta: o.Uint32(b[8:])}
}

// keep copies p into m's storage. Earlier slices stay valid if the storage
// grows: they keep the old array.
func (m *Message) keep(p []byte) []byte {
	start := len(m.pe)
	m.pe = append(m.pe, p...)
	return m.pe[start:len(m.pe):len(m.pe)]
}

// DropReason is why the kernel's backup drops a sync message (or its rest)
// or skips an entry: one countable value per reason.
type DropReason int

// Drop reasons. Decode returns the message-level ones as a *DecodeError and
// puts the entry-level ones (DropUnknownOption and after) in [Conn.Skip].
const (
	DropNone DropReason = iota // not dropped (Reason of a nil error)

	// Message-level: the whole message.
	DropOversized   // longer than the backup's sync maxlen
	DropTruncated   // shorter than the 4-byte v0 header
	DropBadSize     // the header's size is not the datagram's length
	DropWrongSyncID // another sync ID than the backup's
	DropBadVersion  // first byte 0 (no v0 entries) but not a v1 header

	// Message-level: this entry and the rest of the message.
	DropShortEntry      // too few bytes left for the next entry (or its v0 sequence data)
	DropEntryOverrun    // the entry's size runs past the message
	DropBadEntryVersion // entry version (top 4 bits of its size) not 0
	DropBadType         // entry type neither 0 (IPv4) nor with bit 0 (IPv6)
	DropBadEntrySize    // the entry's size is less than its fixed part
	DropBadOption       // a malformed, repeated or oversized option

	// Entry-level: this entry is skipped, the next one is read.
	DropUnknownOption   // an unknown option not marked optional (0x40)
	DropUnknownProtocol // a protocol IPVS does not handle (not a template)
	DropBadState        // a state out of range for the protocol (or template)
	DropBadPE           // persistence-engine data without an engine name

	DropUnknown // Reason of an error that carries no DropReason

	// NumDropReasons is the number of drop reasons, to size counter arrays.
	NumDropReasons = iota
)

var dropNames = [NumDropReasons]string{
	DropNone:            "none",
	DropOversized:       "oversized",
	DropTruncated:       "truncated",
	DropBadSize:         "bad_size",
	DropWrongSyncID:     "wrong_sync_id",
	DropBadVersion:      "bad_version",
	DropShortEntry:      "short_entry",
	DropEntryOverrun:    "entry_overrun",
	DropBadEntryVersion: "bad_entry_version",
	DropBadType:         "bad_type",
	DropBadEntrySize:    "bad_entry_size",
	DropBadOption:       "bad_option",
	DropUnknownOption:   "unknown_option",
	DropUnknownProtocol: "unknown_protocol",
	DropBadState:        "bad_state",
	DropBadPE:           "bad_pe",
	DropUnknown:         "unknown",
}

// String is the reason's stable name, fit for a metric label: "bad_size".
func (r DropReason) String() string {
	if r >= 0 && int(r) < len(dropNames) {
		return dropNames[r]
	}
	return "DropReason(" + strconv.Itoa(int(r)) + ")"
}

// DecodeError is why a sync message (or its rest) was dropped.
type DecodeError struct {
	Reason DropReason
	Detail string
}

func (e *DecodeError) Error() string {
	if e.Detail == "" {
		return "connsync: sync message dropped: " + e.Reason.String()
	}
	return "connsync: sync message dropped: " + e.Reason.String() + ": " + e.Detail
}

// Reason returns the DropReason err carries: DropNone for nil, DropUnknown
// for an error that wraps no *DecodeError.
func Reason(err error) DropReason {
	if err == nil {
		return DropNone
	}
	if de, ok := errors.AsType[*DecodeError](err); ok {
		return de.Reason
	}
	return DropUnknown
}

func drop(r DropReason, format string, args ...any) error {
	return &DecodeError{Reason: r, Detail: fmt.Sprintf(format, args...)}
}
