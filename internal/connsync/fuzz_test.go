package connsync

import (
	"encoding/binary"
	"reflect"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hadirector/hadirector/internal/ipvs"
)

// FuzzDecode checks that Decode never panics and that whatever it decodes,
// whole or up to a fault, encodes and decodes back to the same entries.
//
//	go test -run '^$' -fuzz FuzzDecode -fuzztime 60s ./internal/connsync/
func FuzzDecode(f *testing.F) {
	for _, m := range fuzzSeeds() {
		b, err := Encode(&m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, uint8(0), uint16(0))
	}
	for _, b := range kernelCaptures(f) {
		f.Add(b, uint8(5), uint16(1472))
	}
	pe := tcpEst
	pe.opts = []byte{optPEData, 2, 'h', 'i', optPEName, 3, 's', 'i', 'p', 0x49, 1, 0}
	unknown := tcpEst
	unknown.opts = []byte{9, 1, 0}
	f.Add(msg1(5, pe.bytes(), unknown.bytes(), tcpEst.bytes()), uint8(5), uint16(1500))
	f.Add([]byte{1, 5, 0, 28, 0, 6, 0, 1, 0, 2, 0, 3, 10, 0, 0, 1, 10, 0, 0, 2, 10, 0, 0, 3, 0, 0, 0, 1}, uint8(0), uint16(0))
	f.Add([]byte{0, 1, 0, 4}, uint8(1), uint16(0))

	f.Fuzz(func(t *testing.T, b []byte, syncID uint8, maxLen uint16) {
		var m Message
		err := Decoder{SyncID: syncID, MaxLen: int(maxLen)}.Decode(b, &m)
		r := Reason(err)
		if (err == nil) != (r == DropNone) || r == DropUnknown || r >= DropUnknownOption {
			t.Fatalf("Decode error %v has reason %v", err, r)
		}
		for i, c := range m.Conns {
			if c.Skip != DropNone && c.Skip < DropUnknownOption {
				t.Fatalf("entry %d skipped with message-level reason %v", i, c.Skip)
			}
		}
		if len(m.Conns) > 255 {
			t.Fatalf("%d entries", len(m.Conns))
		}

		enc, err := Encode(&m)
		if err != nil {
			t.Fatalf("Encode of a decoded message: %v", err)
		}
		var m2 Message
		if err := Decode(enc, &m2); err != nil {
			t.Fatalf("Decode(Encode(m)): %v", err)
		}
		if m2.Version != m.Version || m2.SyncID != m.SyncID || len(m2.Conns) != len(m.Conns) {
			t.Fatalf("round trip: version %d/%d, sync ID %d/%d, %d/%d entries",
				m2.Version, m.Version, m2.SyncID, m.SyncID, len(m2.Conns), len(m.Conns))
		}
		for i := range m.Conns {
			want := m.Conns[i]
			if want.Skip == DropUnknownOption {
				// Encode drops the unknown option, so the entry is then
				// judged on its other merits.
				want.Skip = want.check()
			}
			if !reflect.DeepEqual(m2.Conns[i], want) {
				t.Fatalf("round trip of entry %d:\n got %+v\nwant %+v", i, m2.Conns[i], want)
			}
		}
	})
}

func fuzzSeeds() []Message {
	v6 := Conn{Family: ipvs.IPv6, Protocol: ipvs.UDP, Flags: 3, Client: ap("[2001:db8::1]:5353"),
		Virtual: ap("[2001:db8::100]:53"), Real: ap("[2001:db8:1::2]:53"), Timeout: 300 * time.Second,
		HasSeq: true, InSeq: Seq{1, 2, 3}, OutSeq: Seq{4, 5, 6}}
	tpl := Conn{Family: ipvs.IPv4, Flags: FlagTemplate | 3, State: 1, Client: ap("192.0.2.0:0"),
		Virtual: ap("0.0.0.42:0"), Real: ap("198.51.100.7:0"), FWMark: 42, Timeout: 360 * time.Second,
		PEData: []byte("call-1"), PEName: []byte("sip")}
	v0 := conn4
	v0.Timeout, v0.Flags, v0.HasSeq, v0.InSeq = 0, FlagInSeq, true, Seq{9, 8, 7}
	return []Message{
		{Version: 1, SyncID: 1},
		{Version: 1, SyncID: 7, Conns: []Conn{conn4}},
		{Version: 1, SyncID: 7, Conns: []Conn{tpl, v6, conn4}},
		{Version: 0, SyncID: 3, Conns: []Conn{v0, conn4}},
	}
}

// Control messages as the kernel writes them on a little-endian 64-bit
// machine (a 16-byte header: length, level, type): a receive time of
// 1700000000.000000123 (SCM_TIMESTAMPNS) and a drop count of 7 (SO_RXQ_OVFL).
var (
	cmsgTime = []byte{32, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 35, 0, 0, 0,
		0x00, 0xf1, 0x53, 0x65, 0, 0, 0, 0, 123, 0, 0, 0, 0, 0, 0, 0}
	cmsgDrops = []byte{20, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 40, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0}
)

func TestParseControl(t *testing.T) {
	if unix.SizeofCmsghdr != 16 || binary.NativeEndian.Uint16([]byte{1, 0}) != 1 {
		t.Skip("the literal control messages are for little-endian 64-bit machines")
	}
	at := time.Unix(1_700_000_000, 123)
	short := slices.Clone(cmsgDrops)
	short[0] = 18 // 2 bytes of data
	otherLevel := slices.Clone(cmsgDrops)
	otherLevel[8] = unix.IPPROTO_IP
	for _, tc := range []struct {
		oob   []byte
		seen  time.Time
		drops int64
	}{
		{nil, time.Time{}, -1},
		{cmsgTime, at, -1},
		{cat(cmsgTime, cmsgDrops), at, 7},
		{short, time.Time{}, -1},
		{otherLevel, time.Time{}, -1},
		{[]byte{1, 2, 3}, time.Time{}, -1},
		{cmsgTime[:24], time.Time{}, -1}, // cut short
	} {
		seen, d := parseControl(tc.oob)
		if !seen.Equal(tc.seen) || d != tc.drops {
			t.Errorf("parseControl(%x) = %v, %d; want %v, %d", tc.oob, seen, d, tc.seen, tc.drops)
		}
	}
}

// FuzzParseControl: the listener's control-message parsing never panics.
func FuzzParseControl(f *testing.F) {
	f.Add(cmsgTime)
	f.Add(cat(cmsgTime, cmsgDrops))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, oob []byte) {
		if _, d := parseControl(oob); d < -1 {
			t.Fatalf("drops %d", d)
		}
	})
}
