package director

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hadirector/hadirector/internal/config"
	"github.com/hadirector/hadirector/internal/control"
	"github.com/hadirector/hadirector/internal/healthcheck"
	"github.com/hadirector/hadirector/internal/ipvs"
	"github.com/hadirector/hadirector/internal/ipvs/ipvstest"
)

// The policy and its engine wiring, on the in-memory kernel (ipvstest,
// proven equal to the real one in the VM) and a scripted probe manager.
// integration/lvs runs the same behaviours against real IPVS and real
// probes in the VM.

const lvsHead = `
[cluster]
name = "t"
[[node]]
name = "lb1"
[[node.interface]]
name = "eth0"
addresses = ["192.0.2.11/24"]
`

// web: three real servers of weight 1, 2, 3 behind one NAT service.
const webService = `
[[virtual_service]]
name = "web"
address = "192.0.2.100:80"
forwarding = "nat"
scheduler = "rr"
quorum = 3
quorum_hysteresis = 1
sorry_server = "198.51.100.9:8080"
[virtual_service.check]
type = "tcp"
interval = "1s"
[[virtual_service.real_server]]
address = "198.51.100.1:80"
weight = 1
[[virtual_service.real_server]]
address = "198.51.100.2:80"
weight = 2
[[virtual_service.real_server]]
address = "198.51.100.3:80"
weight = 3
`

// dests renders a service's destinations as "addr=weight ..." sorted.
func dests(ds []ipvs.Destination) string {
	var parts []string
	for _, d := range ds {
		parts = append(parts, fmt.Sprintf("%s=%d", d.Addr, d.Weight))
	}
	slices.Sort(parts)
	return strings.Join(parts, " ")
}

// TestPolicy walks one service through health changes and operator
// overrides, checking its IPVS entries and quorum after each step.
func TestPolicy(t *testing.T) {
	rs1, rs2, rs3 := netip.MustParseAddrPort("198.51.100.1:80"), netip.MustParseAddrPort("198.51.100.2:80"), netip.MustParseAddrPort("198.51.100.3:80")
	type step struct {
		name   string
		health map[netip.AddrPort]healthcheck.State
		admin  map[netip.AddrPort]override
		remove bool // on_failure = "remove"
		want   string
		quorum bool
	}
	up, down := healthcheck.StateUp, healthcheck.StateDown
	// Quorum 3, hysteresis 1: lost below 2, regained at 4.
	steps := []step{
		{name: "all up", want: "198.51.100.1:80=1 198.51.100.2:80=2 198.51.100.3:80=3", quorum: true},
		{name: "rs3 down: drained to 0, live 3", health: map[netip.AddrPort]healthcheck.State{rs3: down},
			want: "198.51.100.1:80=1 198.51.100.2:80=2 198.51.100.3:80=0", quorum: true},
		{name: "rs2 down too: live 1 < 2, sorry server takes over, live ones at 0", health: map[netip.AddrPort]healthcheck.State{rs2: down, rs3: down},
			want: "198.51.100.1:80=0 198.51.100.2:80=0 198.51.100.3:80=0 198.51.100.9:8080=1", quorum: false},
		{name: "rs2 back: live 3 < 4, still below (hysteresis)", health: map[netip.AddrPort]healthcheck.State{rs3: down},
			want: "198.51.100.1:80=0 198.51.100.2:80=0 198.51.100.3:80=0 198.51.100.9:8080=1", quorum: false},
		{name: "rs3 back: live 6, quorum regained, sorry gone", want: "198.51.100.1:80=1 198.51.100.2:80=2 198.51.100.3:80=3", quorum: true},
		{name: "drain rs1, set rs2 to 7", admin: map[netip.AddrPort]override{rs1: {Drained: true}, rs2: {Weight: 7, HasWeight: true}},
			want: "198.51.100.1:80=0 198.51.100.2:80=7 198.51.100.3:80=3", quorum: true},
		{name: "remove policy: a failed server leaves the table", remove: true, health: map[netip.AddrPort]healthcheck.State{rs1: down},
			want: "198.51.100.2:80=2 198.51.100.3:80=3", quorum: true},
		{name: "a drained failed server stays at 0 under remove (drain wins)", remove: true, health: map[netip.AddrPort]healthcheck.State{rs1: down},
			admin: map[netip.AddrPort]override{rs1: {Drained: true}}, want: "198.51.100.1:80=0 198.51.100.2:80=2 198.51.100.3:80=3", quorum: true},
	}
	cfg := parse(t, lvsHead+webService)
	now := time.Unix(1000, 0)
	sv, err := newService(&cfg.Services[0], now)
	if err != nil {
		t.Fatal(err)
	}
	sv.initQuorum(nil)
	for _, st := range steps {
		admin := map[adminKey]override{}
		for a, o := range st.admin {
			admin[adminKey{sv.key, a}] = o
		}
		sv.cfg.OnFailure = config.FailDrain
		if st.remove {
			sv.cfg.OnFailure = config.FailRemove
		}
		for _, r := range sv.reals {
			r.health = up
			if h, ok := st.health[r.cfg.Address.AddrPort()]; ok {
				r.health = h
			}
		}
		sv.updateQuorum(admin, now)
		svc, ds := sv.entries(admin)
		if got := dests(ds); got != st.want || sv.quorumUp != st.quorum {
			t.Errorf("%s:\n got %s, quorum up %v\nwant %s, quorum up %v", st.name, got, sv.quorumUp, st.want, st.quorum)
		}
		if svc.Scheduler != "rr" || svc.Addr != netip.MustParseAddrPort("192.0.2.100:80") {
			t.Errorf("%s: service %+v", st.name, svc)
		}
		for _, d := range ds {
			if d.Addr.Port() == 8080 && d.Forwarding != ipvs.NAT {
				t.Errorf("sorry server forwarding %v", d.Forwarding)
			}
		}
	}
}

// fakeHealth is a probe manager whose transitions the test sends.
type fakeHealth struct {
	mu      sync.Mutex
	targets map[healthcheck.TargetID]healthcheck.Spec
	ch      chan healthcheck.Transition
}

func newFakeHealth() *fakeHealth {
	return &fakeHealth{targets: map[healthcheck.TargetID]healthcheck.Spec{}, ch: make(chan healthcheck.Transition)}
}

func (f *fakeHealth) Add(id healthcheck.TargetID, s healthcheck.Spec) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.targets[id]; ok {
		return healthcheck.ErrDuplicateTarget
	}
	f.targets[id] = s
	return nil
}

func (f *fakeHealth) Update(id healthcheck.TargetID, s healthcheck.Spec) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.targets[id]; !ok {
		return healthcheck.ErrUnknownTarget
	}
	f.targets[id] = s
	return nil
}

func (f *fakeHealth) Remove(id healthcheck.TargetID) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.targets[id]; !ok {
		return healthcheck.ErrUnknownTarget
	}
	delete(f.targets, id)
	return nil
}

func (f *fakeHealth) Transitions() <-chan healthcheck.Transition { return f.ch }

func (f *fakeHealth) Status(healthcheck.TargetID) (healthcheck.TargetStatus, bool) {
	return healthcheck.TargetStatus{}, false
}

func (f *fakeHealth) ids() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for id := range f.targets {
		out = append(out, string(id))
	}
	slices.Sort(out)
	return out
}

// lvsRig is an engine over the in-memory kernel with scripted probes.
type lvsRig struct {
	e      *Engine
	k      *ipvstest.Kernel
	h      *fakeHealth
	events chan ServiceEvent
}

func startLVS(t *testing.T, src string, period time.Duration, prep func(*ipvstest.Kernel)) *lvsRig {
	t.Helper()
	r := &lvsRig{k: ipvstest.New(), h: newFakeHealth(), events: make(chan ServiceEvent, 100)}
	if prep != nil {
		prep(r.k)
		r.k.ResetCalls()
	}
	rec, err := ipvs.NewReconciler(r.k)
	if err != nil {
		t.Fatal(err)
	}
	e, err := New(parse(t, src), "lb1", "test", slog.New(slog.NewTextHandler(io.Discard, nil)), Options{
		Health: r.h, IPVS: rec, ReconcilePeriod: period,
		ServiceHooks: func(ev ServiceEvent) { r.events <- ev },
	})
	if err != nil {
		t.Fatal(err)
	}
	r.e = e
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { e.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return r
}

// kernel renders the kernel's table: "service: dests" per service, sorted.
func (r *lvsRig) kernel(t *testing.T) string {
	t.Helper()
	tab, _, err := ipvs.ReadTable(r.k)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, k := range tab.Keys() {
		lines = append(lines, k.String()+": "+dests(tab.Dests(k)))
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// waitKernel waits until the kernel's table renders as want.
func (r *lvsRig) waitKernel(t *testing.T, want string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := r.kernel(t)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("kernel table:\n%s\nwant:\n%s", got, want)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func (r *lvsRig) send(id string, from, to healthcheck.State, detail string) {
	r.h.ch <- healthcheck.Transition{Target: healthcheck.TargetID(id), From: from, To: to, Detail: detail, At: time.Now()}
}

func (r *lvsRig) admin(t *testing.T, op, svc, real string, w int) string {
	t.Helper()
	msg, err := r.e.Admin(context.Background(), control.AdminRequest{Op: op, Service: svc, Real: real, Weight: w})
	if err != nil {
		t.Fatalf("%s %s %s: %v", op, svc, real, err)
	}
	return msg
}

func (r *lvsRig) event(t *testing.T) ServiceEvent {
	t.Helper()
	select {
	case ev := <-r.events:
		return ev
	case <-time.After(5 * time.Second):
		t.Fatal("no service event")
	}
	return ServiceEvent{}
}

func TestEngineProgramsIPVS(t *testing.T) {
	r := startLVS(t, lvsHead+webService, time.Hour, nil)
	const svc = "TCP 192.0.2.100:80: "
	r.waitKernel(t, svc+"198.51.100.1:80=1 198.51.100.2:80=2 198.51.100.3:80=3")
	if got := r.h.ids(); !slices.Equal(got, []string{"tcp/192.0.2.100:80 198.51.100.1:80", "tcp/192.0.2.100:80 198.51.100.2:80", "tcp/192.0.2.100:80 198.51.100.3:80"}) {
		t.Fatalf("probes: %v", got)
	}

	// A failed real server goes to weight 0; the hook hears of it.
	r.send("tcp/192.0.2.100:80 198.51.100.3:80", healthcheck.StateUp, healthcheck.StateDown, "connection refused")
	r.waitKernel(t, svc+"198.51.100.1:80=1 198.51.100.2:80=2 198.51.100.3:80=0")
	if ev := r.event(t); ev.Real != "198.51.100.3:80" || ev.State != "DOWN" || ev.Detail != "connection refused" || ev.Service != "web" {
		t.Errorf("event %+v", ev)
	}
	// Quorum lost: the sorry server takes new connections.
	r.send("tcp/192.0.2.100:80 198.51.100.2:80", healthcheck.StateUp, healthcheck.StateDown, "timeout")
	r.waitKernel(t, svc+"198.51.100.1:80=0 198.51.100.2:80=0 198.51.100.3:80=0 198.51.100.9:8080=1")
	r.event(t) // rs2 down
	if ev := r.event(t); ev.Real != "" || ev.State != "DOWN" || ev.Weight != 1 {
		t.Errorf("quorum event %+v", ev)
	}
	st, err := r.e.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if s := st.Services[0]; s.QuorumUp || !s.SorryActive || s.LiveWeight != 1 || s.RealServers[0].State != "standby" || s.RealServers[2].Health != "down" {
		t.Errorf("status %+v", s)
	}
	// Back above quorum + hysteresis.
	r.send("tcp/192.0.2.100:80 198.51.100.2:80", healthcheck.StateDown, healthcheck.StateUp, "connected")
	r.send("tcp/192.0.2.100:80 198.51.100.3:80", healthcheck.StateDown, healthcheck.StateUp, "connected")
	r.waitKernel(t, svc+"198.51.100.1:80=1 198.51.100.2:80=2 198.51.100.3:80=3")

	// Operator overrides.
	if msg := r.admin(t, AdminDrain, "web", "198.51.100.1", 0); !strings.Contains(msg, "drained") {
		t.Errorf("drain said %q", msg)
	}
	r.admin(t, AdminSetWeight, "tcp/192.0.2.100:80", "198.51.100.2:80", 9)
	r.waitKernel(t, svc+"198.51.100.1:80=0 198.51.100.2:80=9 198.51.100.3:80=3")
	r.admin(t, AdminEnable, "web", "198.51.100.1:80", 0)
	r.waitKernel(t, svc+"198.51.100.1:80=1 198.51.100.2:80=9 198.51.100.3:80=3")
	for _, bad := range []control.AdminRequest{
		{Op: AdminDrain, Service: "nope", Real: "198.51.100.1"},
		{Op: AdminDrain, Service: "web", Real: "198.51.100.7"},
		{Op: AdminDrain, Service: "web", Real: "not-an-address"},
		{Op: AdminSetWeight, Service: "web", Real: "198.51.100.1", Weight: 70000},
		{Op: "reboot", Service: "web", Real: "198.51.100.1"},
	} {
		if _, err := r.e.Admin(context.Background(), bad); err == nil {
			t.Errorf("%+v: accepted", bad)
		}
	}
	r.waitKernel(t, svc+"198.51.100.1:80=1 198.51.100.2:80=9 198.51.100.3:80=3")
}

// TestReloadAppliesOnlyTheDifference: a reload that adds, changes and
// removes other services makes no kernel call on an unchanged one, keeps
// health and overrides, and drops the probes of what left.
func TestReloadAppliesOnlyTheDifference(t *testing.T) {
	other := `
[[virtual_service]]
name = "mail"
address = "192.0.2.100:25"
[[virtual_service.real_server]]
address = "192.0.2.31"
[[virtual_service]]
name = "dns"
address = "192.0.2.100:53"
protocol = "udp"
[virtual_service.check]
type = "tcp"
[[virtual_service.real_server]]
address = "192.0.2.41"
`
	r := startLVS(t, lvsHead+webService+other, time.Hour, nil)
	r.waitKernel(t, "TCP 192.0.2.100:25: 192.0.2.31:25=1\nTCP 192.0.2.100:80: 198.51.100.1:80=1 198.51.100.2:80=2 198.51.100.3:80=3\nUDP 192.0.2.100:53: 192.0.2.41:53=1")
	r.send("tcp/192.0.2.100:80 198.51.100.3:80", healthcheck.StateUp, healthcheck.StateDown, "refused")
	r.admin(t, AdminDrain, "web", "198.51.100.1", 0)
	r.waitKernel(t, "TCP 192.0.2.100:25: 192.0.2.31:25=1\nTCP 192.0.2.100:80: 198.51.100.1:80=0 198.51.100.2:80=2 198.51.100.3:80=0\nUDP 192.0.2.100:53: 192.0.2.41:53=1")
	r.k.ResetCalls()

	// mail changes its scheduler and real server weight, dns leaves, ftp
	// arrives; web is untouched.
	next := strings.Replace(other, `name = "mail"`, "name = \"mail\"\nscheduler = \"rr\"", 1)
	next = strings.Replace(next, `address = "192.0.2.31"`, "address = \"192.0.2.31\"\nweight = 5", 1)
	next = next[:strings.Index(next, "[[virtual_service]]\nname = \"dns\"")] + `
[[virtual_service]]
name = "ftp"
address = "192.0.2.100:21"
[[virtual_service.real_server]]
address = "192.0.2.51"
`
	changes, err := r.e.Reload(context.Background(), parse(t, lvsHead+webService+next))
	if err != nil {
		t.Fatal(err)
	}
	if len(changes) == 0 {
		t.Fatal("no changes")
	}
	r.waitKernel(t, "TCP 192.0.2.100:21: 192.0.2.51:21=1\nTCP 192.0.2.100:25: 192.0.2.31:25=5\nTCP 192.0.2.100:80: 198.51.100.1:80=0 198.51.100.2:80=2 198.51.100.3:80=0")
	for _, c := range r.k.Calls() {
		if c.Write() && c.Service.Key().Addr.Port() == 80 {
			t.Errorf("reload touched the unchanged service: %s %v %v", c.Method, c.Service, c.Dest)
		}
	}
	// Add ftp and its destination, update mail and its destination,
	// delete dns (its destination goes with it).
	if n := r.k.Writes(); n != 5 {
		var calls []string
		for _, c := range r.k.Calls() {
			if c.Write() {
				calls = append(calls, c.Method+" "+c.Service.String()+" "+c.Dest.String())
			}
		}
		t.Errorf("%d kernel writes, want 5:\n%s", n, strings.Join(calls, "\n"))
	}
	if got := r.h.ids(); !slices.Equal(got, []string{"tcp/192.0.2.100:80 198.51.100.1:80", "tcp/192.0.2.100:80 198.51.100.2:80", "tcp/192.0.2.100:80 198.51.100.3:80"}) {
		t.Errorf("probes after reload: %v (dns's should be gone)", got)
	}
	// Health and the drain survived: web's entries are as before, and a
	// transition still applies.
	r.send("tcp/192.0.2.100:80 198.51.100.3:80", healthcheck.StateDown, healthcheck.StateUp, "ok")
	r.waitKernel(t, "TCP 192.0.2.100:21: 192.0.2.51:21=1\nTCP 192.0.2.100:25: 192.0.2.31:25=5\nTCP 192.0.2.100:80: 198.51.100.1:80=0 198.51.100.2:80=2 198.51.100.3:80=3")

	// A reload that removes a drained real server drops its override.
	less := strings.Replace(webService, "[[virtual_service.real_server]]\naddress = \"198.51.100.1:80\"\nweight = 1\n", "", 1)
	less = strings.Replace(less, "quorum = 3\nquorum_hysteresis = 1", "quorum = 2\nquorum_hysteresis = 1", 1)
	if _, err := r.e.Reload(context.Background(), parse(t, lvsHead+less)); err != nil {
		t.Fatal(err)
	}
	r.waitKernel(t, "TCP 192.0.2.100:80: 198.51.100.2:80=2 198.51.100.3:80=3")
	if _, err := r.e.Reload(context.Background(), parse(t, lvsHead+webService)); err != nil {
		t.Fatal(err)
	}
	r.waitKernel(t, "TCP 192.0.2.100:80: 198.51.100.1:80=1 198.51.100.2:80=2 198.51.100.3:80=3")
}

// TestDriftRepairAndAdoption: at start the engine adopts what the kernel
// has (no flush, a foreign service left alone), and puts back an entry
// changed by hand within one period.
func TestDriftRepairAndAdoption(t *testing.T) {
	foreign := ipvs.Service{Protocol: ipvs.TCP, Addr: netip.MustParseAddrPort("192.0.2.200:22"), Scheduler: "rr"}
	web := ipvs.Service{Protocol: ipvs.TCP, Addr: netip.MustParseAddrPort("192.0.2.100:80"), Scheduler: "rr"}
	r := startLVS(t, lvsHead+webService, 50*time.Millisecond, func(k *ipvstest.Kernel) {
		k.AddService(foreign)
		k.AddService(web)
		k.AddDestination(web, ipvs.Destination{Addr: netip.MustParseAddrPort("198.51.100.1:80"), Weight: 1, Forwarding: ipvs.NAT})
	})
	const want = "TCP 192.0.2.100:80: 198.51.100.1:80=1 198.51.100.2:80=2 198.51.100.3:80=3\nTCP 192.0.2.200:22: "
	r.waitKernel(t, want)
	for _, c := range r.k.Calls() {
		if c.Method == "DelService" || c.Method == "AddService" {
			t.Errorf("adoption made %s %v", c.Method, c.Service)
		}
	}
	if err := r.k.DelDestination(web, ipvs.Destination{Addr: netip.MustParseAddrPort("198.51.100.2:80")}); err != nil {
		t.Fatal(err)
	}
	if err := r.k.UpdateDestination(web, ipvs.Destination{Addr: netip.MustParseAddrPort("198.51.100.3:80"), Weight: 100, Forwarding: ipvs.NAT}); err != nil {
		t.Fatal(err)
	}
	r.waitKernel(t, want)
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, err := r.e.Status(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if st.IPVS.Repairs >= 2 {
			if !slices.Equal(st.IPVS.Unowned, []string{"TCP 192.0.2.200:22"}) {
				t.Errorf("unowned %v", st.IPVS.Unowned)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("repairs counted: %d, want 2", st.IPVS.Repairs)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
