package lvs_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hadirector/hadirector/integration/lvs"
)

// scenarioTimeout bounds every test of the package well below go test's
// -timeout, so a hung scenario fails normally and cleans up.
const scenarioTimeout = 60 * time.Second

func scenarioContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), scenarioTimeout)
	t.Cleanup(cancel)
	return ctx
}

var modes = []lvs.Mode{lvs.NAT, lvs.DR}

// TestTopology proves the bed without IPVS (it runs on the host too): the
// client reaches every server by its own address (NAT: routed through
// lb1; DR: on the shared segment), each server answers with its name and
// health, and in DR only the director answers ARP for the VIP although
// every real server carries it.
func TestTopology(t *testing.T) {
	for _, mode := range modes {
		t.Run(string(mode), func(t *testing.T) {
			ctx := scenarioContext(t)
			b := lvs.New(t, lvs.Options{Mode: mode, Sorry: true, Directors: 2})
			if g := b.BackVIP(); g.IsValid() {
				// The real servers' gateway, as the master holds it.
				if err := b.AddBackVIP(b.LB1()); err != nil {
					t.Fatal(err)
				}
			}
			for _, name := range append(b.RealNames(), "sorry") {
				a, _ := b.ServerAddr(name)
				addr := fmt.Sprintf("%s:%d", a, lvs.HTTPPort)
				got, err := b.Get(ctx, addr)
				if err != nil || got != name {
					t.Errorf("GET %s: %q, %v; want %q", addr, got, err, name)
				}
				r, err := lvs.HTTPGet(ctx, b.Client, addr, "/health")
				if err != nil || r.Status != http.StatusOK || r.Server != name {
					t.Errorf("GET %s/health: %+v, %v", addr, r, err)
				}
			}
			if mode != lvs.DR {
				return
			}
			// No VIP on the director yet: nobody may answer ARP for it
			// (if a real server did, it would answer the GET too). Fast
			// ARP retries, and forget the failed entry afterwards.
			if err := b.Client.Sysctl("net.ipv4.neigh.eth0.retrans_time_ms", "100"); err != nil {
				t.Fatal(err)
			}
			if got, err := b.Get(ctx, b.VIPPort(lvs.HTTPPort)); err == nil {
				t.Errorf("the VIP answered (%q) before the director had it: a real server answers ARP for it", got)
			}
			if err := lvs.ForgetNeigh(b.Client, "eth0", b.VIP()); err != nil {
				t.Fatal(err)
			}
			if err := b.AddVIP(b.LB1()); err != nil {
				t.Fatal(err)
			}
			// lb1 has no IPVS service: it refuses, after answering ARP.
			_, err := b.Get(ctx, b.VIPPort(lvs.HTTPPort))
			if !errors.Is(err, syscall.ECONNREFUSED) {
				t.Errorf("GET the VIP with no IPVS service: %v; want connection refused by lb1", err)
			}
			mac, err := lvs.NeighMAC(b.Client, "eth0", b.VIP())
			if err != nil {
				t.Fatal(err)
			}
			if want := b.LB1().Iface("eth0").MAC(); !bytes.Equal(mac, want) {
				t.Errorf("the client's ARP entry for the VIP is %v, want lb1's %v", mac, want)
			}
		})
	}
}

// TestServerKillRevive proves the servers' kill/revive and the client's
// stream (no IPVS: rs1's own address): a kill breaks the stream with a
// reset, refuses new requests, and after the revive the stream reconnects
// and records its outage.
func TestServerKillRevive(t *testing.T) {
	ctx := scenarioContext(t)
	b := lvs.New(t, lvs.Options{Mode: lvs.NAT, RealServers: 1})
	rs1 := b.Server("rs1")
	httpAddr := fmt.Sprintf("%s:%d", b.RealAddr(1), lvs.HTTPPort)
	echoAddr := fmt.Sprintf("%s:%d", b.RealAddr(1), lvs.EchoPort)

	s, err := b.StartStream(ctx, echoAddr, 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(ctx, t, "stream answers", func() bool { return s.Report().Answered >= 5 })
	if rep := s.Report(); len(rep.Breaks) != 0 || rep.Server() != "rs1" {
		t.Fatalf("stream before the kill: %v", rep)
	}

	rs1.Kill()
	if _, err := b.Get(ctx, httpAddr); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("GET a killed server: %v; want connection refused", err)
	}
	waitFor(ctx, t, "the stream to see the kill", func() bool { return len(s.Report().Breaks) > 0 })
	if err := rs1.Revive(); err != nil {
		t.Fatal(err)
	}
	waitFor(ctx, t, "the stream to reconnect", func() bool { return len(s.Report().Servers) == 2 })
	rep := s.Stop()
	t.Logf("stream: %v", rep)
	if len(rep.Breaks) != 1 || !errors.Is(rep.Breaks[0].Err, syscall.ECONNRESET) || rep.Breaks[0].Outage <= 0 {
		t.Errorf("want one break by a reset, with its outage measured: %v", rep)
	}
	if got, err := b.Get(ctx, httpAddr); err != nil || got != "rs1" {
		t.Errorf("GET the revived server: %q, %v", got, err)
	}

	rs1.SetHealthy(false)
	if r, err := lvs.HTTPGet(ctx, b.Client, httpAddr, "/health"); err != nil || r.Status != http.StatusServiceUnavailable {
		t.Errorf("/health of an unhealthy server: %+v, %v; want 503", r, err)
	}
	if rs1.Hits() != 1 || rs1.HealthHits() != 1 {
		t.Errorf("rs1 counted %d hits, %d health hits; want 1, 1", rs1.Hits(), rs1.HealthHits())
	}
}

func waitFor(ctx context.Context, t *testing.T, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// balanced reports whether tally spread its requests over exactly names,
// within one of an even share, with no error.
func balanced(tally lvs.Tally, names ...string) bool {
	if !tally.Only(names...) {
		return false
	}
	share := tally.N / len(names)
	for _, n := range names {
		if c := tally.Counts[n]; c < share-1 || c > share+1 {
			return false
		}
	}
	return true
}

// describe is a short list for messages.
func describe(names ...string) string { return strings.Join(names, ",") }
