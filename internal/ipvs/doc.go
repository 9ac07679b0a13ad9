// Package ipvs owns hadirector's view of the kernel's IPVS table: preflight,
// kernel access (and, later, the table model, diff and reconciler).
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
