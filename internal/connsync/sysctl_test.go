package connsync

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func ptr[T any](v T) *T { return &v }

// TestApplyProfile on a directory laid out like /proc/sys/net/ipv4/vs (the
// kernel prints sync_threshold with a tab): only differing values are
// written, unset ones are left alone, a missing sysctl is a clear error.
func TestApplyProfile(t *testing.T) {
	dir := t.TempDir()
	for name, v := range map[string]string{"sync_threshold": "3\t50\n", "sync_refresh_period": "0\n", "sync_retries": "0\n",
		"sloppy_tcp": "0\n", "sloppy_sctp": "0\n", "backup_only": "0\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	p := Profile{Threshold: &[2]int{0, 0}, RefreshPeriod: ptr(10 * time.Second), Retries: ptr(1), SloppyTCP: ptr(true), BackupOnly: ptr(false)}
	changed, err := ApplyProfile(dir, p)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, c := range changed {
		names = append(names, c.Name+"="+c.Value)
	}
	if want := []string{"sync_threshold=0 0", "sync_refresh_period=10", "sync_retries=1", "sloppy_tcp=1"}; !slices.Equal(names, want) {
		t.Errorf("changed %v, want %v", names, want)
	}
	if got, _ := ReadSysctl(dir, "sync_threshold"); got != "0 0" {
		t.Errorf("sync_threshold = %q", got)
	}
	if got, _ := ReadSysctl(dir, "sloppy_sctp"); got != "0" {
		t.Errorf("an unset sysctl changed: sloppy_sctp = %q", got)
	}
	if changed, err := ApplyProfile(dir, p); err != nil || len(changed) != 0 {
		t.Errorf("second apply: %v, %v; want nothing to do", changed, err)
	}
	if got := ReadProfile(dir); len(got) != len(ProfileNames) {
		t.Errorf("ReadProfile: %v", got)
	}
	os.Remove(filepath.Join(dir, "sync_retries"))
	if _, err := ApplyProfile(dir, Profile{Retries: ptr(2)}); err == nil {
		t.Error("a missing sysctl was accepted")
	}
}

// TestProfileAndReconcileKernel: in the VM, the profile lands in the
// namespace's real sysctls, and Reconcile starts what is missing, keeps
// what matches, restarts what differs and stops what is not wanted.
func TestProfileAndReconcileKernel(t *testing.T) {
	needIPVS(t)
	ns := newNetns(t)
	addDummy(t, ns, "sync0", 1500, "10.9.0.1/24")
	err := inNetns(ns, func() error {
		changed, err := ApplyProfile(SysctlDir, Profile{Threshold: &[2]int{0, 0}, RefreshPeriod: ptr(10 * time.Second), Retries: ptr(2), SloppyTCP: ptr(true)})
		if err != nil {
			return err
		}
		if len(changed) != 4 {
			t.Errorf("changed %v; want 4 sysctls", changed)
		}
		if v, _ := ReadSysctl(SysctlDir, "sync_threshold"); v != "0 0" {
			t.Errorf("sync_threshold in the namespace = %q", v)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// The host's (the VM's root namespace's) values are untouched.
	if v, _ := ReadSysctl(SysctlDir, "sync_threshold"); v != "3 50" {
		t.Errorf("the root namespace's sync_threshold changed: %q", v)
	}

	d := openDaemons(t, ns)
	master := DaemonConfig{Role: Master, Interface: "sync0", SyncID: 7}
	backup := DaemonConfig{Role: Backup, Interface: "sync0", SyncID: 7}
	did, err := Reconcile(d, []DaemonConfig{master, backup})
	if err != nil || len(did) != 2 {
		t.Fatalf("first reconcile: %v, %v", did, err)
	}
	if did, err := Reconcile(d, []DaemonConfig{master, backup}); err != nil || len(did) != 0 {
		t.Errorf("second reconcile: %v, %v; want nothing to do", did, err)
	}
	backup.SyncID = 8
	if did, err := Reconcile(d, []DaemonConfig{master, backup}); err != nil || len(did) != 2 {
		t.Errorf("changed sync id: %v, %v; want a stop and a start", did, err)
	}
	if did, err := Reconcile(d, []DaemonConfig{backup}); err != nil || len(did) != 1 {
		t.Errorf("master no longer wanted: %v, %v", did, err)
	}
	checkList(t, d, ns, DaemonConfig{Role: Backup, Interface: "sync0", SyncID: 8, MaxLen: 1472, Group: DefaultGroup, Port: DefaultPort, TTL: 1})
}
