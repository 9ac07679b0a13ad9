// Package healthcheck owns probing real servers: checkers (TCP, HTTP(S),
// ICMP, exec), the scheduler that runs one probe per unique target with
// jitter, rise/fall counting, and transitions — emitted only when health
// changes.
//
// It knows nothing of IPVS or of the config package: the engine converts its
// configuration into a Spec per target and consumes Transitions.
//
// # Checkers
//
// A Checker answers one question once: is this server healthy now? Every
// checker honours its context's deadline absolutely: a server that accepts
// and never answers, one that trickles a byte at a time, a host that does not
// exist, a script that ignores SIGTERM — the check returns at the deadline,
// having closed its socket or killed its process group. No goroutine or
// process outlives a check. (This is keepalived's issue #1822, an HTTP_GET
// timeout that a trickling server defeats, designed out.)
//
//   - TCPSpec: a TCP connect. The connection is closed with RST (SO_LINGER 0)
//     so that 10 000 probes a second leave no TIME_WAIT sockets behind.
//   - HTTPSpec: one GET over a fresh connection (plain or TLS), with the
//     deadline set on the socket itself, so it covers the connect, the TLS
//     handshake, the request and every byte of the response. Expected status
//     codes and ranges, Host header, optional RE2 body regex and SHA-256
//     digest of the body (read up to MaxBody). Without a body to check,
//     only the status line and the framing headers are parsed, in a pooled
//     buffer, without allocating; the request, built once, is written and
//     the answer awaited in one RawConn.Read (the goroutine reads once the
//     answer is there). The connection is closed with RST too, once the
//     check has what it needs, unless KeepAlive keeps it for the next
//     probe. Redirects are not followed: a 302 is a 302. TLS certificates are NOT verified by default, like
//     keepalived's SSL_GET: a health check asks "does this server answer",
//     and real servers often carry certificates for the public name, not for
//     their own address; set VerifyTLS (and CAFile) to verify.
//   - ICMPSpec: an echo request over one raw socket per address family,
//     shared by every ICMP probe of the process (Pinger), with replies
//     demultiplexed by (identifier, sequence) and a random cookie.
//   - ExecSpec: a program run with no shell, in its own process group, with
//     HADIRECTOR_CHECK_ADDR and HADIRECTOR_CHECK_PORT in its environment.
//     Exit 0 is healthy; with Dynamic, exit 2..255 is healthy with weight
//     exit-2 (keepalived's misc_dynamic). At the deadline the group gets
//     SIGTERM, then SIGKILL: the SIGTERM is sent a grace period before the
//     deadline so that the check still returns at the deadline.
//
// Every probe uses a fresh connection, never a kept-alive one: a probe must
// see what a new client sees (a full accept queue, a TLS stack that fails,
// a server that stopped accepting while old connections live on), a broken
// connection must not carry over from one probe to the next, and 10 000
// targets must not pin 10 000 idle sockets.
//
// # Scheduling
//
// The Manager holds targets (TargetID → Spec). Targets whose Spec has the
// same probe key (the checker's canonical Key plus interval and timeout) share
// one probe: the server is probed once per interval however many services
// use it, and every target subscribed to the probe gets its own transitions,
// counted with its own rise, fall and initial state against the probe's
// shared streak of identical results.
//
// Probes are not goroutines: a probe waiting for its next round is an entry
// in one timing wheel of due times (one slot per quantum, O(1) to schedule
// or remove), and a single scheduler goroutine sleeps until the earliest
// entry, then starts every round due within half a quantum
// (Options.Quantum, 5ms by default), each on a worker goroutine: the most
// recently idle worker if there is one, else a new one (a round never
// waits for a worker); workers left idle for a second exit. The scheduler wakes at most
// once per quantum: 10 000 rounds a second cost 200 wake-ups, not 10 000
// timer firings each waking a thread. Memory follows the checks in flight,
// not the number of targets. (Measured against one runtime timer per probe,
// time.AfterFunc: about 20 % less CPU per check at 2 000 targets a second;
// see bench_test.go.)
//
// A probe runs at a fixed rate: round k starts at first + k·interval, plus a
// small random deviation each round (Options.RoundJitter, ±2 % by default),
// and within half a quantum. Since the timeout is at most the interval, a
// dead server is seen within fall × interval + timeout. The first round of
// a new probe is at a random offset within one interval, so that 10 000
// targets added at once (start-up, a reload) do not fire in lockstep. A
// round in flight is out of the heap until it is over, so a slow check
// delays only its own probe's next round: there is no worker pool to
// exhaust and no queue to block. If a round overruns its slot (a timeout
// equal to the interval, a stalled machine), the missed slots are skipped,
// not made up in a burst, and counted as late.
//
// # Transitions
//
// A Transition is emitted when a target's state changes (and when the
// dynamic weight of a healthy exec target changes). Delivery never blocks a
// probe: transitions go to a per-target coalescing queue read by one
// goroutine that feeds the Transitions channel. If the consumer falls
// behind, a second transition of the same target merges into the one still
// waiting (From of the first, To and Detail of the latest, Coalesced
// counting the merged ones), so the queue holds at most one entry per target
// and the latest state is never lost — unlike a bounded buffer that drops,
// after which the consumer would hold a wrong state until the next change.
package healthcheck
