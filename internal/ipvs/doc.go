// Package ipvs owns hadirector's view of the kernel's IPVS table: preflight,
// kernel access, the table model, its diff and the reconciler.
//
//   - [Table] models a table: services by [ServiceKey], destinations by
//     address:port, normalised so that a desired entry equals its kernel
//     read-back.
//   - [Diff] turns the kernel's table and the desired one into the fewest
//     kernel operations ([Op]), in a safe order, leaving services it does
//     not own alone.
//   - [Reconciler] keeps the kernel as desired through a [KernelAPI]: it
//     adopts what it finds (never flushes), applies only differences,
//     repairs and counts drift, reports unowned services, and does not let
//     one failing entry stop the others. See its documentation for the
//     ownership rule.
//   - Package ipvstest is an in-memory [KernelAPI] with the kernel's
//     semantics, proven equal to the real kernel by the scenarios that run
//     against both (scenario_test.go).
//
// Everything that touches the kernel goes through [Kernel], which wraps
// github.com/moby/ipvs. That library has sharp edges this package files off:
//
//   - On a kernel without IPVS it reports nothing: the failed generic-netlink
//     family lookup is cached in a sync.Once for the life of the process,
//     NewService then "succeeds" and GetConfig panics. [Open] therefore runs
//     [Preflight] first and refuses with [ErrNoIPVS].
//   - A Handle is not safe for concurrent use (one sequence number space per
//     socket; a reply with another sequence number is silently dropped), so
//     [Kernel] serialises all calls.
//   - Its receive loop retries forever on EAGAIN, so [Kernel] bounds every
//     call with a deadline ([ErrTimeout]).
//
// The kernel tests in this package need real IPVS. On a host without it they
// skip; run them in the test VM:
//
//	CGO_ENABLED=0 go test -exec "$PWD/integration/vm/go-exec.sh" -v ./internal/ipvs/
//
// Inside the VM (HADIRECTOR_VMTEST=1) a missing IPVS fails them instead.
package ipvs
