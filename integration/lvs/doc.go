// Package lvs is hadirector's test bed for end-to-end Linux Virtual Server
// scenarios: a client, one or two directors and real servers in network
// namespaces (built with integration/netlab), real HTTP and echo servers in
// the real servers' namespaces, a client that counts which server answered,
// and helpers that run the real daemon in a director's namespace and read
// the kernel's IPVS table there.
//
// # What the package owns
//
//   - the address plan and the two topologies, NAT and DR ([New], [Bed]);
//   - the real servers' programs ([Server]: GET / answers the server's
//     name, /health answers 200 or 503, an echo port answers numbered lines;
//     each can be killed, with its connections reset, and revived);
//   - the client side ([Bed.Get], [Bed.Tally], [Bed.StartStream]);
//   - the daemon under test in a director's namespace ([Bed.StartDaemon],
//     [Daemon]) and its cluster file for the bed ([Bed.Config]);
//   - access to the director's IPVS table ([Bed.Ipvsadm], [Bed.IPVSTable]),
//     its connection table ([OpenConnTable]) and the sync datagrams it
//     receives ([ListenSync]);
//   - the VM conventions of these tests ([InVM], [NeedIPVS],
//     [DaemonBinary]).
//
// [Build] and [LaunchDaemon] do what [New] and [Bed.StartDaemon] do without
// a test: `hadirector lab` (integration/lab) runs its failover on this bed.
//
// It owns nothing outside the lab's namespaces: the caller's (root)
// namespace is left alone, and everything is removed when the test ends,
// also when it fails (netlab's Cleanup).
//
// # Where it runs
//
// The host kernel has no IPVS, so the scenarios run inside the test VM
// (integration/vm), which boots Debian's stock kernel; only the topology
// tests also run on the host. The guest cannot build the daemon: the host
// builds it statically and passes it in, and the tests find it as
// /payload/hadirector:
//
//	CGO_ENABLED=0 go build -o /tmp/hd/hadirector ./cmd/hadirector
//	HADIRECTOR_VM_PAYLOAD=/tmp/hd/hadirector CGO_ENABLED=0 \
//	  go test -count=1 -exec "$PWD/integration/vm/go-exec.sh" -v ./integration/lvs/
//
// integration/lvs/vmtest.sh does both (extra arguments go to go test), and
// scripts/test.sh's vm stage runs the package this way. Inside the VM a
// missing IPVS or a missing daemon binary fails the test; on the host the
// tests that need them skip.
//
// # Address plan
//
// NAT: front segment 10.90.0.0/24 (client .2, lb1 .11, lb2 .12, VIP .100);
// back segment 10.91.0.0/24 (lb1 .1, lb2 .2, rs1..rs3 .21-.23, sorry .50),
// the real servers' default route via lb1's back address, ip_forward=1 on
// the directors, and a client route to the back segment via lb1.
//
// DR: one segment 10.92.0.0/24 (client .2, lb1 .11, lb2 .12, VIP .100,
// rs1..rs3 .21-.23, sorry .50); the real servers carry the VIP on lo with
// arp_ignore=1 and arp_announce=2, so only the director answers ARP for it.
package lvs
