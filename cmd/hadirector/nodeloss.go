package main

import (
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/hadirector/hadirector/internal/config"
	"github.com/hadirector/hadirector/internal/control"
	"github.com/hadirector/hadirector/internal/heartbeat"
)

// nodeLoss detects the loss of the peer node faster than VRRP's timer when
// the pair has fast heartbeat links. When every link to the peer goes
// silent at once, either the links failed or the whole node did. An ARP
// probe of the peer's addresses on the VRRP interfaces tells which: a node
// whose kernel still answers is alive (its links failed, and the RFC timers
// stay in charge); no answer on any of them means the node is gone, and the
// backup takes over now instead of three advert intervals later.
//
// "Silent" starts early: a link is silent when it is down, or quiet (one
// frame missed, heartbeat's OnQuiet) with no frame since. The probe is
// cheap and a live node's kernel answers it in microseconds, so probing
// after one missed frame costs nothing when it was a false alarm, and
// saves the rest of the down-after time when it was not.
//
// The probe runs once per silence of all the links (a frame on any link
// re-arms it), off every lock and the engine's goroutine. A node that
// answers is not news until its links go down: a fast link on a loaded
// host often misses one frame and then carries on, so only links that go
// down are warned about; late frames are counted and reported rarely.
type nodeLoss struct {
	log     *slog.Logger
	lost    func([]netip.Addr) // the engine's PeerLost
	targets []arpTarget        // the peer's IPv4 address on each VRRP interface
	addrs   []netip.Addr       // every address of the peer, for PeerLost
	tries   int
	wait    time.Duration
	probe   func(ifname string, target netip.Addr, tries int, wait time.Duration) (bool, error)

	// lastRx reads a link's latest frame time (its Health().LastRx).
	lastRx func(name string) time.Time

	mu      sync.Mutex
	links   map[string]bool      // link name → up
	quietRx map[string]time.Time // link name → its LastRx when it was reported quiet
	armed   bool                 // a frame came since the last probe began
	probing bool
	// answered: the last probe found the node alive, and no frame has
	// come since. If the links then go down, they failed (warned once);
	// if a frame comes first, it was only late (counted in stat.Late,
	// and reported at most every lateReportEvery), as a fast link on a
	// loaded host often is: warning each time would bury real failures.
	answered   bool
	lateLogged time.Time
	stat       control.NodeLossStatus // for status
}

// lateReportEvery bounds how often late frames (a silence the ARP probe
// found harmless, ended by a frame) are logged.
const lateReportEvery = 10 * time.Minute

type arpTarget struct {
	ifname string
	addr   netip.Addr
}

// Node-loss probe timing: two ARP requests, each given an eighth of the
// fastest link's interval (at least 2 ms, at most 50 ms) for its answer. An
// ARP reply on a LAN takes well under a millisecond; two chances absorb a
// lost frame, and the longer wait on slower links (where the probe is not
// what makes detection slow) keeps a loaded peer from being taken for dead.
const (
	nodeLossTries   = 2
	nodeLossWaitMin = 2 * time.Millisecond
	nodeLossWaitMax = 50 * time.Millisecond
)

// nodeLossWait is the per-try wait for links whose fastest interval is
// fastest.
func nodeLossWait(fastest time.Duration) time.Duration {
	return min(max(fastest/8, nodeLossWaitMin), nodeLossWaitMax)
}

// newNodeLoss watches the links named in links; nil when there is nothing
// to probe (no IPv4 VRRP interface shared with the peer).
func newNodeLoss(cfg *config.Config, peer *config.Node, links []string, lastRx func(string) time.Time, lost func([]netip.Addr), log *slog.Logger) *nodeLoss {
	fastest := time.Duration(0)
	for _, l := range cfg.Links {
		for _, name := range links {
			if l.Name == name && (fastest == 0 || l.Interval.D() < fastest) {
				fastest = l.Interval.D()
			}
		}
	}
	n := &nodeLoss{log: log, lost: lost, addrs: nodeAddrs(peer), tries: nodeLossTries, wait: nodeLossWait(fastest),
		probe: heartbeat.ProbeARP, lastRx: lastRx, links: map[string]bool{}, quietRx: map[string]time.Time{}, armed: true}
	seen := map[string]bool{}
	for _, in := range cfg.Instances {
		if in.Family() != config.IPv4 || seen[in.Interface] {
			continue
		}
		seen[in.Interface] = true
		if a, ok := peer.Interface(in.Interface).FirstAddr(config.IPv4); ok {
			n.targets = append(n.targets, arpTarget{in.Interface, a})
		}
	}
	if len(n.targets) == 0 || len(links) == 0 {
		return nil
	}
	for _, l := range links {
		n.links[l] = true // up until told otherwise: no probe before any link has been seen down
	}
	return n
}

// health takes a link's health transition.
func (n *nodeLoss) health(h heartbeat.LinkHealth) {
	n.update(h.Name, func() {
		n.links[h.Name] = h.Up
		if h.Up {
			n.armed = true // a frame came
			n.frameLocked()
		} else if n.answered && n.allDownLocked() {
			n.answered = false
			n.warnFailedLocked("link", h.Name)
		}
	})
}

// quiet takes a link's quiet report (one frame missed).
func (n *nodeLoss) quiet(h heartbeat.LinkHealth) {
	n.update(h.Name, func() {
		n.quietRx[h.Name] = h.LastRx
		n.armed = true // each silence begins with a frame
		n.frameLocked()
	})
}

// frameLocked notes that a frame came: a silence the last probe found
// the node alive in was frames coming late, not links failing.
func (n *nodeLoss) frameLocked() {
	if !n.answered {
		return
	}
	n.answered = false
	n.stat.Late++
	if now := time.Now(); n.lateLogged.IsZero() || now.Sub(n.lateLogged) >= lateReportEvery {
		n.lateLogged = now
		n.log.Info("heartbeat frames came late: every link to the peer went quiet, its node answered ARP, then frames resumed (the links' interval may be short for this host's scheduling)",
			"times_since_start", n.stat.Late)
	}
}

// warnFailedLocked says that the links failed while the peer's node lives.
func (n *nodeLoss) warnFailedLocked(args ...any) {
	n.stat.LinksFailed++
	n.log.Warn("every heartbeat link to the peer is silent, but its node answers ARP: the links failed; the VRRP timer decides", args...)
}

// allDownLocked: every link is down (not only quiet).
func (n *nodeLoss) allDownLocked() bool {
	for _, up := range n.links {
		if up {
			return false
		}
	}
	return true
}

// update applies f (under the lock) for a watched link, and starts a
// probe if that made every link silent.
func (n *nodeLoss) update(link string, f func()) {
	n.mu.Lock()
	if _, ok := n.links[link]; !ok {
		n.mu.Unlock()
		return
	}
	f()
	start := n.startLocked()
	n.mu.Unlock()
	if start {
		go n.run()
	}
}

// startLocked says whether to probe now, and marks the probe started.
func (n *nodeLoss) startLocked() bool {
	if !n.armed || n.probing || !n.allSilentLocked() {
		return false
	}
	n.armed, n.probing = false, true
	return true
}

// allSilentLocked: every link is down, or quiet with no frame since.
func (n *nodeLoss) allSilentLocked() bool {
	for name, up := range n.links {
		if !up {
			continue
		}
		q, ok := n.quietRx[name]
		if !ok || n.lastRx == nil || !n.lastRx(name).Equal(q) {
			return false
		}
	}
	return true
}

func (n *nodeLoss) run() {
	defer func() {
		n.mu.Lock()
		n.probing = false
		n.mu.Unlock()
	}()
	start := time.Now()
	n.mu.Lock()
	n.stat.Probes++
	n.stat.LastProbe = start
	n.mu.Unlock()
	for _, t := range n.targets {
		alive, err := n.probe(t.ifname, t.addr, n.tries, n.wait)
		if err != nil {
			n.mu.Lock()
			n.resultLocked("error", &n.stat.Errors)
			n.mu.Unlock()
			n.log.Warn("node-loss probe failed; the VRRP timer decides", "interface", t.ifname, "peer", t.addr, "err", err)
			return
		}
		if alive {
			// Down links failed; quiet ones may only be late: wait
			// for a frame (late) or for them to go down (failed).
			n.mu.Lock()
			n.resultLocked("alive", &n.stat.Alive)
			if n.allDownLocked() {
				n.warnFailedLocked("interface", t.ifname, "peer", t.addr, "probe", time.Since(start))
			} else {
				n.answered = true
				if !n.allSilentLocked() {
					n.frameLocked() // one came while probing
				}
			}
			n.mu.Unlock()
			n.log.Debug("node-loss probe: the peer's node answers ARP", "interface", t.ifname, "peer", t.addr, "probe", time.Since(start))
			return
		}
	}
	n.mu.Lock()
	back := !n.allSilentLocked()
	if back {
		n.resultLocked("resumed", nil)
	} else {
		n.resultLocked("lost", &n.stat.Lost)
	}
	n.mu.Unlock()
	if back {
		return // a link came back while probing
	}
	n.log.Warn("peer node lost: every heartbeat link is silent and it answers no ARP", "probe", time.Since(start))
	n.lost(n.addrs)
}

// resultLocked records how a probe ended, counting it in count (nil: in
// none).
func (n *nodeLoss) resultLocked(r string, count *uint64) {
	n.stat.LastResult = r
	if count != nil {
		*count++
	}
}

// status is the probe's record, for status.
func (n *nodeLoss) status() *control.NodeLossStatus {
	n.mu.Lock()
	defer n.mu.Unlock()
	st := n.stat
	return &st
}

// openProbers opens an ARP prober per probed interface ahead of time, so a
// probe does not pay for its socket when it counts; an interface whose
// prober cannot be opened is probed with a socket of its own each time.
// It returns a function that closes them.
func (n *nodeLoss) openProbers() func() {
	probers := map[string]*heartbeat.ARPProber{}
	for _, t := range n.targets {
		if _, ok := probers[t.ifname]; ok {
			continue
		}
		p, err := heartbeat.NewARPProber(t.ifname)
		if err != nil {
			n.log.Warn("node-loss ARP prober not opened ahead; it will open at each probe", "interface", t.ifname, "err", err)
			continue
		}
		probers[t.ifname] = p
	}
	n.probe = func(ifname string, target netip.Addr, tries int, wait time.Duration) (bool, error) {
		if p, ok := probers[ifname]; ok {
			return p.Probe(target, tries, wait)
		}
		return heartbeat.ProbeARP(ifname, target, tries, wait)
	}
	return func() {
		for _, p := range probers {
			p.Close()
		}
	}
}
