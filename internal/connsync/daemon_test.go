package connsync

import (
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/hadirector/hadirector/internal/ipvs"
	"github.com/hadirector/hadirector/internal/ipvs/kerneltest"
)

// Tests against the kernel's real sync daemons. The dev/CI hosts have no
// IPVS, so these run in the test VM:
//
//	CGO_ENABLED=0 go test -count=1 -exec "$PWD/integration/vm/go-exec.sh" -v ./internal/connsync/
//
// Each test works in fresh network namespaces: sync daemons are per
// namespace.

// needIPVS runs the test if the kernel has IPVS, fails it inside the VM
// and skips it elsewhere.
func needIPVS(t *testing.T) {
	t.Helper()
	kerneltest.NeedIPVS(t, ipvs.Preflight, kerneltest.GoExec("./internal/connsync/"))
}

// newNetns is a fresh network namespace for one test: its own IPVS table,
// sysctls and sync daemons.
func newNetns(t *testing.T) string {
	t.Helper()
	return kerneltest.NewNetns(t, "hdsync")
}

// inNetns runs fn on an OS thread switched into the namespace at path.
// Sockets fn creates stay in that namespace wherever they are used later.
func inNetns(path string, fn func() error) error {
	target, err := netns.GetFromPath(path)
	if err != nil {
		return err
	}
	defer target.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- err
			return // the locked thread is discarded
		}
		defer orig.Close()
		if err := netns.Set(target); err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		fnErr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- fmt.Errorf("leave namespace %s: %w", path, err)
			return // the locked thread is discarded
		}
		runtime.UnlockOSThread()
		errc <- fnErr
	}()
	return <-errc
}

// nlHandle is a netlink handle working in the namespace at path.
func nlHandle(t *testing.T, path string) *netlink.Handle {
	t.Helper()
	ns, err := netns.GetFromPath(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE) // the VM kernel lacks some of the default families
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

// addDummy adds an up dummy interface with the MTU and IPv4 prefix in the
// namespace at path.
func addDummy(t *testing.T, path, name string, mtu int, prefix string) {
	t.Helper()
	h := nlHandle(t, path)
	if err := h.LinkAdd(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: name, MTU: mtu}}); err != nil {
		t.Fatalf("add dummy %s: %v", name, err)
	}
	configure(t, h, name, prefix)
}

// configure gives the link an address (if prefix is not empty) and sets it up.
func configure(t *testing.T, h *netlink.Handle, name, prefix string) {
	t.Helper()
	l, err := h.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	if prefix != "" {
		a, err := netlink.ParseAddr(prefix)
		if err != nil {
			t.Fatal(err)
		}
		if err := h.AddrAdd(l, a); err != nil {
			t.Fatalf("address %s on %s: %v", prefix, name, err)
		}
	}
	if err := h.LinkSetUp(l); err != nil {
		t.Fatal(err)
	}
}

func openDaemons(t *testing.T, path string) *Daemons {
	t.Helper()
	d, err := Open(path)
	if err != nil {
		t.Fatalf("Open(%q): %v", path, err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// ipvsadmDaemons is `ipvsadm -L --daemon` in the namespace at path.
func ipvsadmDaemons(t *testing.T, path string) []string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", filepath.Base(path), "ipvsadm", "-L", "--daemon").CombinedOutput()
	if err != nil {
		t.Fatalf("ipvsadm -L --daemon: %v: %s", err, out)
	}
	return strings.Fields(strings.ReplaceAll(strings.TrimSpace(string(out)), "\n", "|"))
}

// ipvsadmLine is how ipvsadm 1.31 (list_daemon) prints a daemon.
func ipvsadmLine(c DaemonConfig) string {
	return fmt.Sprintf("%v sync daemon (mcast=%s, syncid=%d, maxlen=%d, group=%v, port=%d, ttl=%d)",
		c.Role, c.Interface, c.SyncID, c.MaxLen, c.Group, c.Port, c.TTL)
}

func checkList(t *testing.T, d *Daemons, path string, want ...DaemonConfig) {
	t.Helper()
	got, err := d.List()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("List() =\n%v\nwant\n%v", got, want)
	}
	var lines []string
	for _, c := range want {
		lines = append(lines, ipvsadmLine(c))
	}
	wantOut := strings.Fields(strings.Join(lines, "|"))
	if gotOut := ipvsadmDaemons(t, path); !slices.Equal(gotOut, wantOut) {
		t.Fatalf("ipvsadm -L --daemon says\n%s\nwant\n%s", strings.Join(gotOut, " "), strings.Join(wantOut, " "))
	}
}

func TestDaemonsKernel(t *testing.T) {
	needIPVS(t)
	ns := newNetns(t)
	addDummy(t, ns, "sync0", 1500, "10.9.0.1/24")
	d := openDaemons(t, ns)
	checkList(t, d, ns)

	master := DaemonConfig{Role: Master, Interface: "sync0", SyncID: 7}
	backup := DaemonConfig{Role: Backup, Interface: "sync0", SyncID: 7, MaxLen: 2000,
		Group: netip.MustParseAddr("239.1.2.3"), Port: 9000, TTL: 3}
	for _, c := range []DaemonConfig{master, backup} {
		if err := d.Start(c); err != nil {
			t.Fatal(err)
		}
	}
	// The kernel fills in the master's defaults: 1500 − 28, 224.0.0.81:8848, TTL 1.
	masterIs := DaemonConfig{Role: Master, Interface: "sync0", SyncID: 7, MaxLen: 1472, Group: DefaultGroup, Port: DefaultPort, TTL: 1}
	checkList(t, d, ns, masterIs, backup)

	if err := d.Start(master); !errors.Is(err, syscall.EEXIST) {
		t.Errorf("second master = %v, want EEXIST", err)
	}
	if err := d.Start(DaemonConfig{Role: Backup, Interface: "sync0"}); !errors.Is(err, syscall.EEXIST) {
		t.Errorf("second backup = %v, want EEXIST", err)
	}

	if err := d.Stop(Master); err != nil {
		t.Fatal(err)
	}
	if err := d.Stop(Master); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("stop a stopped master = %v, want ESRCH", err)
	}
	checkList(t, d, ns, backup)
	// The kernel looks the interface up before it looks for a running role.
	if err := d.Start(DaemonConfig{Role: Master, Interface: "nosuch0"}); !errors.Is(err, syscall.ENODEV) {
		t.Errorf("master on a missing interface = %v, want ENODEV", err)
	}
	if err := d.Stop(Backup); err != nil {
		t.Fatal(err)
	}
	if err := d.Stop(Backup); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("stop a stopped backup = %v, want ESRCH", err)
	}
	checkList(t, d, ns)
}

// The kernel does not sync mixed-family destinations (an IPv4 service with an
// IPv6 tunnel destination) and refuses to start a daemon beside one.
func TestDaemonsMixedFamily(t *testing.T) {
	needIPVS(t)
	ns := newNetns(t)
	addDummy(t, ns, "sync0", 1500, "10.9.0.1/24")
	for _, args := range [][]string{
		{"-A", "-t", "192.0.2.1:80"},
		{"-a", "-t", "192.0.2.1:80", "-r", "[2001:db8::1]:80", "-i"},
	} {
		cmd := append([]string{"netns", "exec", filepath.Base(ns), "ipvsadm"}, args...)
		if out, err := exec.Command("ip", cmd...).CombinedOutput(); err != nil {
			t.Fatalf("ipvsadm %v: %v: %s", args, err, out)
		}
	}
	d := openDaemons(t, ns)
	if err := d.Start(DaemonConfig{Role: Backup, Interface: "sync0"}); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("Start beside a mixed-family destination = %v, want EINVAL", err)
	}
}

// What the kernel makes of maxlen: defaults from the MTU, clamping.
func TestDaemonsMaxLen(t *testing.T) {
	needIPVS(t)
	tests := []struct {
		name           string
		mtu            int
		group          string
		master, backup uint16 // asked
		wantM, wantB   uint16 // in effect
	}{
		{"defaults, MTU 1500", 1500, "", 0, 0, 1472, 1472},
		{"defaults, MTU 9000: the backup follows the MTU", 9000, "", 0, 0, 1472, 8972},
		{"clamped", 1500, "", 65535, 100, 65507, 1024},
		{"smallest master", 1500, "", 1, 1024, 1, 1024},
		{"IPv6 group: 48 bytes of headers", 1500, "ff02::51", 0, 0, 1452, 1452},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns := newNetns(t)
			addDummy(t, ns, "sync0", tt.mtu, "10.9.0.1/24")
			d := openDaemons(t, ns)
			var group netip.Addr
			if tt.group != "" {
				group = netip.MustParseAddr(tt.group)
			}
			m := DaemonConfig{Role: Master, Interface: "sync0", SyncID: 1, MaxLen: tt.master, Group: group}
			b := DaemonConfig{Role: Backup, Interface: "sync0", SyncID: 1, MaxLen: tt.backup, Group: group}
			if err := d.Start(m); err != nil {
				t.Fatal(err)
			}
			if err := d.Start(b); err != nil {
				t.Fatal(err)
			}
			if !group.IsValid() {
				group = DefaultGroup
			}
			m.MaxLen, m.Group, m.Port, m.TTL = tt.wantM, group, DefaultPort, 1
			b.MaxLen, b.Group, b.Port, b.TTL = tt.wantB, group, DefaultPort, 1
			checkList(t, d, ns, m, b)
		})
	}
}

// Daemons opened on one namespace see and touch only that namespace's.
func TestDaemonsNetnsIsolation(t *testing.T) {
	needIPVS(t)
	a, b := newNetns(t), newNetns(t)
	addDummy(t, a, "sync0", 1500, "10.9.0.1/24")
	addDummy(t, b, "sync0", 1500, "10.9.0.2/24")
	da, db := openDaemons(t, a), openDaemons(t, b)
	if err := da.Start(DaemonConfig{Role: Master, Interface: "sync0", SyncID: 1}); err != nil {
		t.Fatal(err)
	}
	if got, err := db.List(); err != nil || len(got) != 0 {
		t.Fatalf("namespace b lists %v, %v", got, err)
	}
	if err := db.Start(DaemonConfig{Role: Master, Interface: "sync0", SyncID: 2}); err != nil {
		t.Fatalf("a master in b beside a's: %v", err)
	}
	if got, err := da.List(); err != nil || len(got) != 1 || got[0].SyncID != 1 {
		t.Fatalf("namespace a lists %v, %v", got, err)
	}
}
