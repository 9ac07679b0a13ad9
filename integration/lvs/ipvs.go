package lvs

import (
	"context"
	"errors"
	"fmt"

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
