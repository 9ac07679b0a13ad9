package ipvs_test

import (
	"net/netip"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hadirector/hadirector/internal/ipvs"
)

// The reconciler on the real kernel (test VM), with ipvsadm as the
// administrator working behind its back. Skipped on hosts without IPVS.

// ipvsadm runs ipvsadm in the network namespace at nsPath.
func ipvsadm(t *testing.T, nsPath string, args ...string) string {
	t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", filepath.Base(nsPath), "ipvsadm"}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("ipvsadm %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// ipvsadmLine returns the line of `ipvsadm -Ln` output that contains all
// of parts ("" if none).
func ipvsadmLine(out string, parts ...string) string {
	for l := range strings.Lines(out) {
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(l, p)
		}
		if ok {
			return strings.TrimSpace(l)
		}
	}
	return ""
}

func TestKernelReconcileEmptyToDesired(t *testing.T) {
	k, ns := ipvs.OpenPrivate(t)
	r := newRec(t, k)
	want := d1(t)
	res := r.Apply(want)
	mustClean(t, res)
	if len(res.Ops) != len(d1Ops) {
		t.Fatalf("%d ops, want %d", len(res.Ops), len(d1Ops))
	}
	if got := readTable(t, k); !got.Equal(want) {
		t.Fatalf("kernel:\n%s\nwant\n%s", got, want)
	}
	// ipvsadm sees the same, flags and persistence netmask included.
	out := ipvsadm(t, ns, "-Ln")
	for _, parts := range [][]string{
		{"TCP  192.0.2.10:80 wlc"},
		{"192.0.2.22:8080", "Masq", "2"},
		{"UDP  [2001:db8::10]:53 sh", "sh-fallback", "sh-port", "persistent 600 mask 64"},
		{"[2001:db8::21]:53", "Tunnel"},
		{"FWM  42 mh", "mh-port"},
	} {
		if ipvsadmLine(out, parts...) == "" {
			t.Errorf("ipvsadm -Ln has no line with %q:\n%s", parts, out)
		}
	}
	if res := r.Apply(want); len(res.Ops) != 0 {
		t.Fatalf("second Apply: %v", opStrings(res.Ops))
	}
}

func TestKernelReconcileOneWeightIsOneOp(t *testing.T) {
	kern, ns := ipvs.OpenPrivate(t)
	k := &counting{KernelAPI: kern}
	r := newRec(t, k)
	want := ipvs.BigTable(t, 200)
	mustClean(t, r.Apply(want))
	key := want.Keys()[123]
	d := want.Dests(key)[1]
	d.Weight = 42
	if err := want.SetDest(key, d); err != nil {
		t.Fatal(err)
	}
	for _, changes := range []bool{false, true} {
		before := k.writes.Load()
		var res ipvs.Result
		if changes {
			d.Weight = 43
			if err := want.SetDest(key, d); err != nil {
				t.Fatal(err)
			}
			res = r.ApplyChanges(want)
		} else {
			res = r.Apply(want)
		}
		mustClean(t, res)
		if n := k.writes.Load() - before; n != 1 || len(res.Ops) != 1 || res.Ops[0].Kind != ipvs.OpUpdateDest {
			t.Fatalf("ApplyChanges=%v: %d kernel writes, ops %v; want one update-dest", changes, n, opStrings(res.Ops))
		}
		t.Logf("ApplyChanges=%v: one weight in a 200-service table: %v (kernel read %v)", changes, res.Duration, res.Read)
		got, ok := readTable(t, k).Dest(key, d.Addr)
		if !ok || got != d {
			t.Fatalf("kernel reads back %+v, want %+v", got, d)
		}
		line := ipvsadmLine(ipvsadm(t, ns, "-Ln", "-t", key.Addr.String()), d.Addr.String())
		if f := strings.Fields(line); len(f) < 4 || f[3] != strconv.Itoa(d.Weight) { // -> ADDR Masq WEIGHT ...
			t.Fatalf("ipvsadm: %q", line)
		}
	}
}

func TestKernelReconcileRepairsIpvsadmDelete(t *testing.T) {
	k, ns := ipvs.OpenPrivate(t)
	r := newRec(t, k)
	want := d1(t)
	mustClean(t, r.Apply(want))
	ipvsadm(t, ns, "-d", "-t", "192.0.2.10:80", "-r", "192.0.2.21:80")
	ipvsadm(t, ns, "-e", "-f", "42", "-r", "192.0.2.31", "-g", "-w", "77")
	if got := readTable(t, k); got.Equal(want) {
		t.Fatal("ipvsadm changed nothing")
	}
	res := r.Apply(want)
	mustClean(t, res)
	if got := opStrings(res.Repaired); !slices.Equal(got, []string{
		"add-dest TCP 192.0.2.10:80 -> 192.0.2.21:80 (dr, weight 1)",
		"update-dest FWM 42 IPv4 -> 192.0.2.31:0 (dr, weight 5)",
	}) {
		t.Fatalf("repaired %q (ops %q)", got, opStrings(res.Ops))
	}
	if got := readTable(t, k); !got.Equal(want) {
		t.Fatalf("kernel:\n%s\nwant\n%s", got, want)
	}
	if ipvsadmLine(ipvsadm(t, ns, "-Ln"), "192.0.2.21:80", "Route") == "" {
		t.Fatal("ipvsadm does not see the destination back")
	}
	if st := r.Stats(); st.Repairs != 2 {
		t.Fatalf("stats: %d repairs, want 2", st.Repairs)
	}
}

func TestKernelReconcileLeavesIpvsadmServiceAlone(t *testing.T) {
	k, ns := ipvs.OpenPrivate(t)
	ipvsadm(t, ns, "-A", "-t", "192.0.2.99:25", "-s", "rr", "-p", "300", "-M", "255.255.255.0")
	ipvsadm(t, ns, "-a", "-t", "192.0.2.99:25", "-r", "192.0.2.98:25", "-m", "-w", "3")
	ipvsadm(t, ns, "-A", "-u", "[2001:db8::99]:53", "-s", "sh", "-b", "sh-port", "-p", "60", "-M", "48")
	before := ipvsadm(t, ns, "-Ln")
	// hadirector reads the persistence netmask ipvsadm set.
	kt := readTable(t, k)
	got, _ := kt.Service(ipvs.Service{Protocol: ipvs.TCP, Addr: svcU.Addr}.Key())
	got6, _ := kt.Service(ipvs.Service{Protocol: ipvs.UDP, Addr: netipAP("[2001:db8::99]:53")}.Key())
	if got.PersistencePrefix != 24 || got.Persistence != 300*time.Second || got6.PersistencePrefix != 48 || got6.Flags != ipvs.FlagSHPort {
		t.Fatalf("read back %+v and %+v", got, got6)
	}

	r := newRec(t, k)
	res := r.Apply(d1(t))
	mustClean(t, res)
	if got := keyStrings(res.Unowned); !slices.Equal(got, []string{"TCP 192.0.2.99:25", "UDP [2001:db8::99]:53"}) {
		t.Fatalf("unowned = %q", got)
	}
	res = r.Apply(desired(e(svcA, a1))(t))
	mustClean(t, res)
	after := ipvsadm(t, ns, "-Ln")
	for _, svc := range []string{"TCP  192.0.2.99:25", "UDP  [2001:db8::99]:53"} {
		if ipvsadmLine(before, svc) != ipvsadmLine(after, svc) || ipvsadmLine(after, svc) == "" {
			t.Fatalf("unowned service changed:\n%s\n---\n%s", before, after)
		}
	}
	if ipvsadmLine(after, "192.0.2.98:25", "Masq", "3") == "" {
		t.Fatalf("unowned destination changed:\n%s", after)
	}
	if st := r.Stats(); len(st.Unowned) != 2 {
		t.Fatalf("stats unowned = %v", st.Unowned)
	}
}

func TestKernelErrorOnOneEntry(t *testing.T) {
	k, ns := ipvs.OpenPrivate(t)
	r := newRec(t, k)
	res := r.Apply(desired(e(svcA, a1, a2), e(svcX, x1), e(svcF, f1))(t))
	if got := failedStrings(res.Failed); !slices.Equal(got, []string{
		"add-service TCP 192.0.2.40:443 nosuchsched: ENOENT",
		"add-dest TCP 192.0.2.40:443 -> 192.0.2.41:443 (nat, weight 1): skipped",
	}) {
		t.Fatalf("failed = %q", got)
	}
	out := ipvsadm(t, ns, "-Ln")
	for _, l := range []string{"192.0.2.21:80", "192.0.2.22:8080", "FWM  42", "192.0.2.31:0"} {
		if ipvsadmLine(out, l) == "" {
			t.Fatalf("the good entries are not all there (%s missing):\n%s", l, out)
		}
	}
	if ipvsadmLine(out, "192.0.2.40:443") != "" {
		t.Fatalf("the bad service is there:\n%s", out)
	}
}

// TestKernelPersistencePrefixMatchesIpvsadm: the netmask byte order, as
// ipvsadm reads it back.
func TestKernelPersistencePrefixMatchesIpvsadm(t *testing.T) {
	k, ns := ipvs.OpenPrivate(t)
	for _, s := range []ipvs.Service{
		{Protocol: ipvs.TCP, Addr: netipAP("192.0.2.1:80"), Scheduler: "rr", Persistence: time.Minute, PersistencePrefix: 24},
		{Protocol: ipvs.TCP, Addr: netipAP("192.0.2.2:80"), Scheduler: "rr", Persistence: time.Minute, PersistencePrefix: 17},
		{Protocol: ipvs.TCP, Addr: netipAP("192.0.2.3:80"), Scheduler: "rr", Persistence: time.Minute},
		{Protocol: ipvs.TCP, Addr: netipAP("[2001:db8::1]:80"), Scheduler: "rr", Persistence: time.Minute, PersistencePrefix: 64},
	} {
		if err := k.AddService(s); err != nil {
			t.Fatal(err)
		}
	}
	out := ipvsadm(t, ns, "-Ln")
	for addr, want := range map[string]string{
		"192.0.2.1:80":     "persistent 60 mask 255.255.255.0",
		"192.0.2.2:80":     "persistent 60 mask 255.255.128.0",
		"[2001:db8::1]:80": "persistent 60 mask 64",
	} {
		if l := ipvsadmLine(out, addr); !strings.HasSuffix(l, want) {
			t.Errorf("ipvsadm: %q, want it to end with %q", l, want)
		}
	}
	if l := ipvsadmLine(out, "192.0.2.3:80"); !strings.HasSuffix(l, "persistent 60") {
		t.Errorf("ipvsadm: %q, want no mask", l)
	}
}

func netipAP(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }
