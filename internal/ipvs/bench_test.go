package ipvs_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hadirector/hadirector/internal/ipvs"
)

// TestBenchProgramming is issue 4's benchmark 2, on the real kernel (VM),
// gated so that CI does not pay for it:
//
//	HADIRECTOR_BENCH=1 HADIRECTOR_VM_ENV=HADIRECTOR_BENCH CGO_ENABLED=0 \
//	  go test -count=1 -exec "$PWD/integration/vm/go-exec.sh" \
//	  -run TestBenchProgramming -v ./internal/ipvs/
//
// 10 000 services × 4 real servers into an empty table by the reconciler,
// versus `ipvsadm -R` of the same rules (what ipvsadm-restore runs after its
// flush; the VM image has ipvsadm but not the ipvsadm-restore script), each
// in its own fresh network namespace, one after the other; then a reload
// with one changed real server: time and kernel operations, through Apply
// (reads the whole kernel table first) and through ApplyChanges (diffs
// against the model).
func TestBenchProgramming(t *testing.T) {
	if os.Getenv("HADIRECTOR_BENCH") != "1" {
		t.Skip("set HADIRECTOR_BENCH=1 (and HADIRECTOR_VM_ENV=HADIRECTOR_BENCH for the VM)")
	}
	const nSvc = 10000
	want := ipvs.BigTable(t, nSvc)
	var report strings.Builder
	say := func(format string, args ...any) {
		fmt.Fprintf(&report, format+"\n", args...)
	}
	say("IPVS programming benchmark: %d services × 4 real servers (%d kernel entries)", want.Len(), want.Len()+want.NumDests())

	// ipvsadm -R in a fresh namespace.
	_, ns2 := ipvs.OpenPrivate(t)
	rules := filepath.Join(t.TempDir(), "rules")
	if err := os.WriteFile(rules, []byte(ipvsadmRules(want)), 0o600); err != nil {
		t.Fatal(err)
	}
	restore := timeCmd(t, rules, "ip", "netns", "exec", filepath.Base(ns2), "ipvsadm", "-R")
	save := timeCmd(t, "", "ip", "netns", "exec", filepath.Base(ns2), "ipvsadm", "-Sn")
	key := want.Keys()[nSvc/2]
	d := want.Dests(key)[2]
	edit := timeCmd(t, "", "ip", "netns", "exec", filepath.Base(ns2), "ipvsadm", "-e", "-t", key.Addr.String(), "-r", d.Addr.String(), "-m", "-w", "9")
	noop := timeCmd(t, "", "ip", "netns", "exec", filepath.Base(ns2), "true")
	// Empty it again: in Linux 6.1 the service hash table is shared by all
	// namespaces (and every entry's rate estimator costs CPU), so a full
	// table next door would slow the reconciler's run down.
	timeCmd(t, "", "ip", "netns", "exec", filepath.Base(ns2), "ipvsadm", "-C")

	// The reconciler in another fresh namespace.
	kern, _ := ipvs.OpenPrivate(t)
	k := &counting{KernelAPI: kern}
	r := newRec(t, k)
	res := r.Apply(want)
	mustClean(t, res)
	build := res
	if got := readTable(t, k); !got.Equal(want) {
		t.Fatal("the kernel does not hold the table")
	}
	res = r.Apply(want)
	mustClean(t, res)
	idle := res
	if len(idle.Ops) != 0 {
		t.Fatalf("unchanged table: %d ops", len(idle.Ops))
	}

	// Reload with one changed real server: through Apply, then ApplyChanges.
	d.Weight = 9
	if err := want.SetDest(key, d); err != nil {
		t.Fatal(err)
	}
	before := k.writes.Load()
	full := r.Apply(want)
	mustClean(t, full)
	fullWrites := k.writes.Load() - before
	d.Weight = 10
	if err := want.SetDest(key, d); err != nil {
		t.Fatal(err)
	}
	before = k.writes.Load()
	start := time.Now()
	fast := r.ApplyChanges(want)
	fastWall := time.Since(start)
	mustClean(t, fast)
	fastWrites := k.writes.Load() - before
	if fullWrites != 1 || fastWrites != 1 {
		t.Fatalf("one changed real server: %d kernel writes by Apply, %d by ApplyChanges; want 1", fullWrites, fastWrites)
	}
	if got, _ := readTable(t, k).Dest(key, d.Addr); got != d {
		t.Fatalf("kernel reads back %+v, want %+v", got, d)
	}

	// Where a full read's time goes.
	start = time.Now()
	svcs, err := kern.Services()
	if err != nil {
		t.Fatal(err)
	}
	listSvcs := time.Since(start)
	start = time.Now()
	for _, s := range svcs {
		if _, err := kern.Destinations(s); err != nil {
			t.Fatal(err)
		}
	}
	listDests := time.Since(start)
	start = time.Now()
	for _, s := range svcs {
		if _, err := ipvs.RawDestinations(kern, s); err != nil {
			t.Fatal(err)
		}
	}
	rawDests := time.Since(start)
	actual := readTable(t, k)
	start = time.Now()
	ops, _ := ipvs.Diff(actual, want, nil)
	diffTime := time.Since(start)
	if len(ops) != 0 {
		t.Fatalf("diff after reload: %v", opStrings(ops))
	}

	say("")
	say("into an empty table:")
	say("  ipvsadm -R (ipvsadm-restore)   %10v  (%d lines)", restore, want.Len()+want.NumDests())
	say("  hadirector Apply               %10v  (%d kernel ops, %.1f µs each; its kernel read %v)",
		build.Duration, len(build.Ops), float64(build.Duration.Microseconds())/float64(len(build.Ops)), build.Read)
	say("  ratio hadirector / ipvsadm     %10.2f", build.Duration.Seconds()/restore.Seconds())
	say("")
	say("reload with one changed real server:")
	say("  hadirector ApplyChanges        %10v  (%d kernel op; wall %v)", fast.Duration, fastWrites, fastWall)
	say("  hadirector Apply               %10v  (%d kernel op; %v of it reading the kernel)", full.Duration, fullWrites, full.Read)
	say("  ipvsadm -e of that one         %10v  (process start included; `ip netns exec true` alone: %v)", edit, noop)
	say("")
	say("drift check of the unchanged table (Apply): %v, of which kernel read %v", idle.Duration, idle.Read)
	say("  services dump (1 netlink dump)         %10v", listSvcs)
	say("  destinations, one dump per service     %10v  (%.0f µs per service)", listDests, float64(listDests.Microseconds())/float64(len(svcs)))
	say("  same straight through moby/ipvs       %10v  (without Kernel's serialisation)", rawDests)
	say("  Diff of the two tables                 %10v", diffTime)
	say("  ipvsadm -Sn (its full dump)            %10v", save)
	t.Log("\n" + report.String())
}

// ipvsadmRules renders t as ipvsadm -R input (TCP/UDP/SCTP, NAT/DR/TUN).
func ipvsadmRules(t ipvs.Table) string {
	var b strings.Builder
	proto := map[ipvs.Protocol]string{ipvs.TCP: "-t", ipvs.UDP: "-u", ipvs.SCTP: "--sctp-service"}
	fwd := map[ipvs.Forwarding]string{ipvs.NAT: "-m", ipvs.DR: "-g", ipvs.Tunnel: "-i"}
	for _, k := range t.Keys() {
		s, _ := t.Service(k)
		svc := proto[k.Protocol] + " " + k.Addr.String()
		if k.FWMark != 0 {
			svc = fmt.Sprintf("-f %d", k.FWMark)
		}
		fmt.Fprintf(&b, "-A %s -s %s\n", svc, s.Scheduler)
		for _, d := range t.Dests(k) {
			fmt.Fprintf(&b, "-a %s -r %s %s -w %d\n", svc, d.Addr, fwd[d.Forwarding], d.Weight)
		}
	}
	return b.String()
}

// timeCmd runs a command (stdin from the file stdin, if set) and returns
// its wall time.
func timeCmd(t *testing.T, stdin string, name string, args ...string) time.Duration {
	t.Helper()
	cmd := exec.Command(name, args...)
	if stdin != "" {
		f, err := os.Open(stdin)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		cmd.Stdin = f
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr.String())
	}
	return time.Since(start)
}
