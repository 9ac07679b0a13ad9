package heartbeat

import (
	"net"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Why the established liveness connection also sits on a high descriptor.
//
// When a process dies its kernel closes its descriptors in ascending
// order, but each close only queues the file's release; the queue runs
// last-in first-out (task_work), so the file whose last descriptor has the
// highest number is released first. Releasing an AF_PACKET socket waits
// for an RCU grace period (synchronize_net in packet_release), about 8 ms
// here, and the daemon holds one or two (the ARP sender, the node-loss
// prober). A liveness connection on a lower number than those sends its
// FIN only after them: measured with a killed test process, 0.75 ms from
// kill to the peer's EOF with the packet socket below the connection,
// 7.7 ms with one above it and 24 ms with two. The descriptor order
// depends on which came first at start, the peer's connection or the
// packet sockets, so failover after a SIGKILL was bimodal (2 ms or 12 ms).
//
// A duplicate of the connection's socket on a descriptor above every other
// makes its release the first: the file is released when its last
// descriptor is closed, and that is the pin, queued last.

// pinFloor is where pins go: below the descriptor limit so the duplicate
// can be made, and at most 64 Ki so the kernel's descriptor table of a
// process with a huge limit stays small (512 KiB of pointers at most). The
// daemon's own descriptors (sockets to real servers included) stay below
// it in practice.
var pinFloor = sync.OnceValue(func() int {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return -1
	}
	floor := int(min(lim.Cur, 1<<16)) - 16 // room for a connection being replaced
	if floor < 64 {
		return -1 // a tiny limit: pinning would only crowd it
	}
	return floor
})

// pinHigh duplicates nc's socket (close-on-exec) onto the lowest free
// descriptor at or above pinFloor and returns it, or 0 when it cannot
// (then the connection works as before, only its FIN may wait for packet
// sockets when the process is killed).
func pinHigh(nc net.Conn) int {
	floor := pinFloor()
	sc, ok := nc.(syscall.Conn)
	if floor < 0 || !ok {
		return 0
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return 0
	}
	pin := 0
	_ = rc.Control(func(fd uintptr) {
		if p, err := unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, floor); err == nil {
			pin = p
		}
	})
	return pin
}
