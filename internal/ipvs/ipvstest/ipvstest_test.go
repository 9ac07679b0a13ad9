package ipvstest

import (
	"errors"
	"net/netip"
	"syscall"
	"testing"

	"github.com/hadirector/hadirector/internal/ipvs"
)

// The fake's kernel semantics are tested against the real kernel by the
// scenarios in package ipvs; this covers the test hooks.

func TestHooks(t *testing.T) {
	k := New()
	s := ipvs.Service{Protocol: ipvs.TCP, Addr: netip.MustParseAddrPort("192.0.2.1:80"), Scheduler: "rr"}
	d := ipvs.Destination{Addr: netip.MustParseAddrPort("192.0.2.2:80"), Weight: 1, Forwarding: ipvs.DR}
	if err := k.AddService(s); err != nil {
		t.Fatal(err)
	}
	injected := errors.New("injected")
	k.Fail(func(c Call) error {
		if c.Method == "AddDestination" && c.Dest.Addr == d.Addr {
			return injected
		}
		return nil
	})
	if err := k.AddDestination(s, d); !errors.Is(err, injected) {
		t.Fatalf("AddDestination = %v, want the injected error", err)
	}
	if ds, err := k.Destinations(s); err != nil || len(ds) != 0 {
		t.Fatalf("an injected failure changed the table: %v %v", ds, err)
	}
	k.Fail(nil)
	if err := k.AddDestination(s, d); err != nil {
		t.Fatal(err)
	}
	if n := k.Writes(); n != 3 {
		t.Fatalf("Writes = %d, want 3", n)
	}
	if calls := k.Calls(); len(calls) != 4 || calls[2].Method != "Destinations" || calls[2].Write() {
		t.Fatalf("Calls = %+v", calls)
	}
	k.ResetCalls()
	if len(k.Calls()) != 0 {
		t.Fatal("ResetCalls kept calls")
	}
	// Invalid arguments are refused like ipvs.Kernel refuses them.
	if err := k.AddService(ipvs.Service{Protocol: ipvs.TCP, Addr: s.Addr}); !errors.Is(err, ipvs.ErrInvalid) {
		t.Fatalf("AddService without scheduler = %v", err)
	}
	if err := k.DelService(s); err != nil {
		t.Fatal(err)
	}
	if err := k.DelDestination(s, d); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("DelDestination after DelService = %v, want ESRCH", err)
	}
}
