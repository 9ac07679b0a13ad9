package heartbeat

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/hadirector/hadirector/integration/netlab"
	"github.com/mdlayher/arp"
	"github.com/mdlayher/packet"
)

// TestDrainARP: an answer already queued on the socket is found without
// waiting (what ProbeARP relies on when it ran late), and an empty queue
// returns at once.
func TestDrainARP(t *testing.T) {
	a, _ := netlab.PairForTest(t, "hbd", "eth0", []string{"10.7.1.1/24"}, []string{"10.7.1.2/24"})
	err := a.Do(func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		pc, err := packet.Listen(ifi, packet.Raw, etherTypeARP, nil)
		if err != nil {
			return err
		}
		c, err := arp.New(ifi, pc)
		if err != nil {
			pc.Close()
			return err
		}
		defer c.Close()
		peer := netip.MustParseAddr("10.7.1.2")
		start := time.Now()
		if got, err := drainARP(pc, peer); err != nil || got {
			t.Errorf("empty queue: %v, %v; want false", got, err)
		}
		if took := time.Since(start); took > 50*time.Millisecond {
			t.Errorf("draining an empty queue took %v: it waited", took)
		}
		if err := c.Request(peer); err != nil {
			return err
		}
		time.Sleep(20 * time.Millisecond) // the answer is queued meanwhile
		if got, err := drainARP(pc, peer); err != nil || !got {
			t.Errorf("queued answer: %v, %v; want true", got, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
