package ipvs

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

// A small language for diff cases: svc and dst build entries, tbl a table.
type tentry struct {
	svc   Service
	dests []Destination
}

func svc(addr, sched string) Service {
	return Service{Protocol: TCP, Addr: netip.MustParseAddrPort(addr), Scheduler: sched}
}

func dst(addr string, weight int, fwd Forwarding) Destination {
	return Destination{Addr: netip.MustParseAddrPort(addr), Weight: weight, Forwarding: fwd}
}

func tbl(t testing.TB, entries ...tentry) Table {
	t.Helper()
	tb := NewTable()
	for _, e := range entries {
		if err := tb.Set(e.svc, e.dests...); err != nil {
			t.Fatal(err)
		}
	}
	return tb
}

func ent(s Service, ds ...Destination) tentry { return tentry{s, ds} }

func with(s Service, f func(*Service)) Service { f(&s); return s }

func opStrings(ops []Op) []string {
	out := make([]string, len(ops))
	for i, op := range ops {
		out[i] = op.String()
	}
	return out
}

func TestDiff(t *testing.T) {
	a := svc("192.0.2.10:80", "wlc")
	b := svc("192.0.2.11:443", "rr")
	c := svc("192.0.2.12:53", "rr")
	c.Protocol = UDP
	fw := Service{FWMark: 7, Scheduler: "mh", Flags: FlagMHPort}
	a1, a2, a3 := dst("192.0.2.21:80", 1, DR), dst("192.0.2.22:80", 1, DR), dst("192.0.2.23:80", 1, DR)
	b1 := dst("192.0.2.31:8443", 5, NAT)
	f1 := dst("192.0.2.41:0", 1, Tunnel)
	ownAll := func(ServiceKey) bool { return true }
	ownNone := func(ServiceKey) bool { return false }

	tests := []struct {
		name            string
		actual, desired []tentry
		owned           func(ServiceKey) bool
		want            []string
		wantUnowned     []string
	}{
		{name: "both empty", owned: ownAll},
		{
			name:   "identical: nothing",
			actual: []tentry{ent(a, a1, a2), ent(b, b1), ent(fw, f1)}, desired: []tentry{ent(a, a1, a2), ent(b, b1), ent(fw, f1)},
			owned: ownAll,
		},
		{
			name:    "one weight changed: exactly one update-dest",
			actual:  []tentry{ent(a, a1, a2), ent(b, b1)},
			desired: []tentry{ent(a, a1, dst("192.0.2.22:80", 0, DR)), ent(b, b1)},
			owned:   ownAll,
			want:    []string{"update-dest TCP 192.0.2.10:80 -> 192.0.2.22:80 (dr, weight 0)"},
		},
		{
			name:    "new service: the service, then its destinations",
			desired: []tentry{ent(a, a2, a1)},
			want: []string{
				"add-service TCP 192.0.2.10:80 wlc",
				"add-dest TCP 192.0.2.10:80 -> 192.0.2.21:80 (dr, weight 1)",
				"add-dest TCP 192.0.2.10:80 -> 192.0.2.22:80 (dr, weight 1)",
			},
		},
		{
			name:    "destination swapped: add before delete",
			actual:  []tentry{ent(a, a1, a2)},
			desired: []tentry{ent(a, a1, a3)},
			owned:   ownNone, // the service is desired: ours whatever owned says
			want: []string{
				"add-dest TCP 192.0.2.10:80 -> 192.0.2.23:80 (dr, weight 1)",
				"del-dest TCP 192.0.2.10:80 -> 192.0.2.22:80",
			},
		},
		{
			name:    "owned service removed: one delete, none for its destinations",
			actual:  []tentry{ent(a, a1, a2), ent(b, b1)},
			desired: []tentry{ent(b, b1)},
			owned:   ownAll,
			want:    []string{"del-service TCP 192.0.2.10:80"},
		},
		{
			name:        "unowned service: left alone and reported",
			actual:      []tentry{ent(a, a1), ent(b, b1), ent(fw, f1)},
			desired:     []tentry{ent(b, b1)},
			owned:       func(k ServiceKey) bool { return k == fw.Key() },
			want:        []string{"del-service FWM 7 IPv4"},
			wantUnowned: []string{"TCP 192.0.2.10:80"},
		},
		{
			name:        "nil owned owns nothing",
			actual:      []tentry{ent(a, a1), ent(fw, f1)},
			wantUnowned: []string{"TCP 192.0.2.10:80", "FWM 7 IPv4"},
		},
		{
			name:    "scheduler changed: updated in place",
			actual:  []tentry{ent(a, a1)},
			desired: []tentry{ent(with(a, func(s *Service) { s.Scheduler = "sh"; s.Flags = FlagSHFallback | FlagSHPort }), a1)},
			want:    []string{"update-service TCP 192.0.2.10:80 sh flags 0x18"},
		},
		{
			name:    "persistence timeout and prefix changed: updated in place",
			actual:  []tentry{ent(with(a, func(s *Service) { s.Persistence = time.Minute }), a1)},
			desired: []tentry{ent(with(a, func(s *Service) { s.Persistence = time.Hour; s.PersistencePrefix = 24 }), a1)},
			want:    []string{"update-service TCP 192.0.2.10:80 wlc persistent 3600 /24"},
		},
		{
			name:    "one-packet flag: updated in place",
			actual:  []tentry{ent(c)},
			desired: []tentry{ent(with(c, func(s *Service) { s.Flags = FlagOnePacket }))},
			want:    []string{"update-service UDP 192.0.2.12:53 rr flags 0x4"},
		},
		{
			name:    "forwarding and thresholds changed: updated in place",
			actual:  []tentry{ent(a, a1, a2)},
			desired: []tentry{ent(a, dst("192.0.2.21:80", 1, NAT), Destination{Addr: a2.Addr, Weight: 1, Forwarding: DR, UpperThreshold: 100, LowerThreshold: 10})},
			want: []string{
				"update-dest TCP 192.0.2.10:80 -> 192.0.2.21:80 (nat, weight 1)",
				"update-dest TCP 192.0.2.10:80 -> 192.0.2.22:80 (dr, weight 1)",
			},
		},
		{
			name:    "everything at once: groups in make-before-break order",
			actual:  []tentry{ent(a, a1, a2), ent(b, b1), ent(fw, f1)},
			desired: []tentry{ent(with(a, func(s *Service) { s.Scheduler = "rr" }), a3, dst("192.0.2.21:80", 9, DR)), ent(c, dst("192.0.2.51:53", 1, NAT))},
			owned:   ownAll,
			want: []string{
				"add-service UDP 192.0.2.12:53 rr",
				"update-service TCP 192.0.2.10:80 rr",
				"add-dest TCP 192.0.2.10:80 -> 192.0.2.23:80 (dr, weight 1)",
				"add-dest UDP 192.0.2.12:53 -> 192.0.2.51:53 (nat, weight 1)",
				"update-dest TCP 192.0.2.10:80 -> 192.0.2.21:80 (dr, weight 9)",
				"del-dest TCP 192.0.2.10:80 -> 192.0.2.22:80",
				"del-service TCP 192.0.2.11:443",
				"del-service FWM 7 IPv4",
			},
		},
		{
			name: "normalised input equals the kernel's read-back",
			actual: []tentry{ent(Service{Family: IPv4, Protocol: TCP, Addr: netip.MustParseAddrPort("192.0.2.10:80"), Scheduler: "wlc", Persistence: time.Minute},
				dst("192.0.2.21:80", 1, DR))},
			desired: []tentry{ent(Service{Protocol: TCP, Addr: netip.MustParseAddrPort("[::ffff:192.0.2.10]:80"), Scheduler: "wlc", Persistence: time.Minute, PersistencePrefix: 32},
				dst("[::ffff:192.0.2.21]:80", 1, DR))},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ops, unowned := Diff(tbl(t, tt.actual...), tbl(t, tt.desired...), tt.owned)
			if got := opStrings(ops); !slices.Equal(got, tt.want) {
				t.Errorf("ops:\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(tt.want, "\n  "))
			}
			var gotU []string
			for _, k := range unowned {
				gotU = append(gotU, k.String())
			}
			if !slices.Equal(gotU, tt.wantUnowned) {
				t.Errorf("unowned = %q, want %q", gotU, tt.wantUnowned)
			}
			// Applying the ops to actual gives desired (owned part).
			got := tbl(t, tt.actual...)
			for _, op := range ops {
				applyOp(&got, op)
			}
			for _, k := range unowned {
				got.Delete(k)
			}
			if !got.Equal(tbl(t, tt.desired...)) {
				t.Errorf("actual + ops:\n%s\nwant\n%s", got, tbl(t, tt.desired...))
			}
		})
	}
}

// bigTable is n services × 4 destinations: TCP 198.18.x.y:80 with real
// servers in 198.19.0.0/16, NAT, weight 1.
func bigTable(t testing.TB, n int) Table {
	t.Helper()
	tb := NewTable()
	vbase := netip.MustParseAddr("198.18.0.0").As4()
	rbase := netip.MustParseAddr("198.19.0.0").As4()
	for i := range n {
		va := vbase
		va[2], va[3] = byte(i>>8), byte(i)
		va[1] += byte(i >> 16)
		s := Service{Protocol: TCP, Addr: netip.AddrPortFrom(netip.AddrFrom4(va), 80), Scheduler: "wlc"}
		ds := make([]Destination, 4)
		for j := range ds {
			ra := rbase
			r := i*4 + j
			ra[2], ra[3] = byte(r>>8), byte(r)
			ds[j] = Destination{Addr: netip.AddrPortFrom(netip.AddrFrom4(ra), 8080), Weight: 1, Forwarding: NAT}
		}
		if err := tb.Set(s, ds...); err != nil {
			t.Fatal(err)
		}
	}
	return tb
}

func TestDiffLargeTableOneChange(t *testing.T) {
	actual := bigTable(t, 10000)
	desired := actual.Clone()
	k := desired.Keys()[5000]
	d := desired.Dests(k)[2]
	d.Weight = 7
	if err := desired.SetDest(k, d); err != nil {
		t.Fatal(err)
	}
	ops, unowned := Diff(actual, desired, nil)
	if len(ops) != 1 || ops[0].Kind != OpUpdateDest || ops[0].Dest != d || len(unowned) != 0 {
		t.Fatalf("ops = %v, unowned = %v; want one update-dest of %v", ops, unowned, d)
	}
	if ops, _ := Diff(actual, actual.Clone(), nil); len(ops) != 0 {
		t.Fatalf("identical large tables: %d ops", len(ops))
	}
}

// BenchmarkDiff10k: 10 000 services × 4 destinations, one changed weight.
func BenchmarkDiff10k(b *testing.B) {
	actual := bigTable(b, 10000)
	desired := actual.Clone()
	k := desired.Keys()[1234]
	d := desired.Dests(k)[0]
	d.Weight = 3
	if err := desired.SetDest(k, d); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		ops, _ := Diff(actual, desired, nil)
		if len(ops) != 1 {
			b.Fatal(fmt.Sprint(ops))
		}
	}
}
