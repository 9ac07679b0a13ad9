package heartbeat

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

func TestSockaddrRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		in    string
		len   uint32
		scope uint32
	}{
		{"10.1.2.3:694", unix.SizeofSockaddrInet4, 0},
		{"[fd00::1]:694", unix.SizeofSockaddrInet6, 0},
		{"[fe80::1%7]:65535", unix.SizeofSockaddrInet6, 7},
	} {
		ap := netip.MustParseAddrPort(tc.in)
		sa := makeSockaddr(ap)
		if sa.len != tc.len || sa.raw.Scope_id != tc.scope {
			t.Errorf("%s: len %d scope %d, want %d %d", tc.in, sa.len, sa.raw.Scope_id, tc.len, tc.scope)
		}
		want := netip.AddrPortFrom(ap.Addr().WithZone(""), ap.Port())
		if got := sa.addrPort(); got != want {
			t.Errorf("%s: round trip %s", tc.in, got)
		}
	}
	if sa := makeSockaddr(netip.MustParseAddrPort("10.1.2.3:694")); binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa.raw.Port))[:]) != 694 {
		t.Error("port not in network byte order")
	}
}

// cmsg builds one control message as the kernel lays it out.
func cmsg(level, typ int32, data []byte) []byte {
	b := make([]byte, unix.CmsgSpace(len(data)))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level, h.Type = level, typ
	h.SetLen(unix.CmsgLen(len(data)))
	copy(b[unix.CmsgLen(0):], data)
	return b
}

func TestCmsgsAgainstParseSocketControlMessage(t *testing.T) {
	ttl := binary.NativeEndian.AppendUint32(nil, 255)
	oob := append(cmsg(unix.IPPROTO_IP, unix.IP_TTL, ttl),
		unix.PktInfo6(&unix.Inet6Pktinfo{Addr: netip.MustParseAddr("ff02::12").As16(), Ifindex: 3})...)
	oob = append(oob, cmsg(unix.IPPROTO_IPV6, unix.IPV6_HOPLIMIT, binary.NativeEndian.AppendUint32(nil, 64))...)
	want, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		t.Fatal(err)
	}
	i := 0
	for c := cmsgs(oob); ; i++ {
		level, typ, data, rest, ok := c.next()
		if !ok {
			break
		}
		if i >= len(want) || level != want[i].Header.Level || typ != want[i].Header.Type || string(data) != string(want[i].Data) {
			t.Fatalf("message %d: %d/%d %x", i, level, typ, data)
		}
		c = rest
	}
	if i != len(want) {
		t.Fatalf("%d messages, want %d", i, len(want))
	}
	if v, ok := receivedTTL(oob); !ok || v != 255 {
		t.Errorf("receivedTTL = %d, %v", v, ok)
	}
	for n := range unix.CmsgLen(len(ttl)) { // the TTL message cut short
		if v, ok := receivedTTL(oob[:n]); ok {
			t.Errorf("receivedTTL of %d bytes = %d, want none", n, v)
		}
	}
	if _, ok := receivedTTL(nil); ok {
		t.Error("receivedTTL of nothing")
	}
}
