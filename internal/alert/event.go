package alert

import (
	"slices"
	"strconv"
	"strings"
	"time"
)

// Keepalived's words for TYPE and STATE.
const (
	KindInstance = "INSTANCE"
	KindGroup    = "GROUP"
	// A real server's health (NAME is "SERVICE REAL") and a virtual
	// service's quorum (NAME is the service); STATE is UP or DOWN and
	// PRIORITY the weight (a service's: its live weight).
	KindRealServer = "REAL_SERVER"
	KindService    = "SERVICE"

	StateMaster = "MASTER"
	StateBackup = "BACKUP"
	StateFault  = "FAULT"
	StateStop   = "STOP"
	StateUp     = "UP"
	StateDown   = "DOWN"
)

// HookPATH is the only PATH a hook sees: systemd's default for services.
const HookPATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// timeLayout is RFC 3339 with a fixed nine-digit fraction, so that scripts
// can compare or cut it without parsing.
const timeLayout = "2006-01-02T15:04:05.000000000Z07:00"

// Event is one transition to report.
type Event struct {
	Kind     string // "INSTANCE" or "GROUP" (keepalived's TYPE), "REAL_SERVER", "SERVICE"
	Name     string // instance, group or service name; "SERVICE REAL" for a real server
	State    string // "MASTER", "BACKUP", "FAULT", "STOP" (keepalived's words); "UP", "DOWN"
	Priority int    // effective priority; 0 for a group, as keepalived passes
	At       time.Time
	Cluster  string
	Node     string
	Reason   string // why the transition happened
	// Extra becomes more variables: key "vips" gives HADIRECTOR_VIPS. Keys
	// are upper-cased and every byte outside [A-Z0-9_] becomes '_'. An empty
	// key, or one that would replace a fixed variable, is ignored.
	Extra map[string]string
}

// Hook is a program to run for an event.
type Hook struct {
	Path string   // absolute path of the program; run with no shell
	Args []string // optional arguments placed before TYPE NAME STATE PRIORITY
	// Timeout bounds a run; zero means RunnerConfig.DefaultTimeout.
	Timeout time.Duration
}

// argv is the hook's argument vector: keepalived's order,
// "script [its own args] {GROUP|INSTANCE} NAME {MASTER|BACKUP|FAULT|STOP} PRIO"
// (keepalived/vrrp/vrrp_notify.c, notify_script_exec).
func (h Hook) argv(e Event) []string {
	a := make([]string, 0, len(h.Args)+5)
	a = append(a, h.Path)
	for _, s := range h.Args {
		a = append(a, noNUL(s))
	}
	return append(a, noNUL(e.Kind), noNUL(e.Name), noNUL(e.State), strconv.Itoa(e.Priority))
}

// environ is the hook's whole environment: PATH, the fixed HADIRECTOR_
// variables, then Extra sorted by key. Nothing is inherited.
func (e Event) environ() []string {
	fixed := [...][2]string{
		{"HADIRECTOR_TYPE", e.Kind},
		{"HADIRECTOR_NAME", e.Name},
		{"HADIRECTOR_STATE", e.State},
		{"HADIRECTOR_PRIORITY", strconv.Itoa(e.Priority)},
		{"HADIRECTOR_CLUSTER", e.Cluster},
		{"HADIRECTOR_NODE", e.Node},
		{"HADIRECTOR_REASON", e.Reason},
		{"HADIRECTOR_TIME", e.At.UTC().Format(timeLayout)},
	}
	env := make([]string, 0, 1+len(fixed)+len(e.Extra))
	env = append(env, "PATH="+HookPATH)
	seen := map[string]bool{"PATH": true}
	for _, kv := range fixed {
		seen[kv[0]] = true
		env = append(env, kv[0]+"="+noNUL(kv[1]))
	}
	keys := make([]string, 0, len(e.Extra))
	for k := range e.Extra {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		name := "HADIRECTOR_" + envKey(k)
		if k == "" || seen[name] {
			continue
		}
		seen[name] = true
		env = append(env, name+"="+noNUL(e.Extra[k]))
	}
	return env
}

// envKey maps an Extra key to the variable-name suffix.
func envKey(k string) string {
	b := []byte(strings.ToUpper(k))
	for i, c := range b {
		if !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			b[i] = '_'
		}
	}
	return string(b)
}

// noNUL removes NUL bytes, which cannot cross execve (it would fail the
// whole run with EINVAL).
func noNUL(s string) string {
	if strings.IndexByte(s, 0) < 0 {
		return s
	}
	return strings.ReplaceAll(s, "\x00", "")
}
