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
//   - [Listener] ([Listen]) runs that decoder on the sync interface beside
//     the kernel's backup daemon: a UDP socket per sync port bound to the
//     group and port with SO_REUSEADDR, which the kernel's socket allows, so
//     both get every datagram. It counts datagrams, applied and skipped
//     entries, drops by reason (a wrong sync ID among them), entries by
//     protocol and state, senders, ports and socket drops ([ListenerStats]),
//     and, since messages carry no timestamps, exposes what lag is
//     measurable: the age of the last datagram, the kernel's receive time
//     of each entry ([ListenerConfig].OnEntry) and a bounded table of when
//     each connection was first seen ([Listener.FirstSeen]).
//   - [Encode] writes messages as the kernel's master does; tests and the
//     fuzz corpus use it.
//
// The kernel tests in this package need real IPVS. On a host without it they
// skip; run them in the test VM:
//
//	CGO_ENABLED=0 go test -exec "$PWD/integration/vm/go-exec.sh" -v ./internal/connsync/
//
// Inside the VM (HADIRECTOR_VMTEST=1) a missing IPVS fails them instead.
// The listener's other tests need root (network namespaces from
// integration/netlab), not IPVS, and skip without it.
package connsync
