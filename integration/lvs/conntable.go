package lvs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"syscall"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

	"github.com/hadirector/hadirector/integration/netlab"
)

// ConnTable reads the kernel's IPVS connection table of one director's
// namespace, /proc/net/ip_vs_conn_sync (the table with its Origin column:
// LOCAL for connections this director scheduled, SYNC for those its backup
// sync daemon learned). There is no netlink dump of IPVS connections, so
// this is how ipvsadm -Lnc reads them too. The file is opened once, inside
// the namespace, and each Read re-reads it whole (cheap enough to poll a
// table of ten thousand entries every few milliseconds).
type ConnTable struct {
	node *netlab.Node
	f    *os.File
	buf  []byte
}

// ConnEntry is one IPv4 connection of a ConnTable. It is valid only during
// the Read callback that gets it.
type ConnEntry struct {
	Protocol              string // "TCP", "UDP", "SCTP", ...
	Client, Virtual, Real netip.AddrPort
	State                 string // e.g. "ESTABLISHED"
	Synced                bool   // Origin SYNC (learned from the master), not LOCAL
}

// OpenConnTable opens director's connection table.
func OpenConnTable(director *netlab.Node) (*ConnTable, error) {
	var f *os.File
	// /proc/thread-self/net is the netns of the thread (Do's, locked in the
	// node's namespace); /proc/net would be the main thread's. The open file
	// stays bound to that namespace.
	err := director.Do(func() (err error) {
		f, err = os.Open("/proc/thread-self/net/ip_vs_conn_sync")
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("lvs: %s: open the IPVS connection table: %w", director.Name(), err)
	}
	return &ConnTable{node: director, f: f, buf: make([]byte, 1<<20)}, nil
}

// Close closes the table's file.
func (t *ConnTable) Close() error { return t.f.Close() }

// Read reads the whole table once and calls fn for each IPv4 entry, in the
// kernel's order. It returns the number of entries.
func (t *ConnTable) Read(fn func(*ConnEntry)) (int, error) {
	if _, err := t.f.Seek(0, io.SeekStart); err != nil {
		return 0, fmt.Errorf("lvs: %s: rewind the IPVS connection table: %w", t.node.Name(), err)
	}
	n := 0
	for {
		if n == len(t.buf) {
			t.buf = append(t.buf, make([]byte, len(t.buf))...)
		}
		k, err := t.f.Read(t.buf[n:])
		n += k
		if errors.Is(err, io.EOF) || (err == nil && k == 0) {
			break
		}
		if err != nil {
			return 0, fmt.Errorf("lvs: %s: read the IPVS connection table: %w", t.node.Name(), err)
		}
	}
	entries := 0
	var e ConnEntry
	for b := t.buf[:n]; len(b) > 0; {
		line := b
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line, b = b[:i], b[i+1:]
		} else {
			b = nil
		}
		if parseConnLine(line, &e) {
			entries++
			fn(&e)
		}
	}
	return entries, nil
}

// parseConnLine parses an IPv4 line of /proc/net/ip_vs_conn_sync,
//
//	TCP 0A5C0002 8A3C 0A5C0064 2328 0A5C0015 2328 ESTABLISHED SYNC       899
//
// without allocating (it is called for every entry of every poll). The
// header and IPv6 lines report false.
func parseConnLine(line []byte, e *ConnEntry) bool {
	var f [10][]byte
	nf := 0
	for i := 0; i < len(line); {
		for i < len(line) && line[i] == ' ' {
			i++
		}
		j := i
		for j < len(line) && line[j] != ' ' {
			j++
		}
		if j > i {
			if nf == len(f) {
				return false
			}
			f[nf] = line[i:j]
			nf++
		}
		i = j
	}
	if nf != len(f) || len(f[1]) != 8 || len(f[3]) != 8 || len(f[5]) != 8 {
		return false
	}
	var ok [3]bool
	e.Client, ok[0] = hexAddrPort(f[1], f[2])
	e.Virtual, ok[1] = hexAddrPort(f[3], f[4])
	e.Real, ok[2] = hexAddrPort(f[5], f[6])
	if !ok[0] || !ok[1] || !ok[2] {
		return false
	}
	e.Protocol = intern(f[0])
	e.State = intern(f[7])
	e.Synced = string(f[8]) == "SYNC"
	return true
}

// intern returns the known protocol and state names without allocating.
func intern(b []byte) string {
	if s, ok := connWords[string(b)]; ok {
		return s
	}
	return string(b)
}

var connWords = func() map[string]string {
	m := map[string]string{}
	for _, s := range []string{"TCP", "UDP", "SCTP", "AH", "ESP", "IP",
		"NONE", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT", "TIME_WAIT", "CLOSE", "CLOSE_WAIT",
		"LAST_ACK", "LISTEN", "SYNACK", "ERR!"} {
		m[s] = s
	}
	return m
}()

func hexAddrPort(a, p []byte) (netip.AddrPort, bool) {
	x, ok1 := parseHex(a)
	y, ok2 := parseHex(p)
	if !ok1 || !ok2 || len(p) > 4 {
		return netip.AddrPort{}, false
	}
	ip := netip.AddrFrom4([4]byte{byte(x >> 24), byte(x >> 16), byte(x >> 8), byte(x)})
	return netip.AddrPortFrom(ip, uint16(y)), true
}

func parseHex(b []byte) (uint32, bool) {
	if len(b) == 0 || len(b) > 8 {
		return 0, false
	}
	var v uint32
	for _, c := range b {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'A' && c <= 'F':
			c -= 'A' - 10
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		default:
			return 0, false
		}
		v = v<<4 | uint32(c)
	}
	return v, true
}

// ListenSync opens a UDP socket in node that receives the IPVS sync
// datagrams arriving on ifname for group (the kernel's is 224.0.0.81:8848):
// it binds group's port with SO_REUSEADDR beside the kernel's backup
// socket, which the kernel allows, and joins the group. Each datagram then
// reaches both, so a test sees what the standby's kernel gets, when it
// gets it (decode with internal/connsync).
func ListenSync(node *netlab.Node, ifname string, group netip.AddrPort) (net.PacketConn, error) {
	var pc net.PacketConn
	err := node.Do(func() error {
		lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			if err := c.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
			}); err != nil {
				return err
			}
			return serr
		}}
		var err error
		if pc, err = lc.ListenPacket(context.Background(), "udp4", group.String()); err != nil {
			return err
		}
		ifi, err := net.InterfaceByName(ifname)
		if err == nil {
			err = ipv4.NewPacketConn(pc).JoinGroup(ifi, &net.UDPAddr{IP: group.Addr().AsSlice()})
		}
		if err != nil {
			pc.Close()
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("lvs: %s: listen for sync datagrams on %s: %w", node.Name(), ifname, err)
	}
	return pc, nil
}
