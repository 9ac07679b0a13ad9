package ipvs

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// Table is a model of an IPVS table: virtual services by [ServiceKey], each
// with its destinations by address:port. It is what the engine wants in the
// kernel (the desired table) or what the kernel holds ([ReadTable]); [Diff]
// turns two of them into kernel operations.
//
// Services and destinations in a Table are normalised ([Service.Normalize],
// unmapped addresses), so equal entries compare equal with ==, and a
// desired entry compares equal to its read-back from the kernel.
//
// A Table refers to its contents like a map: copying a Table value shares
// them; use [Table.Clone] for an independent copy. The zero Table is an
// empty table, ready to use through a pointer (the setters initialise it).
// A Table is not safe for concurrent mutation.
type Table struct {
	svcs map[ServiceKey]*virtualService
}

type virtualService struct {
	svc   Service
	dests []Destination // sorted by Addr, unique
}

// find returns the index of addr in vs.dests, or where it would go.
func (vs *virtualService) find(addr netip.AddrPort) (int, bool) {
	return slices.BinarySearchFunc(vs.dests, addr, func(d Destination, a netip.AddrPort) int { return d.Addr.Compare(a) })
}

// put adds or replaces d.
func (vs *virtualService) put(d Destination) {
	if i, ok := vs.find(d.Addr); ok {
		vs.dests[i] = d
	} else {
		vs.dests = slices.Insert(vs.dests, i, d)
	}
}

// remove deletes the destination with address addr.
func (vs *virtualService) remove(addr netip.AddrPort) {
	if i, ok := vs.find(addr); ok {
		vs.dests = slices.Delete(vs.dests, i, i+1)
	}
}

func (vs *virtualService) get(addr netip.AddrPort) (Destination, bool) {
	if i, ok := vs.find(addr); ok {
		return vs.dests[i], true
	}
	return Destination{}, false
}

// NewTable returns an empty table.
func NewTable() Table {
	return Table{svcs: make(map[ServiceKey]*virtualService)}
}

func (t *Table) init() {
	if t.svcs == nil {
		t.svcs = make(map[ServiceKey]*virtualService)
	}
}

// Set adds or replaces service s with exactly the destinations dests. It
// refuses (wrapping [ErrInvalid], leaving t unchanged) what the kernel could
// never hold: see [Service.Validate], [Destination.Validate], a lower
// threshold above the upper one, two destinations with one address.
func (t *Table) Set(s Service, dests ...Destination) error {
	if err := s.Validate(); err != nil {
		return err
	}
	s = s.Normalize()
	ds := make([]Destination, 0, len(dests))
	for _, d := range dests {
		d, err := checkDest(s, d)
		if err != nil {
			return err
		}
		ds = append(ds, d)
	}
	slices.SortFunc(ds, func(a, b Destination) int { return a.Addr.Compare(b.Addr) })
	for i := 1; i < len(ds); i++ {
		if ds[i].Addr == ds[i-1].Addr {
			return invalid("service %s: destination %s twice", s, ds[i].Addr)
		}
	}
	t.init()
	t.svcs[s.Key()] = &virtualService{svc: s, dests: ds}
	return nil
}

// SetService adds s, or replaces the service fields of an existing one and
// keeps its destinations.
func (t *Table) SetService(s Service) error {
	if err := s.Validate(); err != nil {
		return err
	}
	s = s.Normalize()
	t.init()
	if vs := t.svcs[s.Key()]; vs != nil {
		vs.svc = s
		return nil
	}
	t.svcs[s.Key()] = &virtualService{svc: s}
	return nil
}

// SetDest adds or replaces destination d of the service with key k, which
// must be in t.
func (t *Table) SetDest(k ServiceKey, d Destination) error {
	vs := t.svcs[k]
	if vs == nil {
		return invalid("destination %s: no service %s in the table", d, k)
	}
	d, err := checkDest(vs.svc, d)
	if err != nil {
		return err
	}
	vs.put(d)
	return nil
}

func checkDest(s Service, d Destination) (Destination, error) {
	if err := d.Validate(s.Family); err != nil {
		return d, fmt.Errorf("service %s: %w", s, err)
	}
	if d.LowerThreshold > d.UpperThreshold {
		// The kernel refuses this with ERANGE (ip_vs_add_dest), even
		// with no upper threshold (0).
		return d, invalid("service %s: destination %s: lower threshold %d above upper threshold %d",
			s, d.Addr, d.LowerThreshold, d.UpperThreshold)
	}
	d.Addr = netip.AddrPortFrom(d.Addr.Addr().Unmap(), d.Addr.Port())
	return d, nil
}

// Delete removes the service with key k and its destinations.
func (t *Table) Delete(k ServiceKey) { delete(t.svcs, k) }

// DeleteDest removes destination addr from the service with key k.
func (t *Table) DeleteDest(k ServiceKey, addr netip.AddrPort) {
	if vs := t.svcs[k]; vs != nil {
		vs.remove(netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port()))
	}
}

// Len is the number of services.
func (t Table) Len() int { return len(t.svcs) }

// NumDests is the number of destinations of all services.
func (t Table) NumDests() int {
	n := 0
	for _, vs := range t.svcs {
		n += len(vs.dests)
	}
	return n
}

// Keys returns the service keys in [ServiceKey.Compare] order.
func (t Table) Keys() []ServiceKey {
	return slices.SortedFunc(maps.Keys(t.svcs), ServiceKey.Compare)
}

// Service returns the service with key k.
func (t Table) Service(k ServiceKey) (Service, bool) {
	vs := t.svcs[k]
	if vs == nil {
		return Service{}, false
	}
	return vs.svc, true
}

// Dests returns the destinations of the service with key k, by address.
func (t Table) Dests(k ServiceKey) []Destination {
	vs := t.svcs[k]
	if vs == nil {
		return nil
	}
	return slices.Clone(vs.dests)
}

// Dest returns destination addr of the service with key k.
func (t Table) Dest(k ServiceKey, addr netip.AddrPort) (Destination, bool) {
	vs := t.svcs[k]
	if vs == nil {
		return Destination{}, false
	}
	return vs.get(addr)
}

// Equal reports whether t and u hold the same services and destinations.
func (t Table) Equal(u Table) bool {
	if len(t.svcs) != len(u.svcs) {
		return false
	}
	for k, a := range t.svcs {
		b := u.svcs[k]
		if b == nil || a.svc != b.svc || !slices.Equal(a.dests, b.dests) {
			return false
		}
	}
	return true
}

// Clone returns an independent copy of t.
func (t Table) Clone() Table {
	c := Table{svcs: make(map[ServiceKey]*virtualService, len(t.svcs))}
	for k, vs := range t.svcs {
		c.svcs[k] = &virtualService{svc: vs.svc, dests: slices.Clone(vs.dests)}
	}
	return c
}

// String lists t like `ipvsadm -Ln`, sorted: one line per service, one
// indented line per destination.
func (t Table) String() string {
	var b strings.Builder
	for _, k := range t.Keys() {
		vs := t.svcs[k]
		b.WriteString(serviceLine(vs.svc))
		b.WriteByte('\n')
		for _, d := range vs.dests {
			fmt.Fprintf(&b, "  -> %s %s weight %d", d.Addr, d.Forwarding, d.Weight)
			if d.UpperThreshold != 0 || d.LowerThreshold != 0 {
				fmt.Fprintf(&b, " thresholds %d..%d", d.LowerThreshold, d.UpperThreshold)
			}
			b.WriteByte('\n')
		}
	}
	return b.String()
}

func serviceLine(s Service) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", s, s.Scheduler)
	if s.Flags != 0 {
		fmt.Fprintf(&b, " flags %#x", uint32(s.Flags))
	}
	if s.Persistence != 0 {
		fmt.Fprintf(&b, " persistent %d", s.Persistence/time.Second)
		if s.PersistencePrefix != 0 {
			fmt.Fprintf(&b, " /%d", s.PersistencePrefix)
		}
	}
	return b.String()
}

// putService stores a kernel read-back without validation: the kernel may
// hold what hadirector would refuse to create (flags it does not know, a
// netmask that is no prefix), and the model must still show it. dests are
// taken over and sorted.
func (t *Table) putService(s Service, dests []Destination) *virtualService {
	t.init()
	slices.SortFunc(dests, func(a, b Destination) int { return a.Addr.Compare(b.Addr) })
	vs := &virtualService{svc: s, dests: dests}
	t.svcs[s.Key()] = vs
	return vs
}
