package lvs

import (
	"net/netip"
	"testing"
)

// TestParseConnLine: the lines of /proc/net/ip_vs_conn_sync as the kernel
// prints them (ip_vs_conn_sync_seq_show); only IPv4 entries parse, without
// allocating.
func TestParseConnLine(t *testing.T) {
	for _, tc := range []struct {
		line string
		ok   bool
		want ConnEntry
	}{
		{"Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Origin Expires", false, ConnEntry{}},
		{"TCP 0A5C0002 8A3C 0A5C0064 2328 0A5C0015 2328 ESTABLISHED SYNC       899", true, ConnEntry{
			Protocol: "TCP", State: "ESTABLISHED", Synced: true,
			Client:  netip.MustParseAddrPort("10.92.0.2:35388"),
			Virtual: netip.MustParseAddrPort("10.92.0.100:9000"),
			Real:    netip.MustParseAddrPort("10.92.0.21:9000"),
		}},
		{"TCP 0A5C0002 8A3D 0A5C0064 2328 0A5C0016 2328 SYN_RECV    LOCAL       59", true, ConnEntry{
			Protocol: "TCP", State: "SYN_RECV",
			Client:  netip.MustParseAddrPort("10.92.0.2:35389"),
			Virtual: netip.MustParseAddrPort("10.92.0.100:9000"),
			Real:    netip.MustParseAddrPort("10.92.0.22:9000"),
		}},
		{"TCP 2001:0db8:0000:0000:0000:0000:0000:0002 8A3C 2001:0db8:0000:0000:0000:0000:0000:0064 2328 2001:0db8:0000:0000:0000:0000:0000:0015 2328 ESTABLISHED LOCAL      899", false, ConnEntry{}},
		{"TCP 0A5C0002 8A3C 0A5C0064 2328 0A5C0015 2328 ESTABLISHED SYNC", false, ConnEntry{}},
		{"TCP 0A5C0G02 8A3C 0A5C0064 2328 0A5C0015 2328 ESTABLISHED SYNC       899", false, ConnEntry{}},
		{"", false, ConnEntry{}},
	} {
		var e ConnEntry
		ok := parseConnLine([]byte(tc.line), &e)
		if ok != tc.ok || (ok && e != tc.want) {
			t.Errorf("parseConnLine(%q) = %+v, %v; want %+v, %v", tc.line, e, ok, tc.want, tc.ok)
		}
	}
	line := []byte("TCP 0A5C0002 8A3C 0A5C0064 2328 0A5C0015 2328 ESTABLISHED SYNC       899")
	var e ConnEntry
	if n := testing.AllocsPerRun(100, func() { parseConnLine(line, &e) }); n != 0 {
		t.Errorf("parseConnLine allocates %v times per line; want 0", n)
	}
}
