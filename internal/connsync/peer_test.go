package connsync

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/hadirector/hadirector/internal/heartbeat"
	"golang.org/x/sys/unix"
)

func entriesN(n int) []PeerEntry {
	var es []PeerEntry
	for i := range n {
		es = append(es, PeerEntry{
			Service: fmt.Sprintf("tcp/192.0.2.%d:80", i%200), Real: netip.MustParseAddrPort(fmt.Sprintf("[fd00::%x]:8080", i+1)),
			Down: i%2 == 0, Drained: i%3 == 0, Weight: i % 7, HasWeight: i%5 == 0, AdminAt: int64(i) * 1e9,
		})
	}
	sortEntries(es)
	return es
}

func TestPeerCodecRoundTrip(t *testing.T) {
	for _, n := range []int{0, 1, 17, 400} {
		es := entriesN(n)
		pages, skipped := encodePages(42, es, heartbeat.MaxPayload)
		if skipped != 0 {
			t.Fatalf("%d entries skipped", skipped)
		}
		var got []PeerEntry
		for i, pg := range pages {
			if len(pg) > heartbeat.MaxPayload {
				t.Fatalf("page %d is %d bytes, more than a frame carries", i, len(pg))
			}
			m, err := decodePeerMsg(pg)
			if err != nil {
				t.Fatalf("n=%d page %d: %v", n, i, err)
			}
			pm := m.(pageMsg)
			if pm.Gen != 42 || pm.Page != i || pm.Pages != len(pages) {
				t.Fatalf("page header %+v, want gen 42 page %d of %d", pm, i, len(pages))
			}
			got = append(got, pm.Entries...)
		}
		if !reflect.DeepEqual(got, es) && !(len(got) == 0 && len(es) == 0) {
			t.Fatalf("n=%d: round trip differs", n)
		}
	}
	st := stateMsg{Gen: 7, Ack: 9, Epoch: 0xdeadbeef, Master: true, Conns: 1000, Pages: 3}
	m, err := decodePeerMsg(encodeState(st))
	if err != nil || m.(stateMsg) != st {
		t.Fatalf("state round trip: %+v, %v", m, err)
	}
}

func TestPeerDecodeRejects(t *testing.T) {
	good := encodeState(stateMsg{Gen: 1, Pages: 1})
	page, _ := encodePages(1, entriesN(2), heartbeat.MaxPayload)
	for _, tc := range []struct {
		name string
		b    []byte
		want string
	}{
		{"empty", nil, "truncated"},
		{"version", append([]byte{'S', 2}, good[2:]...), "unknown version"},
		{"type", append([]byte{'X', 1}, good[2:]...), "unknown message type"},
		{"state short", good[:len(good)-1], "truncated"},
		{"state long", append(bytes.Clone(good), 0), "malformed"},
		{"state flags", func() []byte { b := bytes.Clone(good); b[26] = 0x80; return b }(), "malformed"},
		{"page short", page[0][:len(page[0])-3], "truncated"},
		{"page trailing", append(bytes.Clone(page[0]), 1), "malformed"},
		{"page index", func() []byte { b := bytes.Clone(page[0]); b[11] = 5; return b }(), "malformed"},
		{"entry address length", func() []byte {
			b := bytes.Clone(page[0])
			b[pageHeaderLen+1+int(b[pageHeaderLen])] = 5
			return b
		}(), "malformed"},
	} {
		if _, err := decodePeerMsg(tc.b); err == nil || peerErrName(err) != tc.want {
			t.Errorf("%s: err %v (%s), want %s", tc.name, err, peerErrName(err), tc.want)
		}
	}
}

func FuzzPeerDecode(f *testing.F) {
	f.Add(encodeState(stateMsg{Gen: 1, Ack: 2, Epoch: 3, Master: true, Conns: 4, Pages: 1}))
	pages, _ := encodePages(5, entriesN(20), heartbeat.MaxPayload)
	for _, p := range pages {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodePeerMsg(b)
		if err != nil {
			return
		}
		// What decodes re-encodes to the same bytes.
		var out []byte
		switch m := m.(type) {
		case stateMsg:
			out = encodeState(m)
		case pageMsg:
			pg, _ := encodePages(m.Gen, m.Entries, 1<<20)
			if len(pg) == 1 {
				out = pg[0]
				out[10], out[11], out[12], out[13] = b[10], b[11], b[12], b[13]
			} else {
				out = b[:pageHeaderLen] // no entries: header only
			}
		}
		if !bytes.Equal(out, b) {
			t.Fatalf("re-encoding differs:\n in %x\nout %x", b, out)
		}
	})
}

// peerPair runs two channels on 127.0.0.1 and 127.0.0.2.
type peerEnd struct {
	ch    *PeerChannel
	mu    sync.Mutex
	state PeerState
	got   []PeerState
}

func (e *peerEnd) set(s PeerState) { e.mu.Lock(); e.state = s; e.mu.Unlock() }
func (e *peerEnd) last() (PeerState, int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.got) == 0 {
		return PeerState{}, 0
	}
	return e.got[len(e.got)-1], len(e.got)
}

func freePort(t *testing.T) int {
	t.Helper()
	for range 50 {
		c, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := c.LocalAddr().(*net.UDPAddr).Port
		o, err := net.ListenPacket("udp4", fmt.Sprintf("127.0.0.2:%d", port))
		c.Close()
		if err == nil {
			o.Close()
			return port
		}
	}
	t.Fatal("no free UDP port on 127.0.0.1 and 127.0.0.2")
	return 0
}

func newEnd(t *testing.T, node, peer, local, remote string, port int, key []byte, interval time.Duration) *peerEnd {
	t.Helper()
	e := &peerEnd{}
	ch, err := NewPeerChannel(PeerConfig{NodeID: node, PeerID: peer,
		Local: netip.MustParseAddr(local), Peer: netip.MustParseAddr(remote), Port: port,
		Key: key, Domain: "test", Interval: interval,
		State: func() PeerState {
			e.mu.Lock()
			defer e.mu.Unlock()
			s := e.state
			s.Entries = append([]PeerEntry(nil), s.Entries...)
			return s
		},
		OnState: func(s PeerState) { e.mu.Lock(); e.got = append(e.got, s); e.mu.Unlock() },
	})
	if err != nil {
		t.Fatal(err)
	}
	e.ch = ch
	t.Cleanup(func() { ch.Close() })
	return e
}

func waitFor(t *testing.T, what string, d time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestPeerChannelExchangesState(t *testing.T) {
	port := freePort(t)
	key := bytes.Repeat([]byte{7}, 32)
	const interval = 100 * time.Millisecond
	a := newEnd(t, "lb1", "lb2", "127.0.0.1", "127.0.0.2", port, key, interval)
	a.set(PeerState{Epoch: 11, Master: true, Conns: 1000, Entries: entriesN(300)}) // several pages
	b := newEnd(t, "lb2", "lb1", "127.0.0.2", "127.0.0.1", port, key, interval)
	b.set(PeerState{Epoch: 11, Conns: 5})

	waitFor(t, "lb2 holds lb1's state", 2*time.Second, func() bool {
		s, _ := b.last()
		return s.Master && s.Conns == 1000 && reflect.DeepEqual(s.Entries, entriesN(300))
	})
	waitFor(t, "lb1 holds lb2's state", 2*time.Second, func() bool { s, _ := a.last(); return s.Conns == 5 && !s.Master })
	waitFor(t, "both acknowledged", 2*time.Second, func() bool { return a.ch.Stats().PeerHolds && b.ch.Stats().PeerHolds })

	// A change reaches the peer at once (Kick), not at the next interval.
	changed := entriesN(3)
	a.set(PeerState{Epoch: 12, Master: false, Conns: 7, Entries: changed})
	start := time.Now()
	a.ch.Kick()
	waitFor(t, "lb2 sees the change", time.Second, func() bool {
		s, _ := b.last()
		return s.Epoch == 12 && reflect.DeepEqual(s.Entries, changed)
	})
	if d := time.Since(start); d > interval {
		t.Errorf("change took %v to arrive; want it within the interval %v (sent at once)", d, interval)
	}

	// Restart lb1: lb2 forgets what it held and learns the new run's list.
	a.ch.Close()
	a2 := newEnd(t, "lb1", "lb2", "127.0.0.1", "127.0.0.2", port, key, interval)
	fresh := entriesN(1)
	a2.set(PeerState{Epoch: 13, Entries: fresh})
	waitFor(t, "lb2 holds the restarted lb1's state", 2*time.Second, func() bool {
		s, _ := b.last()
		return s.Epoch == 13 && reflect.DeepEqual(s.Entries, fresh)
	})
	st := b.ch.Stats()
	if len(st.DecodeErrors) != 0 || st.Link.DropTotal() != 0 {
		t.Errorf("drops on a clean exchange: decode %v link %v", st.DecodeErrors, st.Link.Drops)
	}
}

// TestPeerChannelRejectsForgedAndReplayed: a frame under another key, and
// a genuine frame sent again, are dropped and counted by reason; the state
// never changes.
func TestPeerChannelRejectsForgedAndReplayed(t *testing.T) {
	port := freePort(t)
	key := bytes.Repeat([]byte{7}, 32)
	b := newEnd(t, "lb2", "lb1", "127.0.0.2", "127.0.0.1", port, key, 50*time.Millisecond)

	// Play lb1 by hand, from 127.0.0.1:port with TTL 255 as the link wants.
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rc, _ := c.SyscallConn()
	rc.Control(func(fd uintptr) { setTTL255(t, fd) })
	to := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2), Port: port}
	seal := func(k []byte, payload []byte) []byte {
		s, err := heartbeat.NewSealer(k, "test/peer-state", "lb1")
		if err != nil {
			t.Fatal(err)
		}
		f, err := s.Seal(nil, payload)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	forged := seal(bytes.Repeat([]byte{8}, 32), encodeState(stateMsg{Gen: 5, Master: true, Conns: 99}))
	c.WriteToUDP(forged, to)
	genuine := seal(key, encodeState(stateMsg{Gen: 6, Conns: 1}))
	c.WriteToUDP(genuine, to)
	waitFor(t, "the genuine state arrives", time.Second, func() bool { s, _ := b.last(); return s.Conns == 1 })
	c.WriteToUDP(genuine, to) // replayed
	garbage := seal(key, []byte{'S', 1, 2, 3})
	c.WriteToUDP(garbage, to)
	waitFor(t, "drops counted", time.Second, func() bool {
		st := b.ch.Stats()
		return st.Link.Drops[heartbeat.DropBadMAC] == 1 && st.Link.Drops[heartbeat.DropReplay] == 1 &&
			st.DecodeErrors["truncated"] == 1
	})
	if s, n := b.last(); n != 1 || s.Conns != 1 || s.Master {
		t.Fatalf("state after forged, replayed and garbage messages: %+v (%d deliveries); want only the genuine one", s, n)
	}
}

func setTTL255(t *testing.T, fd uintptr) {
	if err := unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_TTL, 255); err != nil {
		t.Fatal(err)
	}
}
