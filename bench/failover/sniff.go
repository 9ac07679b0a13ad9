package main

import (
	"encoding/binary"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/hadirector/hadirector/integration/netlab"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// The sniffer watches the client's interface (an AF_PACKET socket in the
// client namespace, kernel receive timestamps) for what the baseline took
// from tcpdump: VRRP adverts (source, priority) and ARP packets claiming
// the VIP (sender MAC).

type pktKind uint8

const (
	pktAdvert pktKind = iota + 1
	pktARP
)

// pktEvent is one packet seen; at is CLOCK_REALTIME (ns).
type pktEvent struct {
	at   int64
	kind pktKind
	src  [4]byte // advert: IP source
	mac  [6]byte // ARP: sender MAC
	prio uint8   // advert: priority
}

type sniffer struct {
	fd     int
	vrid   uint8
	vip    [4]byte
	mu     sync.Mutex
	events []pktEvent
	stop   chan struct{}
	done   chan struct{}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// startSniffer opens the socket inside node (on iface ifindex) and starts
// reading.
func startSniffer(node *netlab.Node, ifindex int, vrid uint8, vip [4]byte) (*sniffer, error) {
	prog, err := bpf.Assemble([]bpf.Instruction{
		bpf.LoadAbsolute{Off: 12, Size: 2},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: 0x0806, SkipTrue: 4},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: 0x0800, SkipFalse: 2},
		bpf.LoadAbsolute{Off: 23, Size: 1},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: 112, SkipTrue: 1},
		bpf.RetConstant{Val: 0},
		bpf.RetConstant{Val: 0xffff},
	})
	if err != nil {
		return nil, err
	}
	filter := make([]unix.SockFilter, len(prog))
	for i, ins := range prog {
		filter[i] = unix.SockFilter{Code: ins.Op, Jt: ins.Jt, Jf: ins.Jf, K: ins.K}
	}
	s := &sniffer{fd: -1, vrid: vrid, vip: vip, stop: make(chan struct{}), done: make(chan struct{})}
	err = node.Do(func() error {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return err
		}
		s.fd = fd
		if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}); err != nil {
			return fmt.Errorf("attach filter: %w", err)
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1); err != nil {
			return fmt.Errorf("SO_TIMESTAMPNS: %w", err)
		}
		tv := unix.NsecToTimeval(int64(50 * time.Millisecond))
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifindex})
	})
	if err != nil {
		if s.fd >= 0 {
			unix.Close(s.fd)
		}
		return nil, fmt.Errorf("sniffer: %w", err)
	}
	go s.loop()
	return s, nil
}

func (s *sniffer) loop() {
	defer close(s.done)
	defer func() { recover() }()
	buf := make([]byte, 2048)
	oob := make([]byte, 256)
	for {
		select {
		case <-s.stop:
			return
		default:
		}
		n, oobn, _, from, err := unix.Recvmsg(s.fd, buf, oob, 0)
		if err != nil {
			continue // timeout (EAGAIN) or EINTR: check stop
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		at := time.Now().UnixNano()
		if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
			for _, m := range msgs {
				if m.Header.Level == unix.SOL_SOCKET && m.Header.Type == unix.SCM_TIMESTAMPNS && len(m.Data) >= 16 {
					sec := int64(binary.NativeEndian.Uint64(m.Data[0:8]))
					nsec := int64(binary.NativeEndian.Uint64(m.Data[8:16]))
					at = sec*1e9 + nsec
				}
			}
		}
		if ev, ok := s.parse(buf[:n], at); ok {
			s.mu.Lock()
			s.events = append(s.events, ev)
			s.mu.Unlock()
		}
	}
}

func (s *sniffer) parse(b []byte, at int64) (pktEvent, bool) {
	if len(b) < 14 {
		return pktEvent{}, false
	}
	switch binary.BigEndian.Uint16(b[12:14]) {
	case 0x0806:
		if len(b) < 14+28 {
			return pktEvent{}, false
		}
		a := b[14:]
		if [4]byte(a[14:18]) != s.vip {
			return pktEvent{}, false // not about the VIP
		}
		return pktEvent{at: at, kind: pktARP, mac: [6]byte(a[8:14])}, true
	case 0x0800:
		if len(b) < 14+20 {
			return pktEvent{}, false
		}
		ip := b[14:]
		ihl := int(ip[0]&0x0f) * 4
		if ip[9] != 112 || len(ip) < ihl+8 {
			return pktEvent{}, false
		}
		v := ip[ihl:]
		if v[1] != s.vrid {
			return pktEvent{}, false
		}
		return pktEvent{at: at, kind: pktAdvert, src: [4]byte(ip[12:16]), prio: v[2]}, true
	}
	return pktEvent{}, false
}

// Stop ends the capture and returns the events.
func (s *sniffer) Stop() []pktEvent {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	<-s.done
	unix.Close(s.fd)
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.events
}

func macOf(hw net.HardwareAddr) (m [6]byte) {
	copy(m[:], hw)
	return m
}
