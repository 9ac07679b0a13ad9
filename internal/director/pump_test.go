package director

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hadirector/hadirector/internal/vrrp"
)

// resendSocket is a fakeSocket that can resend (the real one:
// internal/heartbeat's TestVRRPResend) and records every advert it sends.
type resendSocket struct {
	fakeSocket
	mu      sync.Mutex
	last    []byte
	lastDst netip.Addr
	sent    []sentAdvert
}

type sentAdvert struct {
	at       time.Time
	priority uint8
	resent   bool
}

func (s *resendSocket) Send(b []byte, dst netip.Addr) error {
	s.record(b, false)
	s.mu.Lock()
	s.last, s.lastDst = append(s.last[:0], b...), dst
	s.mu.Unlock()
	return s.fakeSocket.Send(b, dst)
}

func (s *resendSocket) Resend() error {
	s.mu.Lock()
	b, dst := append([]byte(nil), s.last...), s.lastDst
	s.mu.Unlock()
	if b == nil {
		return errors.New("nothing sent yet")
	}
	s.record(b, true)
	return s.fakeSocket.Send(b, dst)
}

func (s *resendSocket) record(b []byte, resent bool) {
	var a vrrp.Advert
	if err := a.Unmarshal(b, s.src, s.Group()); err != nil {
		panic(err)
	}
	s.mu.Lock()
	s.sent = append(s.sent, sentAdvert{time.Now(), a.Priority, resent})
	s.mu.Unlock()
}

func (s *resendSocket) adverts() []sentAdvert {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]sentAdvert(nil), s.sent...)
}

// TestAdvertPump: an idle master's adverts are resent by the pump, at the
// advert interval; inputs stop the pump without an extra or a missed
// advert (the machine learns of the pumped ones); a priority change goes
// out at once and is never followed by a resend of the old priority.
func TestAdvertPump(t *testing.T) {
	cluster := strings.Replace(pairCluster, `links = ["hb"]`, "[[vrrp_instance.track_interface]]\nname = \"uplink\"\nweight = -60", 1)
	cluster = strings.Replace(cluster, `advert_interval = "20ms"`, `advert_interval = "10ms"`, 1)
	n := &fakeNet{engines: map[netip.Addr]*Engine{}}
	tl := &timeline{held: map[string]bool{}}
	src := netip.MustParseAddr("10.0.0.1")
	sock := &resendSocket{fakeSocket: fakeSocket{net: n, src: src}}
	lb1 := runEngine(t, n, src, "lb1", cluster, Options{
		Instances: map[string]InstanceIO{"VI_1": {Socket: sock, VIPs: &fakeVIPs{name: "lb1", tl: tl}}},
	})
	waitFor(t, "lb1 MASTER", func() bool { return stateOf(t, lb1) == "MASTER" })

	// Idle, then inputs (each a slow turn that stops the pump), then idle.
	time.Sleep(200 * time.Millisecond)
	// 25 ms apart: the pump sends once or twice between two of them, and
	// each stops it at another point of the interval.
	for range 8 {
		if _, err := lb1.e.Status(context.Background()); err != nil {
			t.Fatal(err)
		}
		time.Sleep(25 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	lb1.e.LinkState("uplink", false) // 150 - 60 = 90
	waitFor(t, "priority 90 sent", func() bool {
		a := sock.adverts()
		return a[len(a)-1].priority == 90
	})
	time.Sleep(100 * time.Millisecond)

	ads := sock.adverts()
	resent, old := 0, false
	for i, a := range ads {
		if a.resent {
			resent++
		}
		if i > 0 && !a.resent && ads[i-1].resent && a.priority == ads[i-1].priority {
			// A machine not told of the pump's adverts sends its own too
			// early, at the first slow turn after the pump stops: a gap
			// well below the interval (anywhere in it: eight stops, so the
			// chance that all eight are above 8 ms is 0.2^8), after a
			// pumped advert. (A new
			// priority goes out at once. The other way round, a slow
			// advert's time here can lag the time the engine sent it at,
			// on a loaded machine.)
			if gap := a.at.Sub(ads[i-1].at); gap < 8*time.Millisecond {
				t.Errorf("advert %d came %v after the pump's advert before it (interval 10ms)", i, gap)
			}
		}
		if a.priority == 90 {
			old = true
		} else if old {
			t.Errorf("advert %d (resent %v) has priority %d after priority 90 went out", i, a.resent, a.priority)
		}
	}
	// Most of them the pump's.
	if resent < len(ads)/2 {
		t.Errorf("%d of %d adverts resent: the pump did not run", resent, len(ads))
	}
	t.Logf("%d adverts, %d resent", len(ads), resent)
}
