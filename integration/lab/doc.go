// Package lab is `hadirector lab`: the whole product working on one
// machine, with no network to plan. It builds integration/lvs's direct
// routing bed in network namespaces (a client, directors lb1 and lb2, real
// servers rs1-rs3 on one bridge, plus a heartbeat cable between the
// directors), starts both directors from the embedded cluster file
// (lab.toml, printed for the user), runs client traffic (long-lived
// connections exchanging numbered lines, and steady short HTTP requests),
// breaks one thing ([Failure]: the master director, killed and cut off; a
// real server, killed then revived; or the heartbeat cable, cut then
// restored), and prints a summary: who was master, what failed, how long
// clients waited, which director served, and how many long-lived
// connections survived, with the verdict ([Summary.Check]).
//
// The host kernels this project is built on have no IPVS. There the lab
// boots integration/vm's qemu VM (Debian's stock kernel) and runs itself
// inside it ([RunInVM]); the guest cannot build, so the binary that goes in
// must be static, and a dynamic one (`go run` links with cgo) is rebuilt
// with CGO_ENABLED=0 from the source tree first.
//
// Step by step (`hadirector lab up`, then status, fail [WHAT], down; [Up],
// [Serve], [Command]), a background process holds the lab between
// commands and answers on a Unix socket. That needs IPVS on the host: a VM
// lives for one command.
//
// It leaves nothing behind: Run removes every namespace and process it made
// when it ends, fails half-way, or is interrupted; a second lab while one
// runs is refused ([Lock]).
package lab
