package lvs

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/hadirector/hadirector/integration/netlab"
	"github.com/hadirector/hadirector/internal/ipvs"
)

// Ipvsadm runs ipvsadm with args in the director's namespace and returns
// its output (a failure includes the output).
func Ipvsadm(ctx context.Context, director *netlab.Node, args ...string) (string, error) {
	return Run(ctx, director, "ipvsadm", args...)
}

// Ipvsadm is the package's Ipvsadm on lb1.
func (b *Bed) Ipvsadm(ctx context.Context, args ...string) (string, error) {
	return Ipvsadm(ctx, b.LB1(), args...)
}

// Kernel returns the IPVS table access of the director's namespace
// (internal/ipvs), opened on first use and closed with the bed.
func (b *Bed) Kernel(director *netlab.Node) (*ipvs.Kernel, error) {
	b.kmu.Lock()
	defer b.kmu.Unlock()
	if k := b.kernels[director.Name()]; k != nil {
		return k, nil
	}
	k, err := ipvs.Open(director.Path())
	if err != nil {
		return nil, fmt.Errorf("lvs: %s: %w", director.Name(), err)
	}
	b.kernels[director.Name()] = k
	return k, nil
}

// IPVSTable reads the kernel's IPVS table in the director's namespace. A
// service that could not be read is an error.
func (b *Bed) IPVSTable(director *netlab.Node) (ipvs.Table, error) {
	k, err := b.Kernel(director)
	if err != nil {
		return ipvs.Table{}, err
	}
	t, unreadable, err := ipvs.ReadTable(k)
	if err != nil {
		return ipvs.Table{}, fmt.Errorf("lvs: %s: reading IPVS: %w", director.Name(), err)
	}
	var errs []error
	for key, e := range unreadable {
		errs = append(errs, fmt.Errorf("%s: %w", key, e))
	}
	if len(errs) > 0 {
		return t, fmt.Errorf("lvs: %s: unreadable IPVS services: %w", director.Name(), errors.Join(errs...))
	}
	return t, nil
}

func (b *Bed) closeKernels() {
	b.kmu.Lock()
	defer b.kmu.Unlock()
	for name, k := range b.kernels {
		_ = k.Close()
		delete(b.kernels, name)
	}
}

// ServiceKey is the key of the bed's TCP service VIP:port in IPVS.
func (o Options) ServiceKey(port int) ipvs.ServiceKey {
	return ipvs.Service{Protocol: ipvs.TCP, Addr: netip.MustParseAddrPort(o.VIPPort(port))}.Key()
}

// Weights reads the kernel's weights of a service's destinations on the
// director, by address (absent destinations are missing from the map; a
// service that is not there gives an error).
func (b *Bed) Weights(director *netlab.Node, key ipvs.ServiceKey) (map[netip.AddrPort]int, error) {
	k, err := b.Kernel(director)
	if err != nil {
		return nil, err
	}
	ds, err := k.Destinations(key.Service())
	if err != nil {
		return nil, err
	}
	out := map[netip.AddrPort]int{}
	for _, d := range ds {
		out[d.Addr] = d.Weight
	}
	return out, nil
}

// Scheduled is how many connections the director's IPVS has given each real
// server of a service since it was added (ipvsadm -Ln --stats), by server
// name: the proof of which director served the clients.
func (b *Bed) Scheduled(director *netlab.Node, key ipvs.ServiceKey) (map[string]int, error) {
	k, err := b.Kernel(director)
	if err != nil {
		return nil, err
	}
	cs, err := k.Counters(key.Service())
	if err != nil {
		return nil, err
	}
	out := map[string]int{}
	for i, name := range b.RealNames() {
		out[name] = int(cs[netip.AddrPortFrom(b.RealAddr(i+1), key.Service().Addr.Port())].Total)
	}
	return out, nil
}

// Established counts the director's IPVS connection entries in state
// ESTABLISHED (ipvsadm -Lnc): on a backup, the connections it learnt
// through connection sync.
func Established(ctx context.Context, director *netlab.Node) (int, error) {
	out, err := Ipvsadm(ctx, director, "-Lnc")
	if err != nil {
		return 0, err
	}
	return strings.Count(out, "ESTABLISHED"), nil
}
