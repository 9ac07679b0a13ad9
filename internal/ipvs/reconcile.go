package ipvs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// KernelAPI is what a [Reconciler] needs from the kernel's IPVS table.
// [*Kernel] implements it (serialised, with deadlines); so does the
// in-memory fake in package ipvstest, which keeps the kernel's semantics.
//
// Services and Destinations read back exactly what the write methods set
// (normalised as by [Service.Normalize]); errors wrap syscall.Errno as the
// kernel returns them: EEXIST (already there), ESRCH (no such service),
// ENOENT (no such destination, or unknown scheduler), ERANGE (lower
// threshold above the upper one).
type KernelAPI interface {
	Services() ([]Service, error)
	Destinations(s Service) ([]Destination, error)
	AddService(s Service) error
	UpdateService(s Service) error
	DelService(s Service) error
	AddDestination(s Service, d Destination) error
	UpdateDestination(s Service, d Destination) error
	DelDestination(s Service, d Destination) error
}

var _ KernelAPI = (*Kernel)(nil)

// ReadTable reads the kernel's whole table: one dump of the services, then
// one dump of destinations per service. A service whose destinations cannot
// be read is left out of t and its error returned in unreadable; err is set
// only when the services themselves cannot be listed.
func ReadTable(k KernelAPI) (t Table, unreadable map[ServiceKey]error, err error) {
	svcs, err := k.Services()
	if err != nil {
		return Table{}, nil, err
	}
	t = Table{svcs: make(map[ServiceKey]*virtualService, len(svcs))}
	for _, s := range svcs {
		ds, err := k.Destinations(s)
		if err != nil {
			if unreadable == nil {
				unreadable = make(map[ServiceKey]error)
			}
			unreadable[s.Key()] = err
			continue
		}
		t.putService(s, ds)
	}
	return t, unreadable, nil
}

// ErrSkipped marks an operation the reconciler did not try: its service
// could not be created or read, or the kernel handle is wedged.
var ErrSkipped = errors.New("ipvs: operation skipped")

// OpError is an operation that failed, with the kernel's error.
type OpError struct {
	Op  Op
	Err error
}

func (e OpError) Error() string { return e.Op.String() + ": " + e.Err.Error() }
func (e OpError) Unwrap() error { return e.Err }

// Result is what one [Reconciler.Apply] or [Reconciler.ApplyChanges] did.
type Result struct {
	// Ops are the kernel operations made, in order (failed ones included).
	Ops []Op
	// Failed are the operations that failed or were skipped
	// ([ErrSkipped]); the next Apply retries them.
	Failed []OpError
	// Repaired are the successful operations that repaired drift: the
	// entry was as desired after the previous apply and has been changed,
	// deleted or added by hand since (only a full Apply sees drift).
	Repaired []Op
	// Unowned are the kernel's services the reconciler leaves alone.
	Unowned []ServiceKey
	// Err: the kernel's services could not be listed, so nothing was
	// done; or the ownership state file could not be written.
	Err error
	// Read is the time spent reading the kernel table, Duration the whole.
	Read, Duration time.Duration
}

// Stats are a [Reconciler]'s counters since it was made.
type Stats struct {
	Applies   uint64 // full Apply runs (kernel read, diff, operations)
	Changes   uint64 // ApplyChanges runs
	Ops       uint64 // kernel operations made
	FailedOps uint64 // of which failed, plus the skipped ones
	Repairs   uint64 // drift repairs (see Result.Repaired)
	ReadFails uint64 // Apply runs that could not read the kernel
	// Last is when the last run ended; LastDuration and LastFailed are its.
	Last         time.Time
	LastDuration time.Duration
	LastFailed   int
	// Owned is the number of services the reconciler owns; Unowned are
	// the services it leaves alone, as of the last run.
	Owned   int
	Unowned []ServiceKey
}

// Reconciler keeps the kernel's IPVS table as desired, applying only the
// differences ([Diff]).
//
// # Ownership
//
// The reconciler owns the services that are in the desired table and those
// it has owned before in this process's lifetime and not yet deleted
// (created, or adopted: already in the kernel when first desired). It
// deletes an owned service that leaves the desired table. Every other
// service in the kernel is unowned: it is never changed or deleted, and it
// is reported ([Result.Unowned], [Stats.Unowned]). That is the safe default
// because IPVS entries carry no owner: a service in the kernel that
// hadirector does not want may be someone else's (added with ipvsadm for
// another purpose, or by another tool); deleting it would cut that traffic.
// The table is never flushed; at start the reconciler adopts what it finds.
//
// The consequence: a service removed from the config while the daemon was
// not running is not known as hadirector's after a restart and stays in
// the kernel until removed by hand. [WithStateFile] closes that gap: the
// reconciler records the keys it owns in a file (on tmpfs, e.g.
// /run/hadirector/ipvs-owned.json, which lives exactly as long as the
// kernel's table, until reboot; the file also carries the kernel's boot id
// and is ignored after a reboot), and at start it owns those keys again,
// so it deletes those that are no longer desired.
//
// # Drift
//
// [Reconciler.Apply] reads the whole kernel table, diffs it against the
// desired one and makes the operations. Called every period ([Reconciler.Run])
// it repairs drift: an entry changed or deleted by hand, or a destination
// added by hand to an owned service, is put back within one period, and
// counted as a repair. [Reconciler.ApplyChanges] diffs against the
// reconciler's own model of the kernel instead of reading it, so a reload
// or a health transition that changes one entry costs one kernel operation.
//
// # Errors
//
// An operation that fails is reported in [Result.Failed] and does not stop
// the others (the destinations of a service that could not be created are
// skipped: they could only fail). The next Apply tries again. Deleting what
// is already gone counts as done. The one exception is a kernel handle that
// stops answering ([ErrTimeout], [ErrClosed]): every further call would
// wait out its deadline too, so the rest is skipped.
//
// A Reconciler is safe for concurrent use; its runs are serialised.
type Reconciler struct {
	k         KernelAPI
	log       *slog.Logger
	report    func(Result)
	statePath string
	bootID    string

	mu         sync.Mutex
	model      Table // the kernel's table as last read, plus the ops made since
	haveModel  bool
	owned      map[ServiceKey]struct{}
	stateDirty bool // owned changed since the state file was written
	stats      Stats
}

// ReconcilerOption configures [NewReconciler].
type ReconcilerOption func(*Reconciler)

// WithLogger logs failed operations, repairs and unowned services there
// (default: nowhere).
func WithLogger(l *slog.Logger) ReconcilerOption { return func(r *Reconciler) { r.log = l } }

// WithReport calls f with the result of every run of [Reconciler.Run].
func WithReport(f func(Result)) ReconcilerOption { return func(r *Reconciler) { r.report = f } }

// WithStateFile keeps the set of owned services in the file at path, so
// that ownership survives a restart of the daemon (see [Reconciler]). Put
// it on tmpfs (/run): it must not outlive the kernel's table.
func WithStateFile(path string) ReconcilerOption {
	return func(r *Reconciler) { r.statePath = path }
}

// NewReconciler returns a reconciler for the kernel table k. It does not
// touch the kernel. The error is about the state file: one that exists but
// cannot be read or parsed.
func NewReconciler(k KernelAPI, opts ...ReconcilerOption) (*Reconciler, error) {
	r := &Reconciler{k: k, log: slog.New(slog.DiscardHandler), owned: make(map[ServiceKey]struct{})}
	for _, o := range opts {
		o(r)
	}
	if r.statePath != "" {
		if r.bootID == "" {
			r.bootID = readBootID()
		}
		if err := r.loadState(); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// Apply reads the kernel's table, diffs it against desired and makes the
// operations (see [Reconciler] for ownership, drift and errors). desired is
// only read, not retained.
func (r *Reconciler) Apply(desired Table) Result {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.apply(desired)
}

func (r *Reconciler) apply(desired Table) Result {
	start := time.Now()
	var res Result
	r.stats.Applies++
	actual, unreadable, err := ReadTable(r.k)
	res.Read = time.Since(start)
	if err != nil {
		r.stats.ReadFails++
		res.Err = fmt.Errorf("ipvs: read the kernel table: %w", err)
		r.finish(&res, start)
		return res
	}
	// A service whose destinations could not be read: diff against what
	// the model knows of it (as ApplyChanges would), or leave it alone
	// this round if the model knows nothing.
	var unknown map[ServiceKey]error
	for k, err := range unreadable {
		r.log.Warn("IPVS service unreadable", "service", k, "err", err)
		if vs := r.model.svcs[k]; r.haveModel && vs != nil {
			actual.svcs[k] = &virtualService{svc: vs.svc, dests: slices.Clone(vs.dests)}
			continue
		}
		if unknown == nil {
			unknown = make(map[ServiceKey]error)
		}
		unknown[k] = err
	}
	ops, unowned := Diff(actual, desired, r.owns)
	res.Unowned = unowned
	if len(unknown) > 0 {
		ops = skipUnknown(ops, unknown, &res)
	}
	prev, hadModel := r.model, r.haveModel
	r.execute(ops, &actual, &res, func(op Op) bool { return hadModel && modelHad(prev, op) })
	r.model, r.haveModel = actual, true
	// Forget owned services that are gone from both the kernel and the
	// desired table: if one comes back, someone else made it.
	for k := range r.owned {
		_, inKernel := actual.svcs[k]
		_, isDesired := desired.svcs[k]
		_, isUnknown := unknown[k]
		if !inKernel && !isDesired && !isUnknown {
			r.disown(k)
		}
	}
	r.own(desired, &res)
	r.finish(&res, start)
	return res
}

// ApplyChanges diffs desired against the reconciler's model of the kernel
// (the table as last read by Apply, plus the operations made since) and
// makes the operations, without reading the kernel: a reload or a weight
// change costs one kernel operation per changed entry. It does not see
// drift; the next Apply does. Before the first Apply it is an Apply.
func (r *Reconciler) ApplyChanges(desired Table) Result {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.haveModel {
		return r.apply(desired)
	}
	start := time.Now()
	var res Result
	r.stats.Changes++
	ops, unowned := Diff(r.model, desired, r.owns)
	res.Unowned = unowned
	r.execute(ops, &r.model, &res, nil)
	r.own(desired, &res)
	r.finish(&res, start)
	return res
}

// Run applies desired() at once and then every period until ctx ends
// (then it returns ctx.Err()). desired is called from Run's goroutine: it
// must return a table the caller no longer mutates (a snapshot). Each
// result goes to the [WithReport] function.
func (r *Reconciler) Run(ctx context.Context, period time.Duration, desired func() Table) error {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		res := r.Apply(desired())
		if r.report != nil {
			r.report(res)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Stats returns the counters.
func (r *Reconciler) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.stats
	s.Unowned = slices.Clone(s.Unowned)
	return s
}

// Owned returns the keys of the services the reconciler owns, sorted.
func (r *Reconciler) Owned() []ServiceKey {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.SortedFunc(maps.Keys(r.owned), ServiceKey.Compare)
}

func (r *Reconciler) owns(k ServiceKey) bool {
	_, ok := r.owned[k]
	return ok
}

func skipUnknown(ops []Op, unknown map[ServiceKey]error, res *Result) []Op {
	kept := ops[:0]
	for _, op := range ops {
		if err := unknown[op.Key()]; err != nil {
			res.Failed = append(res.Failed, OpError{op, fmt.Errorf("%w: its destinations could not be read: %w", ErrSkipped, err)})
			continue
		}
		kept = append(kept, op)
	}
	return kept
}

// execute makes ops in order and applies the successful ones to model.
// repair, if not nil, tells whether an op repairs drift.
func (r *Reconciler) execute(ops []Op, model *Table, res *Result, repair func(Op) bool) {
	var notCreated map[ServiceKey]error
	var wedged error
	res.Ops = slices.Grow(res.Ops, len(ops))
	for _, op := range ops {
		if wedged != nil {
			res.Failed = append(res.Failed, OpError{op, fmt.Errorf("%w: the kernel handle is not answering: %w", ErrSkipped, wedged)})
			continue
		}
		if err := notCreated[op.Key()]; err != nil {
			res.Failed = append(res.Failed, OpError{op, fmt.Errorf("%w: its service could not be created: %w", ErrSkipped, err)})
			continue
		}
		res.Ops = append(res.Ops, op)
		err := r.call(op)
		if err != nil && alreadyGone(op, err) {
			err = nil
		}
		if err != nil {
			res.Failed = append(res.Failed, OpError{op, err})
			r.log.Warn("IPVS operation failed (retried at the next run)", "op", op.String(), "err", err)
			if op.Kind == OpAddService {
				if notCreated == nil {
					notCreated = make(map[ServiceKey]error)
				}
				notCreated[op.Key()] = err
			}
			if errors.Is(err, ErrTimeout) || errors.Is(err, ErrClosed) {
				wedged = err
			}
			continue
		}
		if repair != nil && repair(op) {
			res.Repaired = append(res.Repaired, op)
			r.log.Warn("IPVS drift repaired: the entry had been changed by hand", "op", op.String())
		}
		applyOp(model, op)
		if op.Kind == OpDelService {
			r.disown(op.Key())
		}
	}
}

func (r *Reconciler) call(op Op) error {
	switch op.Kind {
	case OpAddService:
		return r.k.AddService(op.Service)
	case OpUpdateService:
		return r.k.UpdateService(op.Service)
	case OpDelService:
		return r.k.DelService(op.Service)
	case OpAddDest:
		return r.k.AddDestination(op.Service, op.Dest)
	case OpUpdateDest:
		return r.k.UpdateDestination(op.Service, op.Dest)
	case OpDelDest:
		return r.k.DelDestination(op.Service, op.Dest)
	}
	return fmt.Errorf("ipvs: unknown operation %v", op.Kind)
}

// alreadyGone: a delete of what is not there has done its job.
func alreadyGone(op Op, err error) bool {
	switch op.Kind {
	case OpDelService:
		return errors.Is(err, syscall.ESRCH)
	case OpDelDest:
		return errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ESRCH)
	}
	return false
}

// applyOp records a successful op in model.
func applyOp(model *Table, op Op) {
	k := op.Key()
	vs := model.svcs[k]
	switch op.Kind {
	case OpAddService:
		model.putService(op.Service, nil)
	case OpUpdateService:
		if vs != nil {
			vs.svc = op.Service
		} else {
			model.putService(op.Service, nil)
		}
	case OpDelService:
		delete(model.svcs, k)
	case OpAddDest, OpUpdateDest:
		if vs != nil {
			vs.put(op.Dest)
		}
	case OpDelDest:
		if vs != nil {
			vs.remove(op.Dest.Addr)
		}
	}
}

// modelHad reports whether the entry op is about was already as op makes
// it in model (the kernel as the reconciler left it): then the kernel has
// drifted and op is a repair.
func modelHad(model Table, op Op) bool {
	vs := model.svcs[op.Key()]
	if vs == nil {
		return false
	}
	switch op.Kind {
	case OpAddService, OpUpdateService:
		return vs.svc == op.Service
	case OpAddDest, OpUpdateDest:
		d, ok := vs.get(op.Dest.Addr)
		return ok && d == op.Dest
	case OpDelDest:
		_, ok := vs.get(op.Dest.Addr)
		return !ok
	}
	return false
}

func (r *Reconciler) finish(res *Result, start time.Time) {
	res.Duration = time.Since(start)
	r.stats.Ops += uint64(len(res.Ops))
	r.stats.FailedOps += uint64(len(res.Failed))
	r.stats.Repairs += uint64(len(res.Repaired))
	r.stats.Last = time.Now()
	r.stats.LastDuration = res.Duration
	r.stats.LastFailed = len(res.Failed)
	if res.Err == nil {
		r.stats.Unowned = res.Unowned
	}
	r.stats.Owned = len(r.owned)
}

// --- ownership

func (r *Reconciler) disown(k ServiceKey) {
	if _, ok := r.owned[k]; ok {
		delete(r.owned, k)
		r.stateDirty = true
	}
}

// own adds desired's services to the owned set and saves it if it changed.
func (r *Reconciler) own(desired Table, res *Result) {
	for k := range desired.svcs {
		if _, ok := r.owned[k]; !ok {
			r.owned[k] = struct{}{}
			r.stateDirty = true
		}
	}
	if r.stateDirty && r.statePath != "" {
		if err := r.saveState(); err != nil {
			res.Err = err
			r.log.Error("cannot save the IPVS ownership state", "err", err)
			return
		}
	}
	r.stateDirty = false
}

type stateFile struct {
	// BootID is the kernel's boot id when the file was written; after a
	// reboot the kernel's table is new and the file means nothing.
	BootID   string       `json:"boot_id"`
	Services []ServiceKey `json:"services"`
}

func readBootID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func (r *Reconciler) loadState() error {
	b, err := os.ReadFile(r.statePath)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("ipvs: read the ownership state: %w", err)
	}
	var f stateFile
	if err := json.Unmarshal(b, &f); err != nil {
		return fmt.Errorf("ipvs: ownership state %s: %w", r.statePath, err)
	}
	if f.BootID != r.bootID {
		r.log.Info("IPVS ownership state is from another boot; ignored", "file", r.statePath)
		return nil
	}
	for _, k := range f.Services {
		r.owned[k] = struct{}{}
	}
	return nil
}

func (r *Reconciler) saveState() error {
	f := stateFile{BootID: r.bootID, Services: slices.SortedFunc(maps.Keys(r.owned), ServiceKey.Compare)}
	b, err := json.Marshal(f)
	if err != nil {
		return err
	}
	tmp := r.statePath + ".tmp"
	if err := os.MkdirAll(filepath.Dir(r.statePath), 0o700); err != nil {
		return fmt.Errorf("ipvs: save the ownership state: %w", err)
	}
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("ipvs: save the ownership state: %w", err)
	}
	if err := os.Rename(tmp, r.statePath); err != nil {
		return fmt.Errorf("ipvs: save the ownership state: %w", err)
	}
	return nil
}
