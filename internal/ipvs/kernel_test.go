package ipvs

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hadirector/hadirector/internal/ipvs/kerneltest"
)

// Tests against the real kernel IPVS table. The dev/CI hosts have no IPVS, so
// these run in the test VM:
//
//	CGO_ENABLED=0 go test -exec "$PWD/integration/vm/go-exec.sh" -v ./internal/ipvs/
//
// Addresses are documentation ranges (192.0.2.0/24, 2001:db8::/32); no packet
// is sent, they only live in the table.

// needIPVS runs the test if the kernel has IPVS, fails it inside the VM
// and skips it elsewhere.
func needIPVS(t *testing.T) {
	t.Helper()
	kerneltest.NeedIPVS(t, Preflight, kerneltest.GoExec("./internal/ipvs/"))
}

// newNetns is a fresh network namespace for one test: its own IPVS table,
// sysctls and sync daemons.
func newNetns(t *testing.T) string {
	t.Helper()
	return kerneltest.NewNetns(t, "hdtest")
}

func openIn(t *testing.T, nsPath string) *Kernel {
	t.Helper()
	k, err := Open(nsPath)
	if err != nil {
		t.Fatalf("Open(%q): %v", nsPath, err)
	}
	t.Cleanup(func() { k.Close() })
	return k
}

// openPrivate opens the IPVS table of a fresh namespace and checks it is empty.
func openPrivate(t *testing.T) *Kernel {
	t.Helper()
	needIPVS(t)
	k := openIn(t, newNetns(t))
	svcs, err := k.Services()
	if err != nil {
		t.Fatalf("Services: %v", err)
	}
	if len(svcs) != 0 {
		t.Fatalf("fresh namespace has services: %v", svcs)
	}
	return k
}

func sortDests(ds []Destination) {
	slices.SortFunc(ds, func(a, b Destination) int { return a.Addr.Compare(b.Addr) })
}

func TestServiceWithDestinationRoundTrip(t *testing.T) {
	needIPVS(t)
	tests := []struct {
		name  string
		svc   Service // as added; Family explicit so it compares with the read-back
		dests []Destination
	}{
		{
			name: "tcp4 wlc, DR and NAT",
			svc:  Service{Family: IPv4, Protocol: TCP, Addr: netip.MustParseAddrPort("192.0.2.10:80"), Scheduler: "wlc"},
			dests: []Destination{
				{Addr: netip.MustParseAddrPort("192.0.2.21:80"), Weight: 3, Forwarding: DR},
				{Addr: netip.MustParseAddrPort("192.0.2.22:8080"), Weight: 1, Forwarding: NAT, UpperThreshold: 100, LowerThreshold: 10},
			},
		},
		{
			name: "udp6 persistent sh, tunnel and quiesced NAT",
			svc: Service{Family: IPv6, Protocol: UDP, Addr: netip.MustParseAddrPort("[2001:db8::10]:53"), Scheduler: "sh",
				Persistence: 600 * time.Second, Flags: FlagOnePacket | FlagSched1 | FlagSched2},
			dests: []Destination{
				{Addr: netip.MustParseAddrPort("[2001:db8::21]:53"), Weight: 65535, Forwarding: Tunnel},
				{Addr: netip.MustParseAddrPort("[2001:db8::22]:5353"), Weight: 0, Forwarding: NAT},
			},
		},
		{
			name:  "fwmark4 rr",
			svc:   Service{Family: IPv4, FWMark: 42, Scheduler: "rr"},
			dests: []Destination{{Addr: netip.MustParseAddrPort("192.0.2.31:0"), Weight: 5, Forwarding: DR}},
		},
		{
			name:  "fwmark6 persistent mh",
			svc:   Service{Family: IPv6, FWMark: 0xffffffff, Scheduler: "mh", Persistence: time.Second},
			dests: []Destination{{Addr: netip.MustParseAddrPort("[2001:db8::31]:0"), Weight: 2, Forwarding: DR}},
		},
		{
			name:  "sctp4 all ports persistent",
			svc:   Service{Family: IPv4, Protocol: SCTP, Addr: netip.MustParseAddrPort("192.0.2.40:0"), Scheduler: "lc", Persistence: time.Hour},
			dests: []Destination{{Addr: netip.MustParseAddrPort("192.0.2.41:0"), Weight: 1, Forwarding: DR}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := openPrivate(t)
			if err := k.AddService(tt.svc); err != nil {
				t.Fatal(err)
			}
			for _, d := range tt.dests {
				if err := k.AddDestination(tt.svc, d); err != nil {
					t.Fatal(err)
				}
			}

			svcs, err := k.Services()
			if err != nil {
				t.Fatal(err)
			}
			if len(svcs) != 1 || svcs[0] != tt.svc {
				t.Fatalf("Services() = %+v\nwant [%+v]", svcs, tt.svc)
			}
			got, err := k.Destinations(tt.svc)
			if err != nil {
				t.Fatal(err)
			}
			want := slices.Clone(tt.dests)
			sortDests(got)
			sortDests(want)
			if !slices.Equal(got, want) {
				t.Fatalf("Destinations() = %+v\nwant %+v", got, want)
			}

			// Same service or destination again: EEXIST.
			if err := k.AddService(tt.svc); !errors.Is(err, syscall.EEXIST) {
				t.Fatalf("second AddService = %v, want EEXIST", err)
			}
			if err := k.AddDestination(tt.svc, tt.dests[0]); !errors.Is(err, syscall.EEXIST) {
				t.Fatalf("second AddDestination = %v, want EEXIST", err)
			}

			// Remove one destination, then the service.
			if err := k.DelDestination(tt.svc, tt.dests[0]); err != nil {
				t.Fatal(err)
			}
			if got, err := k.Destinations(tt.svc); err != nil || len(got) != len(tt.dests)-1 {
				t.Fatalf("after DelDestination: Destinations() = %+v, %v", got, err)
			}
			if err := k.DelService(tt.svc); err != nil {
				t.Fatal(err)
			}
			if svcs, err := k.Services(); err != nil || len(svcs) != 0 {
				t.Fatalf("after DelService: Services() = %+v, %v", svcs, err)
			}
			if got, err := k.Destinations(tt.svc); err != nil || len(got) != 0 {
				t.Fatalf("after DelService: Destinations() = %+v, %v", got, err)
			}
		})
	}
}

func TestKernelErrors(t *testing.T) {
	k := openPrivate(t)
	svc := Service{Protocol: TCP, Addr: netip.MustParseAddrPort("192.0.2.50:443"), Scheduler: "rr"}
	dst := Destination{Addr: netip.MustParseAddrPort("192.0.2.51:443"), Weight: 1, Forwarding: NAT}

	wantErrno := func(what string, err error, errno syscall.Errno) {
		t.Helper()
		if !errors.Is(err, errno) {
			t.Fatalf("%s = %v, want %v (%d)", what, err, errno, int(errno))
		}
		if !strings.Contains(err.Error(), svc.String()) {
			t.Errorf("%s: error %q does not name the service", what, err)
		}
	}
	wantErrno("DelService of a missing service", k.DelService(svc), syscall.ESRCH)
	wantErrno("AddDestination to a missing service", k.AddDestination(svc, dst), syscall.ESRCH)
	bad := svc
	bad.Scheduler = "nosuchsched"
	if err := k.AddService(bad); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("AddService with unknown scheduler = %v, want ENOENT", err)
	}
	if err := k.AddService(svc); err != nil {
		t.Fatal(err)
	}
	wantErrno("AddService twice", k.AddService(svc), syscall.EEXIST)
	wantErrno("DelDestination of a missing destination", k.DelDestination(svc, dst), syscall.ENOENT)
}

// Open(path) must address that namespace's table, not the caller's.
func TestNetnsIsolation(t *testing.T) {
	a := openPrivate(t)
	b := openPrivate(t)
	root := openIn(t, "")
	svc := Service{Family: IPv4, Protocol: TCP, Addr: netip.MustParseAddrPort("192.0.2.60:80"), Scheduler: "rr"}
	if err := a.AddService(svc); err != nil {
		t.Fatal(err)
	}
	for name, k := range map[string]*Kernel{"b": b, "initial": root} {
		svcs, err := k.Services()
		if err != nil {
			t.Fatal(err)
		}
		if slices.Contains(svcs, svc) {
			t.Fatalf("service added in namespace a is visible in namespace %s", name)
		}
	}
	// The same key in b is independent: no EEXIST.
	if err := b.AddService(svc); err != nil {
		t.Fatalf("AddService of the same key in another namespace: %v", err)
	}
}

// Concurrent callers share one Kernel: without serialisation moby/ipvs would
// hand replies to the wrong caller and calls would hang or fail.
func TestConcurrentCalls(t *testing.T) {
	k := openPrivate(t)
	const n = 32
	var wg sync.WaitGroup
	errs := make(chan error, 2*n)
	for i := range n {
		wg.Go(func() {
			svc := Service{Protocol: TCP, Addr: netip.AddrPortFrom(netip.MustParseAddr("192.0.2.70"), uint16(1000+i)), Scheduler: "wrr"}
			errs <- k.AddService(svc)
			_, err := k.Services()
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	svcs, err := k.Services()
	if err != nil || len(svcs) != n {
		t.Fatalf("Services() = %d services, %v; want %d", len(svcs), err, n)
	}
}
