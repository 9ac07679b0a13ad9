package connsync

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// SysctlDir is where the kernel exposes the IPVS sysctls of the calling
// thread's network namespace.
const SysctlDir = "/proc/sys/net/ipv4/vs"

// Profile is the set of sync sysctls to apply; a nil field leaves the
// kernel's value alone.
type Profile struct {
	// Threshold is sync_threshold: [threshold, period] (kernel default
	// [3, 50]: first sync at the 3rd inbound packet, then every 50th).
	Threshold *[2]int
	// RefreshPeriod is sync_refresh_period (whole seconds; 0: off).
	RefreshPeriod *time.Duration
	// Retries is sync_retries (0..3): resends at RefreshPeriod / 8.
	Retries *int
	// SloppyTCP and SloppySCTP let a connection be created by any packet,
	// not only SYN / INIT: a safety net for flows the backup never heard of.
	SloppyTCP, SloppySCTP *bool
	// BackupOnly must be false when the backup role runs on the active
	// director too (both roles on both nodes): with it set, a node whose
	// backup daemon runs stops directing.
	BackupOnly *bool
}

// Setting is one sysctl as read or written.
type Setting struct {
	Name  string // e.g. "sync_threshold"
	Value string // as the kernel prints it, whitespace normalised ("3 50")
}

func (p Profile) settings() []Setting {
	var out []Setting
	b := func(v bool) string {
		if v {
			return "1"
		}
		return "0"
	}
	if p.Threshold != nil {
		out = append(out, Setting{"sync_threshold", fmt.Sprintf("%d %d", p.Threshold[0], p.Threshold[1])})
	}
	if p.RefreshPeriod != nil {
		out = append(out, Setting{"sync_refresh_period", strconv.Itoa(int(*p.RefreshPeriod / time.Second))})
	}
	if p.Retries != nil {
		out = append(out, Setting{"sync_retries", strconv.Itoa(*p.Retries)})
	}
	if p.SloppyTCP != nil {
		out = append(out, Setting{"sloppy_tcp", b(*p.SloppyTCP)})
	}
	if p.SloppySCTP != nil {
		out = append(out, Setting{"sloppy_sctp", b(*p.SloppySCTP)})
	}
	if p.BackupOnly != nil {
		out = append(out, Setting{"backup_only", b(*p.BackupOnly)})
	}
	return out
}

// ProfileNames are the sysctls a Profile can set, for status.
var ProfileNames = []string{"sync_threshold", "sync_refresh_period", "sync_retries", "sloppy_tcp", "sloppy_sctp", "backup_only"}

// ApplyProfile writes the profile's sysctls under dir (SysctlDir, or a
// test directory) and returns those whose value changed. It writes only
// what differs, and stops at the first error, naming the sysctl.
func ApplyProfile(dir string, p Profile) (changed []Setting, err error) {
	for _, s := range p.settings() {
		cur, err := ReadSysctl(dir, s.Name)
		if err != nil {
			return changed, err
		}
		if cur == s.Value {
			continue
		}
		if err := os.WriteFile(filepath.Join(dir, s.Name), []byte(s.Value+"\n"), 0o644); err != nil {
			return changed, fmt.Errorf("sysctl net.ipv4.vs.%s = %s: %w", s.Name, s.Value, err)
		}
		changed = append(changed, s)
	}
	return changed, nil
}

// ReadSysctl reads one sysctl under dir, whitespace normalised.
func ReadSysctl(dir, name string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, name))
	if errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("sysctl net.ipv4.vs.%s: not there (is ip_vs loaded in this network namespace?): %w", name, err)
	}
	if err != nil {
		return "", fmt.Errorf("sysctl net.ipv4.vs.%s: %w", name, err)
	}
	return strings.Join(strings.Fields(string(b)), " "), nil
}

// ReadProfile reads every sysctl of ProfileNames (for status); missing
// ones are left out.
func ReadProfile(dir string) []Setting {
	var out []Setting
	for _, n := range ProfileNames {
		if v, err := ReadSysctl(dir, n); err == nil {
			out = append(out, Setting{n, v})
		}
	}
	return out
}

// Reconcile brings the running sync daemons to want: a role running with
// other settings is restarted, a missing one started, one not wanted
// stopped. Roles already as wanted are left alone (restarting a master
// would drop its queued sync messages). It returns what it did.
func Reconcile(d *Daemons, want []DaemonConfig) (did []string, err error) {
	running, err := d.List()
	if err != nil {
		return nil, err
	}
	have := map[Role]DaemonConfig{}
	for _, r := range running {
		have[r.Role] = r
	}
	wanted := map[Role]bool{}
	for _, w := range want {
		wanted[w.Role] = true
		if cur, ok := have[w.Role]; ok {
			if sameDaemon(cur, w) {
				continue
			}
			if err := d.Stop(w.Role); err != nil {
				return did, err
			}
			did = append(did, "stopped "+cur.String()+" (settings differ)")
		}
		if err := d.Start(w); err != nil {
			return did, err
		}
		did = append(did, "started "+w.String())
	}
	for _, r := range running {
		if !wanted[r.Role] {
			if err := d.Stop(r.Role); err != nil {
				return did, err
			}
			did = append(did, "stopped "+r.String())
		}
	}
	return did, nil
}

// sameDaemon compares a running daemon with a wanted one; zero fields of
// the wanted one mean "the kernel's default" and match whatever the
// kernel chose.
func sameDaemon(cur, want DaemonConfig) bool {
	if cur.Interface != want.Interface || cur.SyncID != want.SyncID {
		return false
	}
	if want.MaxLen != 0 && cur.MaxLen != want.MaxLen {
		return false
	}
	if want.Group.IsValid() && cur.Group.IsValid() && cur.Group != want.Group {
		return false
	}
	if want.Port != 0 && cur.Port != 0 && cur.Port != want.Port {
		return false
	}
	if want.TTL != 0 && cur.TTL != 0 && cur.TTL != want.TTL {
		return false
	}
	return true
}

// ConnTable is the kernel's IPVS connection table of this network
// namespace (ipvsadm -Lnc reads it).
const ConnTable = "/proc/net/ip_vs_conn"

// CountConns counts the entries of the connection table at path (its
// lines less the header). A kernel without IPVS has no table: 0.
func CountConns(path string) (uint64, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var n uint64
	buf := make([]byte, 64<<10)
	for {
		k, err := f.Read(buf)
		n += uint64(bytes.Count(buf[:k], []byte{'\n'}))
		if err == io.EOF {
			break
		}
		if err != nil {
			return 0, err
		}
	}
	if n > 0 {
		n-- // the header
	}
	return n, nil
}
