package heartbeat_test

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/hadirector/hadirector/integration/netlab"
	"github.com/hadirector/hadirector/internal/heartbeat"
	"golang.org/x/sys/unix"
)

// TestVRRPSocketRoutine: once an advert is routine, its repeats queue on
// the quiet socket without making Fd readable, anything else still does,
// and Drain hands both over in the order the kernel received them, with
// their arrival times.
func TestVRRPSocketRoutine(t *testing.T) {
	p := newVRRPPair(t, true)
	for _, v6 := range []bool{false, true} {
		name := map[bool]string{false: "IPv4", true: "IPv6"}[v6]
		t.Run(name, func(t *testing.T) {
			from, heard, src := p.a4, p.got4, netip.MustParseAddr("10.9.0.1")
			own := netip.MustParseAddr("10.9.0.2")
			if v6 {
				from, heard, src, own = p.a6, p.got6, p.a6.Source(), netip.Addr{}
			}
			var m *heartbeat.VRRPSocket
			if err := p.b.Do(func() (err error) {
				m, err = heartbeat.ListenVRRP(heartbeat.VRRPSocketConfig{Interface: "eth0", IPv6: v6, Source: own, Multicast: true, Manual: true})
				return err
			}); err != nil {
				t.Fatal(err)
			}
			defer m.Close()

			// send sends adverts of these priorities and waits until b's
			// other socket has heard them (so has m then: same softirq).
			send := func(prios ...uint8) (sentAt []time.Time) {
				t.Helper()
				for _, prio := range prios {
					sentAt = append(sentAt, time.Now())
					if err := from.Send(advertBytes(t, src, from.Group(), prio), from.Group()); err != nil {
						t.Fatal(err)
					}
					select {
					case <-heard:
					case <-time.After(5 * time.Second):
						t.Fatal("advert not delivered")
					}
				}
				return sentAt
			}
			readable := func() bool {
				t.Helper()
				pfd := []unix.PollFd{{Fd: int32(m.Fd()), Events: unix.POLLIN}}
				n, err := unix.Poll(pfd, 0)
				if err != nil {
					t.Fatal(err)
				}
				return n == 1
			}
			type got struct {
				prio uint8
				at   time.Time
			}
			drain := func() (out []got) {
				for m.Drain(func(pk heartbeat.VRRPPacket) {
					if pk.Src != src {
						t.Errorf("packet from %v, want %v", pk.Src, src)
					}
					out = append(out, got{pk.Payload[2], pk.At})
				}) {
				}
				return out
			}
			prios := func(gs []got) (ps []uint8) {
				for _, g := range gs {
					ps = append(ps, g.prio)
				}
				return ps
			}

			send(100)
			if !readable() {
				t.Fatal("an advert before any routine did not make Fd readable")
			}
			first := drain()
			if len(first) != 1 || first[0].prio != 100 {
				t.Fatalf("drained %v, want one advert of priority 100", prios(first))
			}
			var head [6]byte
			copy(head[:], advertBytes(t, src, from.Group(), 100))
			if err := m.SetRoutine("vi1", src, head, true); err != nil {
				t.Fatal(err)
			}

			// Repeats: queued, unseen until drained, with their arrival
			// times (after each send began, before the drain).
			sentAt := send(100, 100, 100)
			if readable() {
				t.Fatal("routine adverts made Fd readable")
			}
			before := time.Now()
			rs := drain()
			if len(rs) != 3 {
				t.Fatalf("drained %v, want the 3 routine adverts", prios(rs))
			}
			for i, g := range rs {
				if g.prio != 100 || g.at.Before(sentAt[i]) || g.at.After(before) {
					t.Errorf("routine advert %d: priority %d at %v, want 100 between %v and %v", i, g.prio, g.at, sentAt[i], before)
				}
			}

			// Anything else wakes, and the two queues come out merged in
			// arrival order.
			send(100, 100)
			if readable() {
				t.Fatal("routine adverts made Fd readable")
			}
			send(0, 100, 101, 100)
			if !readable() {
				t.Fatal("priority 0 did not make Fd readable")
			}
			mixed := drain()
			if want := []uint8{100, 100, 0, 100, 101, 100}; !slices.Equal(prios(mixed), want) {
				t.Fatalf("drained priorities %v, want %v (arrival order)", prios(mixed), want)
			}
			for i := 1; i < len(mixed); i++ {
				if mixed[i].at.Before(mixed[i-1].at) {
					t.Errorf("arrival times out of order: %v", mixed)
				}
			}

			// Cleared: every advert wakes again.
			if err := m.SetRoutine("vi1", netip.Addr{}, [6]byte{}, false); err != nil {
				t.Fatal(err)
			}
			send(100)
			if !readable() {
				t.Fatal("an advert after the routine was cleared did not make Fd readable")
			}
			if d := drain(); len(d) != 1 {
				t.Fatalf("drained %v, want one advert", prios(d))
			}
			if st := m.Stats(); st.Received != 11 {
				t.Errorf("stats %+v, want 11 received", st)
			}
		})
	}
}

// TestVRRPSendAllocatesNothing: an advert's send or resend (the master's
// every interval) costs no allocation, in either family. Nobody listens on the
// link, so no reader of this process allocates behind the count.
func TestVRRPSendAllocatesNothing(t *testing.T) {
	lab := netlab.NewForTest(t, "hba")
	br, err := lab.AddBridge("front")
	if err != nil {
		t.Fatal(err)
	}
	a, err := lab.AddNode("a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lab.Connect(a, br, "eth0", "10.9.0.1/24", "fd09::1/64"); err != nil {
		t.Fatal(err)
	}
	for _, v6 := range []bool{false, true} {
		var s *heartbeat.VRRPSocket
		if err := a.Do(func() (err error) {
			src := netip.MustParseAddr("10.9.0.1")
			if v6 {
				src = netip.Addr{}
			}
			s, err = heartbeat.ListenVRRP(heartbeat.VRRPSocketConfig{Interface: "eth0", IPv6: v6, Source: src, Multicast: true, Manual: true})
			return err
		}); err != nil {
			t.Fatal(err)
		}
		payload := advertBytes(t, s.Source(), s.Group(), 100)
		other := netip.MustParseAddr("224.0.0.18")
		if !v6 {
			other = netip.MustParseAddr("ff02::12")
		}
		if err := s.Send(payload, other); err == nil {
			t.Errorf("IPv6=%v: a send to %v (the other family) did not fail", v6, other)
		}
		var sendErr error
		allocs := testing.AllocsPerRun(50, func() {
			if err := s.Send(payload, s.Group()); err != nil {
				sendErr = err
			}
		})
		resends := testing.AllocsPerRun(50, func() {
			if err := s.Resend(); err != nil {
				sendErr = err
			}
		})
		s.Close()
		if resends != 0 {
			t.Errorf("IPv6=%v: %.1f allocations per resend, want 0", v6, resends)
		}
		if sendErr != nil {
			t.Fatalf("IPv6=%v: %v", v6, sendErr)
		}
		if allocs != 0 {
			t.Errorf("IPv6=%v: %.1f allocations per send, want 0", v6, allocs)
		}
	}
}
