package ipvs

import (
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"
)

// On a host whose kernel has no IPVS (the dev/CI machines), hadirector must
// refuse loudly instead of pretending: moby/ipvs alone would report success.
func TestPreflightRefusesWithoutIPVS(t *testing.T) {
	if os.Getenv("HADIRECTOR_VMTEST") == "1" {
		t.Skip("in the test VM the kernel has IPVS; this test is for hosts without it")
	}
	err := Preflight()
	if err == nil {
		t.Skip("this kernel has IPVS; the refusal path needs a kernel without it")
	}
	if _, statErr := os.Stat("/proc/net/ip_vs"); statErr == nil {
		t.Fatalf("Preflight failed (%v) but /proc/net/ip_vs exists", err)
	}
	checkRefusal := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, ErrNoIPVS) {
			t.Fatalf("%s: error %v does not wrap ErrNoIPVS", what, err)
		}
		msg := err.Error()
		for _, want := range []string{`"IPVS"`, "modprobe ip_vs", "CONFIG_IP_VS"} {
			if !strings.Contains(msg, want) {
				t.Errorf("%s: error %q does not mention %s", what, msg, want)
			}
		}
	}
	checkRefusal("Preflight", err)
	t.Logf("Preflight: %v", err)

	k, err := Open("")
	if k != nil {
		k.Close()
		t.Fatalf("Open(\"\") returned a Kernel on a host without IPVS")
	}
	checkRefusal(`Open("")`, err)

	// The netns path: preflight runs on a thread switched into the namespace
	// (setns needs CAP_SYS_ADMIN, even into the current namespace).
	if os.Geteuid() == 0 {
		k, err = Open("/proc/self/ns/net")
		if k != nil {
			k.Close()
			t.Fatalf("Open(/proc/self/ns/net) returned a Kernel on a host without IPVS")
		}
		checkRefusal("Open(/proc/self/ns/net)", err)
	}
}

func TestPreflightModprobe(t *testing.T) {
	enoent := syscall.ENOENT
	tests := []struct {
		name        string
		lookups     []error // results of the successive family lookups
		modprobe    error
		wantErr     bool
		wantProbes  int
		wantMessage string
	}{
		{name: "present", lookups: []error{nil}},
		{name: "loaded by modprobe", lookups: []error{enoent, nil}, wantProbes: 1},
		{name: "modprobe fails but module appeared", lookups: []error{enoent, nil}, modprobe: errors.New("boom"), wantProbes: 1},
		{name: "absent", lookups: []error{enoent, enoent}, modprobe: errors.New("exit status 1: Module ip_vs not found"), wantErr: true, wantProbes: 1,
			wantMessage: `the kernel has no IPVS: generic netlink family "IPVS" not found (lookup: no such file or directory; modprobe ip_vs: exit status 1: Module ip_vs not found)`},
		{name: "absent, modprobe ran fine", lookups: []error{enoent, enoent}, wantErr: true, wantProbes: 1, wantMessage: "modprobe ip_vs: succeeded"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, probes := 0, 0
			lookup := func() error { n++; return tt.lookups[n-1] }
			modprobe := func() error { probes++; return tt.modprobe }
			err := preflight(lookup, modprobe)
			if (err != nil) != tt.wantErr {
				t.Fatalf("preflight = %v, want error: %v", err, tt.wantErr)
			}
			if probes != tt.wantProbes || n != len(tt.lookups) {
				t.Fatalf("modprobe ran %d times, lookup %d; want %d and %d", probes, n, tt.wantProbes, len(tt.lookups))
			}
			if err != nil {
				if !errors.Is(err, ErrNoIPVS) {
					t.Fatalf("error %v does not wrap ErrNoIPVS", err)
				}
				if !strings.Contains(err.Error(), tt.wantMessage) {
					t.Fatalf("error %q does not contain %q", err, tt.wantMessage)
				}
			}
		})
	}
}

func TestOpenBadNetnsPath(t *testing.T) {
	k, err := Open("/nonexistent/netns")
	if err == nil {
		k.Close()
		t.Fatal("Open of a missing netns path succeeded")
	}
	if errors.Is(err, ErrNoIPVS) {
		t.Fatalf("a missing netns must not be reported as a missing IPVS: %v", err)
	}
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Open(/nonexistent/netns) = %v, want a not-exist error", err)
	}
}
