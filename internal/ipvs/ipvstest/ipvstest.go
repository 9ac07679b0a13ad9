// Package ipvstest is an in-memory IPVS table with the kernel's semantics,
// for unit tests of code that programs IPVS through [ipvs.KernelAPI]
// (the reconciler, the engine) on hosts without IPVS.
//
// It answers like the kernel (net/netfilter/ipvs/ip_vs_ctl.c, reached
// through [ipvs.Kernel]):
//
//   - adding a service that exists: EEXIST; an unknown scheduler: ENOENT
//     (checked after EEXIST, as ip_vs_genl_set_cmd does);
//   - any call about a missing service: ESRCH, except listing its
//     destinations, which gives an empty list;
//   - adding a destination that exists: EEXIST; updating or deleting a
//     missing one: ENOENT; a lower threshold above the upper one: ERANGE
//     (before the existence check);
//   - deleting a service deletes its destinations;
//   - what [ipvs.Kernel] refuses before calling the kernel (an invalid
//     service or destination) is refused the same way, wrapping
//     [ipvs.ErrInvalid];
//   - reads return what was written, normalised as the kernel reports it.
//
// That these are the kernel's answers is tested: the reconciler scenarios
// in package ipvs run against this fake on the host and against the real
// kernel in the test VM, with the same expected results.
package ipvstest

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"syscall"

	"github.com/hadirector/hadirector/internal/ipvs"
)

// Schedulers are the scheduler names the fake knows: those of Debian 12's
// kernel (ip_vs_<name>.ko).
var Schedulers = []string{"rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh"}

// Call is one call to the fake, as seen by [Kernel.Fail].
type Call struct {
	// Method is the KernelAPI method name: "AddService", "Services", ...
	Method string
	// Service is the service argument (zero for Services).
	Service ipvs.Service
	// Dest is the destination argument of destination writes.
	Dest ipvs.Destination
}

// Write reports whether c changes the table.
func (c Call) Write() bool { return c.Method != "Services" && c.Method != "Destinations" }

// Kernel is an in-memory IPVS table. It is safe for concurrent use.
type Kernel struct {
	mu     sync.Mutex
	svcs   map[ipvs.ServiceKey]*entry
	scheds map[string]bool
	fail   func(Call) error
	calls  []Call
}

type entry struct {
	svc   ipvs.Service
	dests map[netip.AddrPort]ipvs.Destination
}

var _ ipvs.KernelAPI = (*Kernel)(nil)

// New returns an empty table.
func New() *Kernel {
	k := &Kernel{svcs: make(map[ipvs.ServiceKey]*entry), scheds: make(map[string]bool)}
	for _, s := range Schedulers {
		k.scheds[s] = true
	}
	return k
}

// Fail makes every later call first ask f: a non-nil error is returned
// instead of doing the call (inject kernel errors, timeouts). nil stops it.
func (k *Kernel) Fail(f func(Call) error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.fail = f
}

// Calls returns the calls made so far (failed and injected ones included).
func (k *Kernel) Calls() []Call {
	k.mu.Lock()
	defer k.mu.Unlock()
	return slices.Clone(k.calls)
}

// Writes is the number of calls that change the table (made so far,
// failed ones included).
func (k *Kernel) Writes() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	n := 0
	for _, c := range k.calls {
		if c.Write() {
			n++
		}
	}
	return n
}

// ResetCalls forgets the calls made so far.
func (k *Kernel) ResetCalls() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.calls = nil
}

// begin records a call and runs the failure hook. Called with k.mu held.
func (k *Kernel) begin(c Call) error {
	k.calls = append(k.calls, c)
	if k.fail != nil {
		return k.fail(c)
	}
	return nil
}

// Services lists the services, sorted by key.
func (k *Kernel) Services() ([]ipvs.Service, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.begin(Call{Method: "Services"}); err != nil {
		return nil, fmt.Errorf("ipvs: list services: %w", err)
	}
	out := make([]ipvs.Service, 0, len(k.svcs))
	for _, key := range slices.SortedFunc(maps.Keys(k.svcs), ipvs.ServiceKey.Compare) {
		out = append(out, k.svcs[key].svc)
	}
	return out, nil
}

// Destinations lists the destinations of s, sorted by address; none for a
// missing service (as the kernel).
func (k *Kernel) Destinations(s ipvs.Service) ([]ipvs.Destination, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	err := k.begin(Call{Method: "Destinations", Service: s})
	if err == nil {
		err = s.Key().Validate()
	}
	if err != nil {
		return nil, fmt.Errorf("ipvs: list destinations of %s: %w", s, err)
	}
	e := k.svcs[s.Key()]
	if e == nil {
		return []ipvs.Destination{}, nil
	}
	ds := slices.Collect(maps.Values(e.dests))
	slices.SortFunc(ds, func(a, b ipvs.Destination) int { return a.Addr.Compare(b.Addr) })
	return ds, nil
}

// AddService creates s.
func (k *Kernel) AddService(s ipvs.Service) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.addService(s); err != nil {
		return fmt.Errorf("ipvs: add service %s: %w", s, err)
	}
	return nil
}

func (k *Kernel) addService(s ipvs.Service) error {
	if err := k.begin(Call{Method: "AddService", Service: s}); err != nil {
		return err
	}
	if err := s.Validate(); err != nil {
		return err
	}
	key := s.Key()
	if k.svcs[key] != nil {
		return syscall.EEXIST
	}
	if !k.scheds[s.Scheduler] {
		return syscall.ENOENT
	}
	k.svcs[key] = &entry{svc: s.Normalize(), dests: make(map[netip.AddrPort]ipvs.Destination)}
	return nil
}

// UpdateService changes s in place.
func (k *Kernel) UpdateService(s ipvs.Service) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.updateService(s); err != nil {
		return fmt.Errorf("ipvs: update service %s: %w", s, err)
	}
	return nil
}

func (k *Kernel) updateService(s ipvs.Service) error {
	if err := k.begin(Call{Method: "UpdateService", Service: s}); err != nil {
		return err
	}
	if err := s.Validate(); err != nil {
		return err
	}
	e := k.svcs[s.Key()]
	if e == nil {
		return syscall.ESRCH
	}
	if !k.scheds[s.Scheduler] {
		return syscall.ENOENT
	}
	e.svc = s.Normalize()
	return nil
}

// DelService deletes s and its destinations.
func (k *Kernel) DelService(s ipvs.Service) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.delService(s); err != nil {
		return fmt.Errorf("ipvs: delete service %s: %w", s, err)
	}
	return nil
}

func (k *Kernel) delService(s ipvs.Service) error {
	if err := k.begin(Call{Method: "DelService", Service: s}); err != nil {
		return err
	}
	if err := s.Key().Validate(); err != nil {
		return err
	}
	if k.svcs[s.Key()] == nil {
		return syscall.ESRCH
	}
	delete(k.svcs, s.Key())
	return nil
}

// destCall runs the checks common to destination writes and returns the
// service entry and the normalised destination.
func (k *Kernel) destCall(method string, s ipvs.Service, d ipvs.Destination, full bool) (*entry, ipvs.Destination, error) {
	if err := k.begin(Call{Method: method, Service: s, Dest: d}); err != nil {
		return nil, d, err
	}
	key := s.Key()
	if err := key.Validate(); err != nil {
		return nil, d, err
	}
	if err := d.Validate(key.Family); err != nil {
		return nil, d, err
	}
	d.Addr = netip.AddrPortFrom(d.Addr.Addr().Unmap(), d.Addr.Port())
	e := k.svcs[key]
	if e == nil {
		return nil, d, syscall.ESRCH
	}
	if full && d.LowerThreshold > d.UpperThreshold {
		return nil, d, syscall.ERANGE
	}
	return e, d, nil
}

// AddDestination adds d to service s.
func (k *Kernel) AddDestination(s ipvs.Service, d ipvs.Destination) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	e, d, err := k.destCall("AddDestination", s, d, true)
	if err == nil {
		if _, ok := e.dests[d.Addr]; ok {
			err = syscall.EEXIST
		} else {
			e.dests[d.Addr] = d
		}
	}
	if err != nil {
		return fmt.Errorf("ipvs: add destination %s to %s: %w", d, s, err)
	}
	return nil
}

// UpdateDestination changes d of service s in place.
func (k *Kernel) UpdateDestination(s ipvs.Service, d ipvs.Destination) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	e, d, err := k.destCall("UpdateDestination", s, d, true)
	if err == nil {
		if _, ok := e.dests[d.Addr]; !ok {
			err = syscall.ENOENT
		} else {
			e.dests[d.Addr] = d
		}
	}
	if err != nil {
		return fmt.Errorf("ipvs: update destination %s in %s: %w", d, s, err)
	}
	return nil
}

// DelDestination removes d (only its Addr matters) from service s.
func (k *Kernel) DelDestination(s ipvs.Service, d ipvs.Destination) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	e, d, err := k.destCall("DelDestination", s, d, false)
	if err == nil {
		if _, ok := e.dests[d.Addr]; !ok {
			err = syscall.ENOENT
		} else {
			delete(e.dests, d.Addr)
		}
	}
	if err != nil {
		return fmt.Errorf("ipvs: delete destination %s from %s: %w", d.Addr, s, err)
	}
	return nil
}
