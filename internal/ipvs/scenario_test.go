package ipvs_test

import (
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hadirector/hadirector/internal/ipvs"
	"github.com/hadirector/hadirector/internal/ipvs/ipvstest"
)

// The reconciler scenarios run twice with the same expectations: against
// the in-memory fake (TestScenariosFake, on any host) and against the real
// kernel (TestScenariosKernel, in the test VM). Passing both is what shows
// the fake answers like the kernel, so that unit tests built on the fake
// (here and in the engine) mean something.

// step is one step of a scenario: exactly one of hand, apply, restart.
type step struct {
	name string

	// hand is a direct kernel call, what an administrator's ipvsadm does
	// (or the kernel semantics under test); wantErr is its errno (0: none).
	hand    func(k ipvs.KernelAPI) error
	wantErr syscall.Errno

	// apply runs the reconciler's Apply (ApplyChanges if changes) on
	// desired. The outcome must be exactly wantOps (made, in order),
	// wantFailed ("op: ERRNO" or "op: skipped"), wantRepairs, wantUnowned.
	// Afterwards the kernel must hold every desired service that did not
	// fail, exactly as desired.
	apply       func(t testing.TB) ipvs.Table
	changes     bool
	wantOps     []string
	wantFailed  []string
	wantRepairs int
	wantUnowned []string

	// restart replaces the reconciler by a new one, as a daemon restart
	// does; with the state file if stateFile.
	restart   bool
	stateFile bool

	// wantTable, if set, is the whole kernel table afterwards (Table.String).
	wantTable string
}

type scenario struct {
	name  string
	steps []step
}

var (
	svcA = ipvs.Service{Protocol: ipvs.TCP, Addr: netip.MustParseAddrPort("192.0.2.10:80"), Scheduler: "wlc"}
	a1   = ipvs.Destination{Addr: netip.MustParseAddrPort("192.0.2.21:80"), Weight: 1, Forwarding: ipvs.DR}
	a2   = ipvs.Destination{Addr: netip.MustParseAddrPort("192.0.2.22:8080"), Weight: 2, Forwarding: ipvs.NAT, UpperThreshold: 100, LowerThreshold: 10}
	a3   = ipvs.Destination{Addr: netip.MustParseAddrPort("192.0.2.23:80"), Weight: 1, Forwarding: ipvs.DR}
	svcB = ipvs.Service{Protocol: ipvs.UDP, Addr: netip.MustParseAddrPort("[2001:db8::10]:53"), Scheduler: "sh",
		Flags: ipvs.FlagSHFallback | ipvs.FlagSHPort, Persistence: 600 * time.Second, PersistencePrefix: 64}
	// svcB1P: svcB without persistence, with one-packet scheduling.
	svcB1P = mod(svcB, func(s *ipvs.Service) { s.Persistence = 0; s.PersistencePrefix = 0; s.Flags = ipvs.FlagOnePacket })
	b1     = ipvs.Destination{Addr: netip.MustParseAddrPort("[2001:db8::21]:53"), Weight: 1, Forwarding: ipvs.Tunnel}
	svcF   = ipvs.Service{FWMark: 42, Scheduler: "mh", Flags: ipvs.FlagMHPort}
	f1     = ipvs.Destination{Addr: netip.MustParseAddrPort("192.0.2.31:0"), Weight: 5, Forwarding: ipvs.DR}
	svcU   = ipvs.Service{Protocol: ipvs.TCP, Addr: netip.MustParseAddrPort("192.0.2.99:25"), Scheduler: "rr"}
	u1     = ipvs.Destination{Addr: netip.MustParseAddrPort("192.0.2.98:25"), Weight: 1, Forwarding: ipvs.NAT}
	svcX   = ipvs.Service{Protocol: ipvs.TCP, Addr: netip.MustParseAddrPort("192.0.2.40:443"), Scheduler: "nosuchsched"}
	x1     = ipvs.Destination{Addr: netip.MustParseAddrPort("192.0.2.41:443"), Weight: 1, Forwarding: ipvs.NAT}
	x2     = ipvs.Destination{Addr: netip.MustParseAddrPort("192.0.2.42:443"), Weight: 1, Forwarding: ipvs.NAT}
)

type entry struct {
	svc   ipvs.Service
	dests []ipvs.Destination
}

func e(s ipvs.Service, ds ...ipvs.Destination) entry { return entry{s, ds} }

// desired returns a step's table builder.
func desired(entries ...entry) func(testing.TB) ipvs.Table {
	return func(t testing.TB) ipvs.Table {
		t.Helper()
		tb := ipvs.NewTable()
		for _, en := range entries {
			if err := tb.Set(en.svc, en.dests...); err != nil {
				t.Fatal(err)
			}
		}
		return tb
	}
}

func mod[T any](v T, f func(*T)) T { f(&v); return v }

var d1 = desired(e(svcA, a1, a2), e(svcB, b1), e(svcF, f1))

const d1Table = `TCP 192.0.2.10:80 wlc
  -> 192.0.2.21:80 dr weight 1
  -> 192.0.2.22:8080 nat weight 2 thresholds 10..100
UDP [2001:db8::10]:53 sh flags 0x18 persistent 600 /64
  -> [2001:db8::21]:53 tun weight 1
FWM 42 IPv4 mh flags 0x10
  -> 192.0.2.31:0 dr weight 5
`

var d1Ops = []string{
	"add-service TCP 192.0.2.10:80 wlc",
	"add-service UDP [2001:db8::10]:53 sh flags 0x18 persistent 600 /64",
	"add-service FWM 42 IPv4 mh flags 0x10",
	"add-dest TCP 192.0.2.10:80 -> 192.0.2.21:80 (dr, weight 1)",
	"add-dest TCP 192.0.2.10:80 -> 192.0.2.22:8080 (nat, weight 2)",
	"add-dest UDP [2001:db8::10]:53 -> [2001:db8::21]:53 (tun, weight 1)",
	"add-dest FWM 42 IPv4 -> 192.0.2.31:0 (dr, weight 5)",
}

var scenarios = []scenario{
	{
		name: "build, converge, then one change is one op",
		steps: []step{
			{name: "empty to desired", apply: d1, wantOps: d1Ops, wantTable: d1Table},
			{name: "again: nothing to do", apply: d1},
			{
				name:    "one weight",
				apply:   desired(e(svcA, a1, mod(a2, func(d *ipvs.Destination) { d.Weight = 0 })), e(svcB, b1), e(svcF, f1)),
				wantOps: []string{"update-dest TCP 192.0.2.10:80 -> 192.0.2.22:8080 (nat, weight 0)"},
			},
			{
				name:    "one more destination, from the model (no kernel read)",
				changes: true,
				apply:   desired(e(svcA, a1, mod(a2, func(d *ipvs.Destination) { d.Weight = 0 }), a3), e(svcB, b1), e(svcF, f1)),
				wantOps: []string{"add-dest TCP 192.0.2.10:80 -> 192.0.2.23:80 (dr, weight 1)"},
			},
			{
				name: "service fields and forwarding change in place",
				apply: desired(
					e(mod(svcA, func(s *ipvs.Service) {
						s.Scheduler = "sh"
						s.Flags = ipvs.FlagSHPort
						s.Persistence = time.Hour
						s.PersistencePrefix = 24
					}),
						mod(a1, func(d *ipvs.Destination) { d.Forwarding = ipvs.Tunnel }), a2),
					e(svcB1P, b1),
					e(svcF, f1)),
				wantOps: []string{
					"update-service TCP 192.0.2.10:80 sh flags 0x10 persistent 3600 /24",
					"update-service UDP [2001:db8::10]:53 sh flags 0x4",
					"update-dest TCP 192.0.2.10:80 -> 192.0.2.21:80 (tun, weight 1)",
					"update-dest TCP 192.0.2.10:80 -> 192.0.2.22:8080 (nat, weight 2)",
					"del-dest TCP 192.0.2.10:80 -> 192.0.2.23:80",
				},
			},
			{
				name:    "a removed service: one delete",
				apply:   desired(e(svcB1P, b1), e(svcF, f1)),
				wantOps: []string{"del-service TCP 192.0.2.10:80"},
			},
		},
	},
	{
		name: "hand edits are put back and counted as repairs",
		steps: []step{
			{name: "desired", apply: d1, wantOps: d1Ops},
			{name: "ipvsadm -d", hand: func(k ipvs.KernelAPI) error { return k.DelDestination(svcA, a1) }},
			{name: "ipvsadm -e weight", hand: func(k ipvs.KernelAPI) error {
				return k.UpdateDestination(svcA, mod(a2, func(d *ipvs.Destination) { d.Weight = 50 }))
			}},
			{name: "ipvsadm -E scheduler", hand: func(k ipvs.KernelAPI) error {
				return k.UpdateService(mod(svcF, func(s *ipvs.Service) { s.Scheduler = "rr"; s.Flags = 0 }))
			}},
			{name: "ipvsadm -a stray", hand: func(k ipvs.KernelAPI) error { return k.AddDestination(svcA, a3) }},
			{
				name:  "repaired",
				apply: d1,
				wantOps: []string{
					"update-service FWM 42 IPv4 mh flags 0x10",
					"add-dest TCP 192.0.2.10:80 -> 192.0.2.21:80 (dr, weight 1)",
					"update-dest TCP 192.0.2.10:80 -> 192.0.2.22:8080 (nat, weight 2)",
					"del-dest TCP 192.0.2.10:80 -> 192.0.2.23:80",
				},
				wantRepairs: 4,
				wantTable:   d1Table,
			},
			{name: "ipvsadm -D", hand: func(k ipvs.KernelAPI) error { return k.DelService(svcB) }},
			{
				name:  "service and its destination back",
				apply: d1,
				wantOps: []string{
					"add-service UDP [2001:db8::10]:53 sh flags 0x18 persistent 600 /64",
					"add-dest UDP [2001:db8::10]:53 -> [2001:db8::21]:53 (tun, weight 1)",
				},
				wantRepairs: 2,
				wantTable:   d1Table,
			},
			{
				name:    "a config change is no repair, even on a drifted entry",
				hand:    func(k ipvs.KernelAPI) error { return k.DelDestination(svcF, f1) },
				wantErr: 0,
			},
			{
				name:    "new weight for the deleted one",
				apply:   desired(e(svcA, a1, a2), e(svcB, b1), e(svcF, mod(f1, func(d *ipvs.Destination) { d.Weight = 6 }))),
				wantOps: []string{"add-dest FWM 42 IPv4 -> 192.0.2.31:0 (dr, weight 6)"},
			},
		},
	},
	{
		name: "unowned services are left alone",
		steps: []step{
			{name: "someone's service", hand: func(k ipvs.KernelAPI) error { return k.AddService(svcU) }},
			{name: "someone's destination", hand: func(k ipvs.KernelAPI) error { return k.AddDestination(svcU, u1) }},
			{name: "desired around it", apply: d1, wantOps: d1Ops, wantUnowned: []string{"TCP 192.0.2.99:25"}},
			{
				name:        "a service leaves the config: deleted, the unowned one stays",
				apply:       desired(e(svcA, a1, a2), e(svcF, f1)),
				wantOps:     []string{"del-service UDP [2001:db8::10]:53"},
				wantUnowned: []string{"TCP 192.0.2.99:25"},
			},
			{name: "someone re-adds the deleted one", hand: func(k ipvs.KernelAPI) error { return k.AddService(svcB) }},
			{
				name:        "now it is theirs",
				apply:       desired(e(svcA, a1, a2), e(svcF, f1)),
				wantUnowned: []string{"TCP 192.0.2.99:25", "UDP [2001:db8::10]:53"},
			},
			{
				name:        "desiring an existing service adopts it",
				apply:       desired(e(svcA, a1, a2), e(svcF, f1), e(svcU, u1, x1)),
				wantOps:     []string{"add-dest TCP 192.0.2.99:25 -> 192.0.2.41:443 (nat, weight 1)"},
				wantUnowned: []string{"UDP [2001:db8::10]:53"},
				wantTable: `TCP 192.0.2.10:80 wlc
  -> 192.0.2.21:80 dr weight 1
  -> 192.0.2.22:8080 nat weight 2 thresholds 10..100
TCP 192.0.2.99:25 rr
  -> 192.0.2.41:443 nat weight 1
  -> 192.0.2.98:25 nat weight 1
UDP [2001:db8::10]:53 sh flags 0x18 persistent 600 /64
FWM 42 IPv4 mh flags 0x10
  -> 192.0.2.31:0 dr weight 5
`,
			},
		},
	},
	{
		name: "a kernel error on one entry does not stop the others",
		steps: []step{
			{
				name:  "unknown scheduler on one service",
				apply: desired(e(svcA, a1), e(svcX, x1, x2)),
				wantOps: []string{
					"add-service TCP 192.0.2.10:80 wlc",
					"add-service TCP 192.0.2.40:443 nosuchsched",
					"add-dest TCP 192.0.2.10:80 -> 192.0.2.21:80 (dr, weight 1)",
				},
				wantFailed: []string{
					"add-service TCP 192.0.2.40:443 nosuchsched: ENOENT",
					"add-dest TCP 192.0.2.40:443 -> 192.0.2.41:443 (nat, weight 1): skipped",
					"add-dest TCP 192.0.2.40:443 -> 192.0.2.42:443 (nat, weight 1): skipped",
				},
			},
			{
				name:       "retried next time, no repair",
				apply:      desired(e(svcA, a1), e(svcX, x1, x2)),
				wantOps:    []string{"add-service TCP 192.0.2.40:443 nosuchsched"},
				wantFailed: []string{"add-service TCP 192.0.2.40:443 nosuchsched: ENOENT", "add-dest TCP 192.0.2.40:443 -> 192.0.2.41:443 (nat, weight 1): skipped", "add-dest TCP 192.0.2.40:443 -> 192.0.2.42:443 (nat, weight 1): skipped"},
			},
			{
				name:  "fixed",
				apply: desired(e(svcA, a1), e(mod(svcX, func(s *ipvs.Service) { s.Scheduler = "lc" }), x1, x2)),
				wantOps: []string{
					"add-service TCP 192.0.2.40:443 lc",
					"add-dest TCP 192.0.2.40:443 -> 192.0.2.41:443 (nat, weight 1)",
					"add-dest TCP 192.0.2.40:443 -> 192.0.2.42:443 (nat, weight 1)",
				},
			},
			{
				name:  "a failed update does not stop its service's destinations",
				apply: desired(e(mod(svcA, func(s *ipvs.Service) { s.Scheduler = "nosuchsched" }), a1, a3), e(mod(svcX, func(s *ipvs.Service) { s.Scheduler = "lc" }), x1)),
				wantOps: []string{
					"update-service TCP 192.0.2.10:80 nosuchsched",
					"add-dest TCP 192.0.2.10:80 -> 192.0.2.23:80 (dr, weight 1)",
					"del-dest TCP 192.0.2.40:443 -> 192.0.2.42:443",
				},
				wantFailed: []string{"update-service TCP 192.0.2.10:80 nosuchsched: ENOENT"},
			},
		},
	},
	{
		name: "a restart adopts; only the state file makes removed services owned",
		steps: []step{
			{name: "first run", apply: d1, wantOps: d1Ops},
			{name: "restart without state", restart: true},
			{
				name:        "a service removed while down stays (unowned)",
				apply:       desired(e(svcA, a1, a2), e(svcF, f1)),
				wantUnowned: []string{"UDP [2001:db8::10]:53"},
			},
			{name: "desired again", apply: d1},
			{name: "restart with state", restart: true, stateFile: true},
			{name: "run with state", apply: d1},
			{name: "restart with state again", restart: true, stateFile: true},
			{
				name:    "the removed service is deleted",
				apply:   desired(e(svcA, a1, a2), e(svcF, f1)),
				wantOps: []string{"del-service UDP [2001:db8::10]:53"},
			},
		},
	},
	{
		name: "the kernel's answers",
		steps: []step{
			{name: "delete a missing service", hand: func(k ipvs.KernelAPI) error { return k.DelService(svcA) }, wantErr: syscall.ESRCH},
			{name: "update a missing service", hand: func(k ipvs.KernelAPI) error { return k.UpdateService(svcA) }, wantErr: syscall.ESRCH},
			{name: "add a destination to a missing service", hand: func(k ipvs.KernelAPI) error { return k.AddDestination(svcA, a1) }, wantErr: syscall.ESRCH},
			{name: "update a destination of a missing service", hand: func(k ipvs.KernelAPI) error { return k.UpdateDestination(svcA, a1) }, wantErr: syscall.ESRCH},
			{name: "delete a destination of a missing service", hand: func(k ipvs.KernelAPI) error { return k.DelDestination(svcA, a1) }, wantErr: syscall.ESRCH},
			{name: "list a missing service's destinations", hand: wantDests(svcA)},
			{name: "add with an unknown scheduler", hand: func(k ipvs.KernelAPI) error { return k.AddService(svcX) }, wantErr: syscall.ENOENT},
			{name: "add", hand: func(k ipvs.KernelAPI) error { return k.AddService(svcA) }},
			{name: "add again", hand: func(k ipvs.KernelAPI) error { return k.AddService(svcA) }, wantErr: syscall.EEXIST},
			{name: "add again, unknown scheduler: EEXIST first", hand: func(k ipvs.KernelAPI) error {
				return k.AddService(mod(svcA, func(s *ipvs.Service) { s.Scheduler = "nosuchsched" }))
			}, wantErr: syscall.EEXIST},
			{name: "update to an unknown scheduler", hand: func(k ipvs.KernelAPI) error {
				return k.UpdateService(mod(svcA, func(s *ipvs.Service) { s.Scheduler = "nosuchsched" }))
			}, wantErr: syscall.ENOENT},
			{name: "lower threshold above upper", hand: func(k ipvs.KernelAPI) error {
				return k.AddDestination(svcA, mod(a1, func(d *ipvs.Destination) { d.UpperThreshold, d.LowerThreshold = 5, 6 }))
			}, wantErr: syscall.ERANGE},
			{name: "lower threshold without upper", hand: func(k ipvs.KernelAPI) error {
				return k.AddDestination(svcA, mod(a1, func(d *ipvs.Destination) { d.LowerThreshold = 1 }))
			}, wantErr: syscall.ERANGE},
			{name: "update a missing destination", hand: func(k ipvs.KernelAPI) error { return k.UpdateDestination(svcA, a1) }, wantErr: syscall.ENOENT},
			{name: "delete a missing destination", hand: func(k ipvs.KernelAPI) error { return k.DelDestination(svcA, a1) }, wantErr: syscall.ENOENT},
			{name: "add a destination", hand: func(k ipvs.KernelAPI) error { return k.AddDestination(svcA, a1) }},
			{name: "add it again", hand: func(k ipvs.KernelAPI) error { return k.AddDestination(svcA, a1) }, wantErr: syscall.EEXIST},
			{name: "add it again with a bad threshold: ERANGE first", hand: func(k ipvs.KernelAPI) error {
				return k.AddDestination(svcA, mod(a1, func(d *ipvs.Destination) { d.LowerThreshold = 1 }))
			}, wantErr: syscall.ERANGE},
			{name: "update it with a bad threshold", hand: func(k ipvs.KernelAPI) error {
				return k.UpdateDestination(svcA, mod(a1, func(d *ipvs.Destination) { d.LowerThreshold = 1 }))
			}, wantErr: syscall.ERANGE},
			{name: "change its forwarding in place", hand: func(k ipvs.KernelAPI) error {
				return k.UpdateDestination(svcA, mod(a1, func(d *ipvs.Destination) { d.Forwarding = ipvs.NAT; d.Weight = 9 }))
			}},
			{name: "read back", hand: wantDests(svcA, mod(a1, func(d *ipvs.Destination) { d.Forwarding = ipvs.NAT; d.Weight = 9 }))},
			{name: "delete the service", hand: func(k ipvs.KernelAPI) error { return k.DelService(svcA) }},
			{name: "add it afresh", hand: func(k ipvs.KernelAPI) error { return k.AddService(svcA) }},
			{name: "its destinations went with it", hand: wantDests(svcA), wantTable: "TCP 192.0.2.10:80 wlc\n"},
		},
	},
}

func wantDests(s ipvs.Service, want ...ipvs.Destination) func(ipvs.KernelAPI) error {
	return func(k ipvs.KernelAPI) error {
		got, err := k.Destinations(s)
		if err != nil {
			return err
		}
		slices.SortFunc(got, func(a, b ipvs.Destination) int { return a.Addr.Compare(b.Addr) })
		if !slices.Equal(got, want) {
			return fmt.Errorf("Destinations(%s) = %v, want %v", s, got, want)
		}
		return nil
	}
}

// counting counts the write calls that reach a kernel.
type counting struct {
	ipvs.KernelAPI
	writes atomic.Int64
}

func (c *counting) AddService(s ipvs.Service) error {
	c.writes.Add(1)
	return c.KernelAPI.AddService(s)
}

func (c *counting) UpdateService(s ipvs.Service) error {
	c.writes.Add(1)
	return c.KernelAPI.UpdateService(s)
}

func (c *counting) DelService(s ipvs.Service) error {
	c.writes.Add(1)
	return c.KernelAPI.DelService(s)
}

func (c *counting) AddDestination(s ipvs.Service, d ipvs.Destination) error {
	c.writes.Add(1)
	return c.KernelAPI.AddDestination(s, d)
}

func (c *counting) UpdateDestination(s ipvs.Service, d ipvs.Destination) error {
	c.writes.Add(1)
	return c.KernelAPI.UpdateDestination(s, d)
}

func (c *counting) DelDestination(s ipvs.Service, d ipvs.Destination) error {
	c.writes.Add(1)
	return c.KernelAPI.DelDestination(s, d)
}

func failedStrings(fs []ipvs.OpError) []string {
	var out []string
	for _, f := range fs {
		out = append(out, f.Op.String()+": "+errName(f.Err))
	}
	return out
}

func errName(err error) string {
	var errno syscall.Errno
	switch {
	case err == nil:
		return "nil"
	case errors.Is(err, ipvs.ErrSkipped):
		return "skipped"
	case errors.As(err, &errno):
		return unix.ErrnoName(errno)
	}
	return err.Error()
}

func keyStrings(ks []ipvs.ServiceKey) []string {
	var out []string
	for _, k := range ks {
		out = append(out, k.String())
	}
	return out
}

func opStrings(ops []ipvs.Op) []string {
	var out []string
	for _, op := range ops {
		out = append(out, op.String())
	}
	return out
}

func readTable(t testing.TB, k ipvs.KernelAPI) ipvs.Table {
	t.Helper()
	tb, unreadable, err := ipvs.ReadTable(k)
	if err != nil || len(unreadable) != 0 {
		t.Fatalf("ReadTable: %v %v", err, unreadable)
	}
	return tb
}

// runScenarios runs every scenario on a fresh, empty table from newKernel.
func runScenarios(t *testing.T, newKernel func(t *testing.T) ipvs.KernelAPI) {
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			k := &counting{KernelAPI: newKernel(t)}
			state := filepath.Join(t.TempDir(), "ipvs-owned.json")
			newRec := func(withState bool) *ipvs.Reconciler {
				var opts []ipvs.ReconcilerOption
				if withState {
					opts = append(opts, ipvs.WithStateFile(state))
				}
				r, err := ipvs.NewReconciler(k, opts...)
				if err != nil {
					t.Fatal(err)
				}
				return r
			}
			r := newRec(false)
			for i, st := range sc.steps {
				where := fmt.Sprintf("step %d %q", i, st.name)
				switch {
				case st.hand != nil:
					err := st.hand(k.KernelAPI)
					if st.wantErr == 0 && err != nil || st.wantErr != 0 && !errors.Is(err, st.wantErr) {
						t.Fatalf("%s: %v, want %s", where, err, errName(st.wantErr))
					}
				case st.restart:
					r = newRec(st.stateFile)
				case st.apply != nil:
					want := st.apply(t)
					before := k.writes.Load()
					var res ipvs.Result
					if st.changes {
						res = r.ApplyChanges(want)
					} else {
						res = r.Apply(want)
					}
					if res.Err != nil {
						t.Fatalf("%s: %v", where, res.Err)
					}
					if got := opStrings(res.Ops); !slices.Equal(got, st.wantOps) {
						t.Errorf("%s: ops\n  %s\nwant\n  %s", where, strings.Join(got, "\n  "), strings.Join(st.wantOps, "\n  "))
					}
					if n := k.writes.Load() - before; n != int64(len(res.Ops)) {
						t.Errorf("%s: %d kernel writes, the result lists %d", where, n, len(res.Ops))
					}
					if got := failedStrings(res.Failed); !slices.Equal(got, st.wantFailed) {
						t.Errorf("%s: failed\n  %s\nwant\n  %s", where, strings.Join(got, "\n  "), strings.Join(st.wantFailed, "\n  "))
					}
					if len(res.Repaired) != st.wantRepairs {
						t.Errorf("%s: %d repairs (%v), want %d", where, len(res.Repaired), opStrings(res.Repaired), st.wantRepairs)
					}
					if got := keyStrings(res.Unowned); !slices.Equal(got, st.wantUnowned) {
						t.Errorf("%s: unowned %q, want %q", where, got, st.wantUnowned)
					}
					// The kernel holds every desired service whose
					// operations all succeeded, exactly as desired.
					failed := map[ipvs.ServiceKey]bool{}
					for _, f := range res.Failed {
						failed[f.Op.Key()] = true
					}
					kt := readTable(t, k)
					for _, key := range want.Keys() {
						if failed[key] {
							continue
						}
						ws, _ := want.Service(key)
						ks, ok := kt.Service(key)
						if !ok || ks != ws || !slices.Equal(kt.Dests(key), want.Dests(key)) {
							t.Errorf("%s: kernel has %v %v %v, want %v %v", where, ks, ok, kt.Dests(key), ws, want.Dests(key))
						}
					}
				}
				if st.wantTable != "" {
					if got := readTable(t, k).String(); got != st.wantTable {
						t.Errorf("%s: kernel table\n%s\nwant\n%s", where, got, st.wantTable)
					}
				}
				if t.Failed() {
					t.FailNow()
				}
			}
		})
	}
}

func TestScenariosFake(t *testing.T) {
	runScenarios(t, func(*testing.T) ipvs.KernelAPI { return ipvstest.New() })
}

// TestScenariosKernel runs the same scenarios on the real kernel (VM).
func TestScenariosKernel(t *testing.T) {
	ipvs.NeedIPVS(t)
	runScenarios(t, func(t *testing.T) ipvs.KernelAPI {
		k, _ := ipvs.OpenPrivate(t)
		return k
	})
}
