package netlab

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ownerRecord is the content of StateDir/<lab>.json.
type ownerRecord struct {
	PID       int       `json:"pid"`
	StartTime uint64    `json:"start_time"` // /proc/<pid>/stat field 22 (clock ticks after boot)
	PidNS     string    `json:"pid_ns"`     // readlink /proc/self/ns/pid of the owner
	BootID    string    `json:"boot_id"`
	Created   time.Time `json:"created"`
	Cmd       string    `json:"cmd,omitempty"` // for humans
}

func selfOwner() (ownerRecord, error) {
	pid := os.Getpid()
	st, _, err := procStat(pid)
	if err != nil {
		return ownerRecord{}, fmt.Errorf("netlab: %w", err)
	}
	pidns, _ := os.Readlink("/proc/self/ns/pid")
	return ownerRecord{
		PID:       pid,
		StartTime: st,
		PidNS:     pidns,
		BootID:    bootID(),
		Created:   time.Now().UTC(),
		Cmd:       strings.Join(os.Args, " "),
	}, nil
}

func bootID() string {
	b, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	return strings.TrimSpace(string(b))
}

// procStat returns the start time and state letter of pid.
func procStat(pid int) (start uint64, state byte, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	// comm (field 2) is in parentheses and may contain anything; fields
	// after the last ')' start with field 3 (state).
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0, 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	start, err = strconv.ParseUint(f[19], 10, 64) // field 22
	if err != nil {
		return 0, 0, fmt.Errorf("malformed /proc/%d/stat: %w", pid, err)
	}
	return start, f[0][0], nil
}

// alive reports whether the record's owner may still be running. When in
// doubt (another pid namespace) it says yes.
func (r ownerRecord) alive() bool {
	if r.BootID != "" && r.BootID != bootID() {
		return false // recorded before a reboot
	}
	if self, _ := os.Readlink("/proc/self/ns/pid"); r.PidNS != "" && self != "" && r.PidNS != self {
		return true // pid numbers are not comparable
	}
	if r.PID <= 0 {
		return false
	}
	start, state, err := procStat(r.PID)
	if err != nil {
		return !errors.Is(err, fs.ErrNotExist)
	}
	if state == 'Z' || state == 'X' {
		return false
	}
	return r.StartTime == 0 || start == r.StartTime // else: pid reused
}

// Sweep removes what crashed runs left behind: for every lab whose name
// starts with prefix ("" means every netlab lab) and whose recorded owner is
// no longer alive (gone, zombie, pid reused, or before a reboot), it
// SIGKILLs processes still inside the lab's namespaces, deletes the
// namespaces NetnsDir/<lab>-* and removes the state file. Labs of live
// owners, including other labs of the calling process, are left alone, as
// are namespaces for which no state file exists (netlab writes the state
// file before creating namespaces and removes it last, so it never leaves
// such namespaces itself). It returns the removed namespace names.
func Sweep(prefix string) ([]string, error) {
	ents, err := os.ReadDir(StateDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("netlab: sweep: %w", err)
	}
	var removed []string
	var errs []error
	for _, e := range ents {
		fn := e.Name()
		if strings.HasPrefix(fn, ".") && strings.HasSuffix(fn, ".tmp") {
			sweepTmp(fn, prefix)
			continue
		}
		lab, ok := strings.CutSuffix(fn, ".json")
		if !ok || !strings.HasPrefix(lab, prefix) {
			continue
		}
		statePath := filepath.Join(StateDir, fn)
		b, err := os.ReadFile(statePath)
		if errors.Is(err, fs.ErrNotExist) {
			continue // closed meanwhile
		}
		var rec ownerRecord
		if err == nil {
			err = json.Unmarshal(b, &rec)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("netlab: sweep: %s: %w", statePath, err))
			continue
		}
		if rec.alive() {
			continue
		}
		r, err := sweepLab(lab)
		removed = append(removed, r...)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if err := os.Remove(statePath); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("netlab: sweep: %w", err))
		}
	}
	return removed, errors.Join(errs...)
}

func sweepLab(lab string) ([]string, error) {
	ents, err := os.ReadDir(NetnsDir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("netlab: sweep: %w", err)
	}
	var names []string
	ids := map[nsID]bool{}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), lab+"-") {
			names = append(names, e.Name())
			if id, err := nsIDOfPath(filepath.Join(NetnsDir, e.Name())); err == nil {
				ids[id] = true
			}
		}
	}
	var errs []error
	if _, err := killProcsIn(ids); err != nil {
		errs = append(errs, err)
	}
	var removed []string
	for _, n := range names {
		if err := removeNamed(n); err != nil {
			errs = append(errs, err)
		} else {
			removed = append(removed, n)
		}
	}
	return removed, errors.Join(errs...)
}

// sweepTmp removes a claimState temporary ".<lab>.<pid>.tmp" whose writer
// is gone.
func sweepTmp(fn, prefix string) {
	s := strings.TrimSuffix(strings.TrimPrefix(fn, "."), ".tmp")
	i := strings.LastIndexByte(s, '.')
	if i < 0 || !strings.HasPrefix(s[:i], prefix) {
		return
	}
	pid, err := strconv.Atoi(s[i+1:])
	if err != nil {
		return
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); errors.Is(err, fs.ErrNotExist) {
		_ = os.Remove(filepath.Join(StateDir, fn))
	}
}

// killProcsIn SIGKILLs every process (other than this one) whose main
// thread is in one of the namespaces ids.
func killProcsIn(ids map[nsID]bool) ([]int, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("netlab: scan /proc: %w", err)
	}
	self := os.Getpid()
	var killed []int
	var errs []error
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		id, err := nsIDOfPath(fmt.Sprintf("/proc/%d/ns/net", pid))
		if err != nil || !ids[id] {
			continue // gone, kernel thread, or elsewhere
		}
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			errs = append(errs, fmt.Errorf("netlab: kill %d: %w", pid, err))
			continue
		}
		killed = append(killed, pid)
	}
	return killed, errors.Join(errs...)
}
