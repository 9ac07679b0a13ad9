package ipvs

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	mobyipvs "github.com/moby/ipvs"
)

// DefaultTimeout bounds each [Kernel] call unless [WithTimeout] says otherwise.
const DefaultTimeout = 5 * time.Second

var (
	// ErrTimeout: the kernel did not answer a call in time.
	ErrTimeout = errors.New("IPVS kernel call timed out")
	// ErrClosed: the Kernel was closed.
	ErrClosed = errors.New("IPVS kernel handle is closed")
)

// Kernel is hadirector's access to the IPVS table of one network namespace,
// a thin adapter over a github.com/moby/ipvs Handle. It is safe for
// concurrent use.
//
// Errors from the kernel are wrapped syscall.Errno values: test them with
// errors.Is(err, syscall.EEXIST) (already there), syscall.ENOENT (no such
// scheduler or destination), syscall.ESRCH (no such service), ...
type Kernel struct {
	h       *mobyipvs.Handle
	nsPath  string
	timeout time.Duration

	// sem serialises calls on h (moby's Handle keeps one sequence number
	// space per socket and drops replies that are not for the call reading,
	// so concurrent calls would steal each other's answers). It is a channel
	// rather than a mutex so that waiting for it is bounded too.
	sem       chan struct{}
	closed    atomic.Bool
	closeOnce sync.Once

	// One long-lived goroutine runs the calls on h, fed through calls,
	// until quit closes (started on first use). Not a goroutine per call:
	// moby/ipvs's receive path keeps a 64 KiB buffer on the stack, which
	// a fresh goroutine grows (copies) its stack for on every call; that
	// was a tenth of the CPU of a bulk load.
	startOnce sync.Once
	calls     chan func()
	quit      chan struct{}
}

// Option configures [Open].
type Option func(*Kernel)

// WithTimeout sets the per-call deadline (default [DefaultTimeout]).
func WithTimeout(d time.Duration) Option {
	return func(k *Kernel) { k.timeout = d }
}

// Open returns access to the IPVS table of the network namespace at netnsPath
// (e.g. /var/run/netns/NAME; "" = the caller's current namespace). It runs
// the IPVS preflight in that namespace first and refuses with an error
// wrapping [ErrNoIPVS] if the kernel has no IPVS: moby/ipvs would otherwise
// hand out a handle that silently does nothing (and, as it caches the failed
// lookup process-wide, it would never recover).
func Open(netnsPath string, opts ...Option) (*Kernel, error) {
	k := &Kernel{nsPath: netnsPath, timeout: DefaultTimeout, sem: make(chan struct{}, 1)}
	for _, o := range opts {
		o(k)
	}
	if err := preflightIn(netnsPath); err != nil {
		return nil, err
	}
	// ipvs.New runs modprobe and a netlink round trip itself: bound it too.
	err := k.do(func(*mobyipvs.Handle) error {
		h, err := mobyipvs.New(netnsPath)
		k.h = h
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("ipvs: open IPVS netlink socket in %s: %w", k.ns(), err)
	}
	return k, nil
}

func (k *Kernel) ns() string {
	if k.nsPath == "" {
		return "the current network namespace"
	}
	return "network namespace " + k.nsPath
}

// Close releases the netlink socket. It waits (at most the call timeout) for
// a call in progress; if that call is stuck, Close closes the socket under
// it, which makes the call fail. Calls after Close return [ErrClosed].
func (k *Kernel) Close() error {
	k.start()
	k.closeOnce.Do(func() {
		k.closed.Store(true)
		defer close(k.quit)
		t := time.NewTimer(k.timeout)
		defer t.Stop()
		select {
		case k.sem <- struct{}{}:
			defer func() { <-k.sem }()
		case <-t.C:
		}
		if k.h != nil {
			k.h.Close()
		}
	})
	return nil
}

// do runs fn on the handle, one call at a time, within k.timeout (waiting
// for the handle included).
//
// moby/ipvs cannot be cancelled: its receive loop retries on EAGAIN forever.
// So fn runs in the worker goroutine; on timeout do returns [ErrTimeout] but
// the worker keeps the handle until the kernel answers (or Close closes the
// socket), and until then every further call times out waiting for it. A
// timeout thus means "this Kernel is wedged": the caller should Close it and
// Open a new one.
func (k *Kernel) do(fn func(h *mobyipvs.Handle) error) error {
	if k.closed.Load() {
		return ErrClosed
	}
	t := time.NewTimer(k.timeout)
	defer t.Stop()
	select {
	case k.sem <- struct{}{}:
	case <-t.C:
		return fmt.Errorf("%w after %v (an earlier call is still waiting for the kernel)", ErrTimeout, k.timeout)
	}
	if k.closed.Load() {
		<-k.sem
		return ErrClosed
	}
	k.start()
	done := make(chan error, 1)
	call := func() {
		defer func() { <-k.sem }()
		defer func() {
			// moby/ipvs panics on some unexpected replies (e.g. GetConfig
			// on an empty answer); do not take the daemon down with it.
			if r := recover(); r != nil {
				done <- fmt.Errorf("github.com/moby/ipvs panicked: %v", r)
			}
		}()
		done <- fn(k.h)
	}
	select {
	case k.calls <- call: // the worker is idle: we hold sem
	case <-k.quit:
		<-k.sem
		return ErrClosed
	}
	select {
	case err := <-done:
		return err
	case <-t.C:
		return fmt.Errorf("%w after %v", ErrTimeout, k.timeout)
	}
}

func (k *Kernel) start() {
	k.startOnce.Do(func() {
		k.calls = make(chan func())
		k.quit = make(chan struct{})
		go func() {
			for {
				select {
				case call := <-k.calls:
					call()
				case <-k.quit:
					return
				}
			}
		}()
	})
}

// AddService creates s. An existing service gives syscall.EEXIST; an unknown
// scheduler syscall.ENOENT.
func (k *Kernel) AddService(s Service) error {
	m, err := serviceToMoby(s, true)
	if err == nil {
		err = k.do(func(h *mobyipvs.Handle) error { return h.NewService(m) })
	}
	if err != nil {
		return fmt.Errorf("ipvs: add service %s: %w", s, err)
	}
	return nil
}

// UpdateService changes s in place (IPVS_CMD_SET_SERVICE): scheduler,
// flags, persistence timeout and prefix; its key finds it. A missing service
// gives syscall.ESRCH, an unknown scheduler syscall.ENOENT. Connections and
// destinations stay.
func (k *Kernel) UpdateService(s Service) error {
	m, err := serviceToMoby(s, true)
	if err == nil {
		err = k.do(func(h *mobyipvs.Handle) error { return h.UpdateService(m) })
	}
	if err != nil {
		return fmt.Errorf("ipvs: update service %s: %w", s, err)
	}
	return nil
}

// DelService deletes s and its destinations; only its key (Family,
// Protocol, Addr or FWMark) matters. A missing service gives syscall.ESRCH.
func (k *Kernel) DelService(s Service) error {
	m, err := serviceToMoby(s, false)
	if err == nil {
		err = k.do(func(h *mobyipvs.Handle) error { return h.DelService(m) })
	}
	if err != nil {
		return fmt.Errorf("ipvs: delete service %s: %w", s, err)
	}
	return nil
}

// Services lists all virtual services, in kernel order.
func (k *Kernel) Services() ([]Service, error) {
	var ms []*mobyipvs.Service
	err := k.do(func(h *mobyipvs.Handle) (err error) {
		ms, err = h.GetServices()
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("ipvs: list services: %w", err)
	}
	out := make([]Service, 0, len(ms))
	for _, m := range ms {
		s, err := serviceFromMoby(m)
		if err != nil {
			return nil, fmt.Errorf("ipvs: list services: %w", err)
		}
		out = append(out, s)
	}
	return out, nil
}

// AddDestination adds d to service s (only s's key matters). A missing
// service gives syscall.ESRCH, an existing destination syscall.EEXIST. An
// IPv4 destination in a namespace without a local routing table (not even lo
// up) gives syscall.EINVAL: the kernel checks its address type there.
func (k *Kernel) AddDestination(s Service, d Destination) error {
	ms, md, err := destinationArgs(s, d)
	if err == nil {
		err = k.do(func(h *mobyipvs.Handle) error { return h.NewDestination(ms, md) })
	}
	if err != nil {
		return fmt.Errorf("ipvs: add destination %s to %s: %w", d, s, err)
	}
	return nil
}

// UpdateDestination changes d (found by its Addr) in service s in place
// (IPVS_CMD_SET_DEST): weight, forwarding, thresholds. A missing destination
// gives syscall.ENOENT, a missing service syscall.ESRCH, a lower threshold
// above the upper one syscall.ERANGE.
func (k *Kernel) UpdateDestination(s Service, d Destination) error {
	ms, md, err := destinationArgs(s, d)
	if err == nil {
		err = k.do(func(h *mobyipvs.Handle) error { return h.UpdateDestination(ms, md) })
	}
	if err != nil {
		return fmt.Errorf("ipvs: update destination %s in %s: %w", d, s, err)
	}
	return nil
}

// DelDestination removes d (only its Addr matters) from service s. A missing
// destination gives syscall.ENOENT, a missing service syscall.ESRCH.
func (k *Kernel) DelDestination(s Service, d Destination) error {
	ms, md, err := destinationArgs(s, d)
	if err == nil {
		err = k.do(func(h *mobyipvs.Handle) error { return h.DelDestination(ms, md) })
	}
	if err != nil {
		return fmt.Errorf("ipvs: delete destination %s from %s: %w", d.Addr, s, err)
	}
	return nil
}

func destinationArgs(s Service, d Destination) (*mobyipvs.Service, *mobyipvs.Destination, error) {
	ms, err := serviceToMoby(s, false)
	if err != nil {
		return nil, nil, err
	}
	md, err := destinationToMoby(Family(ms.AddressFamily), d)
	if err != nil {
		return nil, nil, err
	}
	return ms, md, nil
}

// dumpDestinations is the kernel's destination dump of service s, as
// moby/ipvs decodes it (with the counters Destinations leaves out).
func (k *Kernel) dumpDestinations(s Service) ([]*mobyipvs.Destination, error) {
	ms, err := serviceToMoby(s, false)
	if err != nil {
		return nil, err
	}
	var mds []*mobyipvs.Destination
	err = k.do(func(h *mobyipvs.Handle) (err error) {
		mds, err = h.GetDestinations(ms)
		return err
	})
	return mds, err
}

// Destinations lists the destinations of service s (only its key matters).
// Note: the kernel answers a missing service with an empty list, not an error.
func (k *Kernel) Destinations(s Service) ([]Destination, error) {
	mds, err := k.dumpDestinations(s)
	if err != nil {
		return nil, fmt.Errorf("ipvs: list destinations of %s: %w", s, err)
	}
	out := make([]Destination, 0, len(mds))
	for _, md := range mds {
		d, err := destinationFromMoby(md)
		if err != nil {
			return nil, fmt.Errorf("ipvs: list destinations of %s: %w", s, err)
		}
		out = append(out, d)
	}
	return out, nil
}

// Conns are a destination's connection counters, as ipvsadm -Ln shows them;
// Total is the connections it was given since it was added (ipvsadm -Ln
// --stats), which tells whether this director scheduled any.
type Conns struct {
	Active, Inactive uint32
	Total            uint32
}

// Counters returns the connection counters of service s's destinations,
// by address.
func (k *Kernel) Counters(s Service) (map[netip.AddrPort]Conns, error) {
	mds, err := k.dumpDestinations(s)
	if err != nil {
		return nil, fmt.Errorf("ipvs: counters of %s: %w", s, err)
	}
	out := make(map[netip.AddrPort]Conns, len(mds))
	for _, md := range mds {
		d, err := destinationFromMoby(md)
		if err != nil {
			continue
		}
		out[d.Addr] = Conns{Active: uint32(md.ActiveConnections), Inactive: uint32(md.InactiveConnections), Total: md.Stats.Connections}
	}
	return out, nil
}
