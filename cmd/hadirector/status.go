package main

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/hadirector/hadirector/internal/control"
)

func cmdStatus(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("status", "[--json] [--socket PATH]", stderr)
	socket := fs.String("socket", control.DefaultSocket, "control socket `path`")
	asJSON := fs.Bool("json", false, "print JSON for tools")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	st, err := control.GetStatus(*socket, 5*time.Second)
	if err != nil {
		fmt.Fprintf(stderr, "hadirector status: %v\n", err)
		return exitFail
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(st)
		return exitOK
	}
	printStatus(stdout, st, time.Now())
	return exitOK
}

// printStatus renders the table an operator reads.
func printStatus(w io.Writer, st *control.Status, now time.Time) {
	fmt.Fprintf(w, "cluster %s   node %s   hadirector %s   pid %d   up %s\n",
		st.Cluster, st.Node, st.Version, st.PID, now.Sub(st.Started).Round(time.Second))
	fmt.Fprintf(w, "config  %s (loaded %s, %d reloads)\n", st.ConfigFile, st.Loaded.Format(time.DateTime), st.Reloads)
	if lr := st.LastReload; lr != nil {
		if lr.Applied {
			fmt.Fprintf(w, "last reload %s: applied, %d changes\n", lr.At.Format(time.DateTime), len(lr.Changes))
		} else {
			fmt.Fprintf(w, "last reload %s: REFUSED, running the previous config: %s\n", lr.At.Format(time.DateTime), firstLine(lr.Error))
		}
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "INSTANCE\tVRID\tINTERFACE\tSTATE\tPRIORITY\tADVERT\tMASTER\tSINCE\tVIPS")
	for _, in := range st.Instances {
		master, since := or(in.Master, "-"), "-"
		if !in.LastTransition.IsZero() {
			since = now.Sub(in.LastTransition).Round(time.Millisecond).String()
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n", in.Name, in.VRID, in.Interface, in.State, in.Priority, in.AdvertInterval, master, since, strings.Join(in.VIPs, " "))
	}
	if len(st.Instances) == 0 {
		fmt.Fprintln(tw, "(none)")
	}
	tw.Flush()
	if len(st.Links) > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "LINK\tKIND\tSTATE\tLAST RX\tRX\tTX\tDROPS")
		for _, l := range st.Links {
			state, last := "DOWN", "never"
			if l.Up {
				state = "up"
			}
			if !l.LastRx.IsZero() {
				last = now.Sub(l.LastRx).Round(time.Millisecond).String() + " ago"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%s\n", l.Name, l.Kind, state, last, l.RxFrames, l.TxFrames, counts(l.Drops))
		}
		tw.Flush()
	}
	if nl := st.NodeLoss; nl != nil {
		// Printed with the links: it is what their silences led to.
		last := "never"
		if !nl.LastProbe.IsZero() {
			last = nl.LastResult + ", " + now.Sub(nl.LastProbe).Round(time.Millisecond).String() + " ago"
		}
		fmt.Fprintf(w, "node-loss probes (ARP, when every link is silent): %d (alive %d, lost %d, errors %d); late frames %d, links failed %d; last: %s\n",
			nl.Probes, nl.Alive, nl.Lost, nl.Errors, nl.Late, nl.LinksFailed, last)
	}
	if len(st.Drops) > 0 {
		fmt.Fprintf(w, "\nVRRP packets dropped: %s\n", counts(st.Drops))
	}
	if sy := st.Sync; sy != nil {
		fmt.Fprintf(w, "\nconnection sync: mode %s on %s, sync id %d\n", sy.Mode, sy.Interface, sy.SyncID)
		for _, d := range sy.Daemons {
			fmt.Fprintf(w, "  %s\n", d)
		}
		if len(sy.Daemons) == 0 {
			fmt.Fprintln(w, "  NO SYNC DAEMON RUNNING")
		}
		if len(sy.Sysctls) > 0 {
			keys := make([]string, 0, len(sy.Sysctls))
			for k := range sy.Sysctls {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			parts := make([]string, len(keys))
			for i, k := range keys {
				parts[i] = k + "=" + sy.Sysctls[k]
			}
			fmt.Fprintf(w, "  sysctls: %s\n", strings.Join(parts, " "))
		}
		if sy.LastError != "" {
			fmt.Fprintf(w, "  error: %s\n", sy.LastError)
		}
		if dc := sy.Decoder; dc != nil {
			printDecoder(w, dc, now)
		}
		if p := sy.Peer; p != nil {
			printPeer(w, p, now)
		}
	}
	if len(st.Services) == 0 {
		return
	}
	printServices(w, st, now)
}

// printServices is ipvsadm -Ln's view plus health: each service with its
// quorum, then its real servers with forwarding, weight in IPVS (and the
// configured one when they differ), connection counters and health.
func printServices(w io.Writer, st *control.Status, now time.Time) {
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVICE / REAL SERVER\tFORWARD\tWEIGHT\tACTIVE\tINACTIVE\tHEALTH\tSTATE\tSINCE\tDETAIL")
	for _, s := range st.Services {
		q := "quorum up"
		if !s.QuorumUp {
			q = "QUORUM LOST"
		}
		fmt.Fprintf(tw, "%s %s %s\t\t\t\t\t%s %d/%d\t\t%s\t\n", s.Name, s.Key, s.Scheduler, q, s.LiveWeight, s.Quorum, ago(now, s.QuorumSince))
		for _, r := range s.RealServers {
			weight := "-"
			if r.InTable {
				weight = fmt.Sprint(r.EffectiveWeight)
			}
			if !r.InTable || r.EffectiveWeight != r.Weight {
				weight += fmt.Sprintf(" (%d)", r.Weight)
			}
			if r.WeightOverride != nil {
				weight += " set"
			}
			fmt.Fprintf(tw, "  -> %s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Address, r.Forwarding, weight,
				conns(r.ActiveConns), conns(r.InactiveConns), r.Health, r.State, ago(now, r.Since), r.Detail)
		}
		if s.SorryServer != "" {
			state := "standby"
			if s.SorryActive {
				state = "ACTIVE"
			}
			fmt.Fprintf(tw, "  -> %s (sorry)\t\t\t%s\t%s\t\t%s\t\t\n", s.SorryServer, conns(s.SorryActiveConns), conns(s.SorryInactiveConns), state)
		}
	}
	tw.Flush()
	if ip := st.IPVS; ip != nil {
		fmt.Fprintf(w, "\nIPVS: %d services, %d destinations; %d kernel ops (%d failed), %d drift repairs; last full check %s\n",
			ip.Services, ip.Destinations, ip.Ops, ip.FailedOps, ip.Repairs, ago(now, ip.LastFull))
		for _, f := range ip.Failed {
			fmt.Fprintf(w, "  failing: %s\n", f)
		}
		if len(ip.Unowned) > 0 {
			fmt.Fprintf(w, "  not hadirector's (left alone): %s\n", strings.Join(ip.Unowned, ", "))
		}
		if ip.Error != "" {
			fmt.Fprintf(w, "  error: %s\n", ip.Error)
		}
		if ip.CountersError != "" {
			fmt.Fprintf(w, "  counters: %s\n", ip.CountersError)
		}
	}
}

func conns(p *uint32) string {
	if p == nil {
		return "-"
	}
	return fmt.Sprint(*p)
}

// ago is "3s" (how long ago t was), or "-" for the zero time.
func ago(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := now.Sub(t)
	switch {
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Hour:
		return d.Round(time.Second).String()
	}
	return d.Round(time.Minute).String()
}

func firstLine(s string) string {
	first, rest, more := strings.Cut(s, "\n")
	if more {
		return fmt.Sprintf("%s (and %d more)", first, strings.Count(rest, "\n")+1)
	}
	return first
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// counts renders a counter map as "a=1 b=2", sorted, or "-".
func counts(m map[string]uint64) string {
	if len(m) == 0 {
		return "-"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%d", k, m[k])
	}
	return strings.Join(parts, " ")
}

// printPeer shows the peer state channel and the caught-up gate.
func printPeer(w io.Writer, p *control.PeerStatus, now time.Time) {
	state, last := "DOWN", "never"
	if p.Up {
		state = "up"
	}
	if !p.LastRx.IsZero() {
		last = ago(now, p.LastRx) + " ago"
	}
	fmt.Fprintf(w, "  peer channel %s -> %s: %s (last heard %s; sent %d states, %d pages; received %d, %d)\n",
		p.Local, p.Remote, state, last, p.TxState, p.TxPages, p.RxState, p.RxPages)
	if p.RxState > 0 {
		role := "backup"
		if p.PeerMaster {
			role = "master"
		}
		epoch := "same services"
		if !p.SameEpoch {
			epoch = "OTHER SERVICES (config differs: verdicts not followed)"
		}
		fmt.Fprintf(w, "    peer: %s, %d connections, %d real servers down or overridden, %s\n", role, p.PeerConns, p.PeerEntries, epoch)
	}
	holds := "has not acknowledged"
	if p.PeerHolds {
		holds = "holds"
	}
	verdicts := "own"
	if p.Following {
		verdicts = "the master's"
	}
	fmt.Fprintf(w, "    here: %d connections; verdicts in IPVS: %s; the peer %s this node's state\n", p.Conns, verdicts, holds)
	if p.Gate != "" {
		gate := "open"
		if p.Holding {
			gate = "SHUT for " + ago(now, p.GateSince)
		}
		fmt.Fprintf(w, "    caught-up gate %s: %s\n", gate, p.Gate)
	}
	if len(p.Drops) > 0 {
		fmt.Fprintf(w, "    dropped: %s\n", counts(p.Drops))
	}
}

// printDecoder shows what the passive decoder heard from the peer's master
// sync daemon.
func printDecoder(w io.Writer, d *control.DecoderStatus, now time.Time) {
	if d.Error != "" {
		fmt.Fprintf(w, "  decoder: not running (%s)\n", d.Error)
		return
	}
	last := "never"
	if !d.LastSeen.IsZero() {
		last = ago(now, d.LastSeen) + " ago from " + d.LastSender
	}
	fmt.Fprintf(w, "  decoder: %d messages, %d entries from the peer's master daemon; last %s\n", d.Messages, d.Entries, last)
	if len(d.Drops) > 0 || len(d.Skipped) > 0 || d.SocketDrops > 0 {
		fmt.Fprintf(w, "    dropped: %s; entries skipped: %s; lost in the socket: %d\n", counts(d.Drops), counts(d.Skipped), d.SocketDrops)
	}
	if d.Senders > 1 {
		fmt.Fprintf(w, "    %d SENDERS: more than one master daemon on the sync link\n", d.Senders)
	}
}
