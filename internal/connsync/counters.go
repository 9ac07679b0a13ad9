package connsync

import (
	"sync"
	"time"
)

// Counters count what a passive listener decoded: what the standby's kernel
// learned from the sync traffic and what it ignored. The zero value is ready;
// it is safe for concurrent use.
type Counters struct {
	mu sync.Mutex
	s  Stats
}

// Stats is a snapshot of [Counters].
type Stats struct {
	Messages uint64 // datagrams observed, whether applied or dropped
	Entries  uint64 // entries the backup applied
	// Skipped counts entries the backup skipped, by entry-level reason.
	Skipped [NumDropReasons]uint64
	// Drops counts datagrams dropped whole or from a faulty entry on, by
	// message-level reason. Entries before the fault count in Entries.
	Drops        [NumDropReasons]uint64
	LastAccepted time.Time // when a datagram last decoded without a drop
	LastDrop     time.Time // when a datagram was last dropped
	LastSyncID   uint8     // the sync ID of the last datagram observed
}

// Observe counts one datagram: m and err as Decode left them, at time now.
func (c *Counters) Observe(m *Message, err error, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.s.observe(m, err, now)
}

// observe counts one datagram into s (the caller serialises).
func (s *Stats) observe(m *Message, err error, now time.Time) {
	s.Messages++
	s.LastSyncID = m.SyncID
	for i := range m.Conns {
		if r := m.Conns[i].Skip; r != DropNone {
			s.Skipped[clampReason(r)]++
		} else {
			s.Entries++
		}
	}
	if err != nil {
		s.Drops[clampReason(Reason(err))]++
		s.LastDrop = now
		return
	}
	s.LastAccepted = now
}

// Stats returns a snapshot of the counters.
func (c *Counters) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.s
}

func clampReason(r DropReason) DropReason {
	if r < 0 || r >= NumDropReasons {
		return DropUnknown
	}
	return r
}
