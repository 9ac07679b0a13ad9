package connsync

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/genetlink/genltest"
	"github.com/mdlayher/netlink"
	"github.com/mdlayher/netlink/nltest"

	"github.com/hadirector/hadirector/internal/ipvs"
)

// Unit tests of the netlink messages against a fake kernel; the real kernel's
// answers are checked in the VM (daemon_test.go).

const testFamily = 0x42

// fakeDeadline lets a genltest connection take deadlines (nltest sockets
// have none).
type fakeDeadline struct{ *genetlink.Conn }

func (fakeDeadline) SetDeadline(time.Time) error { return nil }

func fakeDaemons(t *testing.T, fn genltest.Func) *Daemons {
	t.Helper()
	d := &Daemons{c: fakeDeadline{genltest.Dial(fn)}, family: testFamily, timeout: time.Second, sem: make(chan struct{}, 1)}
	t.Cleanup(func() { d.Close() })
	return d
}

// attrs decodes the daemon nest of a request into type -> raw data.
func attrs(t *testing.T, b []byte) map[uint16][]byte {
	t.Helper()
	top, err := netlink.UnmarshalAttributes(b)
	if err != nil || len(top) != 1 || top[0].Type&^netlink.Nested != cmdAttrDaemon {
		t.Fatalf("request attributes %+v, %v: want one IPVS_CMD_ATTR_DAEMON nest", top, err)
	}
	nested, err := netlink.UnmarshalAttributes(top[0].Data)
	if err != nil {
		t.Fatal(err)
	}
	out := map[uint16][]byte{}
	for _, a := range nested {
		out[a.Type] = a.Data
	}
	return out
}

func u16(v uint16) []byte { return binary.NativeEndian.AppendUint16(nil, v) }
func u32(v uint32) []byte { return binary.NativeEndian.AppendUint32(nil, v) }

func TestStartMessage(t *testing.T) {
	tests := []struct {
		name string
		cfg  DaemonConfig
		want map[uint16][]byte
	}{
		{
			name: "defaults left to the kernel",
			cfg:  DaemonConfig{Role: Master, Interface: "eth1", SyncID: 7},
			want: map[uint16][]byte{daemonAttrState: u32(1), daemonAttrMcastIfn: []byte("eth1\x00"), daemonAttrSyncID: u32(7)},
		},
		{
			name: "everything, IPv4 group in network order, port in host order",
			cfg: DaemonConfig{Role: Backup, Interface: "sync0", SyncID: 255, MaxLen: 9000,
				Group: netip.MustParseAddr("239.1.2.3"), Port: 9000, TTL: 3},
			want: map[uint16][]byte{daemonAttrState: u32(2), daemonAttrMcastIfn: []byte("sync0\x00"), daemonAttrSyncID: u32(255),
				daemonAttrSyncMaxlen: u16(9000), daemonAttrMcastGroup: {239, 1, 2, 3}, daemonAttrMcastPort: u16(9000),
				daemonAttrMcastTTL: {3}},
		},
		{
			name: "IPv6 group",
			cfg:  DaemonConfig{Role: Backup, Interface: "sync0", Group: netip.MustParseAddr("ff02::51")},
			want: map[uint16][]byte{daemonAttrState: u32(2), daemonAttrMcastIfn: []byte("sync0\x00"), daemonAttrSyncID: u32(0),
				daemonAttrMcastGroup6: netip.MustParseAddr("ff02::51").AsSlice()},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got map[uint16][]byte
			d := fakeDaemons(t, genltest.CheckRequest(testFamily, cmdNewDaemon, netlink.Request|netlink.Acknowledge,
				func(greq genetlink.Message, _ netlink.Message) ([]genetlink.Message, error) {
					if greq.Header.Version != genlVersion {
						t.Errorf("genl version %d", greq.Header.Version)
					}
					got = attrs(t, greq.Data)
					return []genetlink.Message{{}}, nil
				}))
			if err := d.Start(tt.cfg); err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("attributes\n got %v\nwant %v", got, tt.want)
			}
		})
	}
}

func TestStopMessage(t *testing.T) {
	var got map[uint16][]byte
	d := fakeDaemons(t, genltest.CheckRequest(testFamily, cmdDelDaemon, netlink.Request|netlink.Acknowledge,
		func(greq genetlink.Message, _ netlink.Message) ([]genetlink.Message, error) {
			got = attrs(t, greq.Data)
			return []genetlink.Message{{}}, nil
		}))
	if err := d.Stop(Backup); err != nil {
		t.Fatal(err)
	}
	if want := map[uint16][]byte{daemonAttrState: u32(2)}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("attributes %v, want %v", got, want)
	}
}

func TestListParses(t *testing.T) {
	reply := func(attrs ...netlink.Attribute) genetlink.Message {
		nest := nltest.MustMarshalAttributes(attrs)
		return genetlink.Message{Header: genetlink.Header{Command: cmdNewDaemon, Version: genlVersion},
			Data: nltest.MustMarshalAttributes([]netlink.Attribute{{Type: netlink.Nested | cmdAttrDaemon, Data: nest}})}
	}
	d := fakeDaemons(t, genltest.CheckRequest(testFamily, cmdGetDaemon, netlink.Request|netlink.Dump,
		func(genetlink.Message, netlink.Message) ([]genetlink.Message, error) {
			return []genetlink.Message{
				reply(
					netlink.Attribute{Type: daemonAttrState, Data: u32(1)},
					netlink.Attribute{Type: daemonAttrMcastIfn, Data: []byte("sync0\x00")},
					netlink.Attribute{Type: daemonAttrSyncID, Data: u32(7)},
					netlink.Attribute{Type: daemonAttrSyncMaxlen, Data: u16(1472)},
					netlink.Attribute{Type: daemonAttrMcastPort, Data: u16(8848)},
					netlink.Attribute{Type: daemonAttrMcastTTL, Data: []byte{1}},
					netlink.Attribute{Type: daemonAttrMcastGroup, Data: []byte{224, 0, 0, 81}},
				),
				reply(
					netlink.Attribute{Type: daemonAttrState, Data: u32(2)},
					netlink.Attribute{Type: daemonAttrMcastIfn, Data: []byte("sync0\x00")},
					netlink.Attribute{Type: daemonAttrSyncID, Data: u32(0)},
					netlink.Attribute{Type: daemonAttrSyncMaxlen, Data: u16(8952)},
					netlink.Attribute{Type: daemonAttrMcastPort, Data: u16(9000)},
					netlink.Attribute{Type: daemonAttrMcastTTL, Data: []byte{1}},
					netlink.Attribute{Type: daemonAttrMcastGroup6, Data: netip.MustParseAddr("ff02::51").AsSlice()},
					netlink.Attribute{Type: 99, Data: []byte{1, 2, 3}}, // a newer kernel's attribute
				),
			}, nil
		}))
	got, err := d.List()
	if err != nil {
		t.Fatal(err)
	}
	want := []DaemonConfig{
		{Role: Master, Interface: "sync0", SyncID: 7, MaxLen: 1472, Group: DefaultGroup, Port: DefaultPort, TTL: 1},
		{Role: Backup, Interface: "sync0", MaxLen: 8952, Group: netip.MustParseAddr("ff02::51"), Port: 9000, TTL: 1},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("List() =\n%v\nwant\n%v", got, want)
	}
}

func TestKernelErrorsWrapErrno(t *testing.T) {
	d := fakeDaemons(t, func(genetlink.Message, netlink.Message) ([]genetlink.Message, error) {
		return nil, genltest.Error(int(syscall.EEXIST))
	})
	cfg := DaemonConfig{Role: Master, Interface: "sync0", SyncID: 3}
	err := d.Start(cfg)
	if !errors.Is(err, syscall.EEXIST) || !strings.Contains(err.Error(), "master sync daemon (interface sync0, sync ID 3") {
		t.Errorf("Start = %v, want EEXIST naming the daemon", err)
	}
	if err := d.Stop(Backup); !errors.Is(err, syscall.EEXIST) || !strings.Contains(err.Error(), "stop backup") {
		t.Errorf("Stop = %v", err)
	}
}

func TestConfigRefused(t *testing.T) {
	d := fakeDaemons(t, func(genetlink.Message, netlink.Message) ([]genetlink.Message, error) {
		t.Error("an invalid config reached the kernel")
		return nil, nil
	})
	for _, cfg := range []DaemonConfig{
		{Role: 3, Interface: "eth0"},
		{Role: Master},
		{Role: Master, Interface: "sixteen-chars-xx"},
		{Role: Master, Interface: "a\x00b"},
		{Role: Master, Interface: "eth0", SyncID: 256},
		{Role: Master, Interface: "eth0", Group: netip.MustParseAddr("10.0.0.1")},
		{Role: Master, Interface: "eth0", Group: netip.MustParseAddr("2001:db8::1")},
	} {
		if err := d.Start(cfg); !errors.Is(err, ErrConfig) {
			t.Errorf("Start(%+v) = %v, want ErrConfig", cfg, err)
		}
	}
	if err := d.Stop(0); !errors.Is(err, ErrConfig) {
		t.Errorf("Stop(0) = %v", err)
	}
}

// hangConn answers nothing: each call blocks until its deadline.
type hangConn struct {
	mu       sync.Mutex
	deadline time.Time
	calls    int
}

func (c *hangConn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.deadline = t
	return nil
}

func (c *hangConn) Execute(genetlink.Message, uint16, netlink.HeaderFlags) ([]genetlink.Message, error) {
	c.mu.Lock()
	c.calls++
	d := c.deadline
	c.mu.Unlock()
	time.Sleep(time.Until(d))
	return nil, &netlink.OpError{Op: "receive", Err: os.ErrDeadlineExceeded}
}

func (c *hangConn) Close() error { return nil }

func TestTimeout(t *testing.T) {
	hc := &hangConn{}
	d := &Daemons{c: hc, timeout: 50 * time.Millisecond, sem: make(chan struct{}, 1)}
	done := make(chan error)
	go func() { done <- d.Start(DaemonConfig{Role: Master, Interface: "eth0"}) }()
	time.Sleep(10 * time.Millisecond)
	// A second caller waits for the first, but no longer than its timeout.
	if _, err := d.List(); !errors.Is(err, ErrTimeout) {
		t.Errorf("List while a call hangs = %v, want ErrTimeout", err)
	}
	if err := <-done; !errors.Is(err, ErrTimeout) {
		t.Errorf("Start = %v, want ErrTimeout", err)
	}
	// The late reply could be taken for the next answer: the handle refuses.
	if err := d.Stop(Master); !errors.Is(err, ErrTimeout) || !strings.Contains(err.Error(), "reopen") {
		t.Errorf("Stop after a timeout = %v", err)
	}
	if hc.calls != 1 {
		t.Errorf("%d calls reached the socket, want 1", hc.calls)
	}
}

func TestClosed(t *testing.T) {
	d := fakeDaemons(t, func(genetlink.Message, netlink.Message) ([]genetlink.Message, error) { return nil, nil })
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	d.Close() // twice is fine
	if _, err := d.List(); !errors.Is(err, ErrClosed) {
		t.Errorf("List after Close = %v", err)
	}
}

// On a kernel without IPVS (the dev hosts), Open refuses clearly.
func TestOpenRefusesWithoutIPVS(t *testing.T) {
	if ipvs.Preflight() == nil {
		t.Skip("this kernel has IPVS")
	}
	d, err := Open("")
	if err == nil {
		d.Close()
		t.Fatal("Open succeeded on a kernel without IPVS")
	}
	if !errors.Is(err, ipvs.ErrNoIPVS) {
		t.Fatalf("Open = %v, want ipvs.ErrNoIPVS", err)
	}
	t.Logf("Open refuses: %v", err)
}
