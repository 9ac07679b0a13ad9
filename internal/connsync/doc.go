// Package connsync owns hadirector's part in keeping connections alive across
// a failover: the kernel's IPVS connection-sync daemons and the sync
// protocol they speak. (The peer state channel will live here too.)
//
//   - [Daemons] starts, stops and lists the kernel's master and backup sync
//     daemons of one network namespace, over the generic-netlink family
//     "IPVS" (IPVS_CMD_NEW_DAEMON, IPVS_CMD_DEL_DAEMON, IPVS_CMD_GET_DAEMON).
//     No Go IPVS library implements these commands.
//   - [Decode] is a passive decoder of the sync datagrams the master sends
//     (UDP multicast, 224.0.0.81:8848 by default), versions 1 and 0. It
//     accepts and refuses exactly what the kernel's backup does
//     (net/netfilter/ipvs/ip_vs_sync.c, ip_vs_process_message), so what it
//     decodes is what the standby learned, and every datagram or entry the
//     backup ignores is counted by reason ([DropReason], [Counters]).
//   - [Encode] writes messages as the kernel's master does; tests and the
//     fuzz corpus use it.
//
// The kernel tests in this package need real IPVS. On a host without it they
// skip; run them in the test VM:
//
//	CGO_ENABLED=0 go test -exec "$PWD/integration/vm/go-exec.sh" -v ./internal/connsync/
//
// Inside the VM (HADIRECTOR_VMTEST=1) a missing IPVS fails them instead.
package connsync
