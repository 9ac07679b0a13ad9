package alert

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The hook sees exactly keepalived's argv and exactly our environment:
// /proc/$$/cmdline and /proc/$$/environ are what execve got (the kernel puts
// the interpreter and the script path first for a #! script).
func TestArgsAndEnv(t *testing.T) {
	// Secrets in the daemon's environment must not reach a hook.
	t.Setenv("AWS_SECRET_ACCESS_KEY", "hunter2")
	t.Setenv("HADIRECTOR_LEAK", "inherited")

	at := time.Date(2026, 11, 21, 5, 29, 23, 120000000, time.FixedZone("CET", 3600))
	cases := []struct {
		name     string
		args     []string // Hook.Args
		ev       Event
		wantArgs []string // after the script path
		wantEnv  []string
	}{
		{
			name: "instance",
			ev: Event{Kind: KindInstance, Name: "VI_1", State: StateMaster, Priority: 150, At: at,
				Cluster: "lab", Node: "lb1", Reason: "master down timer expired",
				Extra: map[string]string{"vips": "10.77.0.100/24 10.77.0.101/24"}},
			wantArgs: []string{"INSTANCE", "VI_1", "MASTER", "150"},
			wantEnv: []string{
				"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
				"HADIRECTOR_TYPE=INSTANCE",
				"HADIRECTOR_NAME=VI_1",
				"HADIRECTOR_STATE=MASTER",
				"HADIRECTOR_PRIORITY=150",
				"HADIRECTOR_CLUSTER=lab",
				"HADIRECTOR_NODE=lb1",
				"HADIRECTOR_REASON=master down timer expired",
				"HADIRECTOR_TIME=2026-11-21T04:29:23.120000000Z",
				"HADIRECTOR_VIPS=10.77.0.100/24 10.77.0.101/24",
			},
		},
		{
			// keepalived #600: arguments are argv elements, never re-split
			// or re-quoted by a shell.
			name: "group with leading args and a hostile name",
			args: []string{"--from", "hadirector", ""},
			ev: Event{Kind: KindGroup, Name: `G 1 "q" $HOME;rm -rf /`, State: StateBackup, At: at,
				Cluster: "c", Node: "n", Reason: "line one\nline two"},
			wantArgs: []string{"--from", "hadirector", "", "GROUP", `G 1 "q" $HOME;rm -rf /`, "BACKUP", "0"},
			wantEnv: []string{
				"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
				"HADIRECTOR_TYPE=GROUP",
				`HADIRECTOR_NAME=G 1 "q" $HOME;rm -rf /`,
				"HADIRECTOR_STATE=BACKUP",
				"HADIRECTOR_PRIORITY=0",
				"HADIRECTOR_CLUSTER=c",
				"HADIRECTOR_NODE=n",
				"HADIRECTOR_REASON=line one\nline two",
				"HADIRECTOR_TIME=2026-11-21T04:29:23.120000000Z",
			},
		},
		{
			name: "extra keys are normalised and cannot replace fixed ones",
			ev: Event{Kind: KindInstance, Name: "a\x00b", State: StateStop, Priority: 255, At: at,
				Extra: map[string]string{"state": "EVIL", "path": "/evil", "my-key.x": "v\x00w", "": "x", "Zz": ""}},
			wantArgs: []string{"INSTANCE", "ab", "STOP", "255"},
			wantEnv: []string{
				"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
				"HADIRECTOR_TYPE=INSTANCE",
				"HADIRECTOR_NAME=ab",
				"HADIRECTOR_STATE=STOP",
				"HADIRECTOR_PRIORITY=255",
				"HADIRECTOR_CLUSTER=",
				"HADIRECTOR_NODE=",
				"HADIRECTOR_REASON=",
				"HADIRECTOR_TIME=2026-11-21T04:29:23.120000000Z",
				"HADIRECTOR_ZZ=",
				"HADIRECTOR_MY_KEY_X=vw",
				"HADIRECTOR_PATH=/evil",
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			out := filepath.Join(dir, "out")
			hook := script(t, dir, "notify.sh", fmt.Sprintf(
				"cat /proc/$$/cmdline > %[1]s.args\ncat /proc/$$/environ > %[1]s.env\npwd > %[1]s.cwd\n", out))
			h := newHarness(t, RunnerConfig{})
			h.Notify(Hook{Path: hook, Args: tc.args, Timeout: 5 * time.Second}, tc.ev)
			if err := h.close(t, 10*time.Second); err != nil {
				t.Fatal(err)
			}
			if s := h.Stats(); s.Succeeded != 1 || s.Run != 1 {
				t.Fatalf("stats %+v, want one successful run", s)
			}
			argv := strings.Split(strings.TrimSuffix(readFile(t, out+".args"), "\x00"), "\x00")
			if want := append([]string{"/bin/sh", hook}, tc.wantArgs...); !slices.Equal(argv, want) {
				t.Errorf("argv\n got %q\nwant %q", argv, want)
			}
			env := strings.Split(strings.TrimSuffix(readFile(t, out+".env"), "\x00"), "\x00")
			// Fixed variables in order, then Extra sorted by key.
			if !slices.Equal(env, tc.wantEnv) {
				t.Errorf("environment\n got %q\nwant %q", env, tc.wantEnv)
			}
			if cwd := strings.TrimSpace(readFile(t, out+".cwd")); cwd != "/" {
				t.Errorf("working directory %q, want /", cwd)
			}
		})
	}
}

// At its timeout a hook's whole process group gets SIGTERM, then SIGKILL
// KillGrace later; nothing of it survives.
func TestTimeoutKillsTheGroup(t *testing.T) {
	const timeout = 300 * time.Millisecond
	const grace = time.Second
	cases := []struct {
		name string
		body string // $P: file for the leader's pid
		// needKill: the hook ignores SIGTERM, so it lasts the grace too.
		needKill bool
	}{
		{"sleeps", `echo $$ > "$P"; echo hanging >&2; sleep 30`, false},
		{"forks a child and waits", `echo $$ > "$P"; echo hanging >&2; sleep 30 & wait`, false},
		{"child ignores SIGTERM", `echo $$ > "$P"; echo hanging >&2; (trap '' TERM; exec sleep 30) & wait`, false},
		{"ignores SIGTERM", `echo $$ > "$P"; echo hanging >&2; trap '' TERM; sleep 30 & wait; sleep 30`, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			pidFile := filepath.Join(dir, "pid")
			hook := script(t, dir, "hang.sh", "P="+pidFile+"\n"+tc.body+"\n")
			h := newHarness(t, RunnerConfig{KillGrace: grace})
			start := time.Now()
			h.Notify(Hook{Path: hook, Timeout: timeout}, Event{Kind: KindInstance, Name: "VI_1", State: StateMaster})
			pgid := readPid(t, pidFile)
			waitFor(t, 10*time.Second, "the run to end", func() bool { return h.Stats().TimedOut == 1 })
			took := time.Since(start)
			// SIGTERM ends the others before SIGKILL would be due; the one
			// that ignores it lasts until SIGKILL (plus scheduling slack).
			limit := timeout + grace
			if tc.needKill {
				limit += 1500 * time.Millisecond
				if took < timeout+grace {
					t.Errorf("a hook that ignores SIGTERM ended after %v, before timeout+grace", took)
				}
			}
			if took >= limit {
				t.Errorf("run ended after %v, want less than %v", took, limit)
			}
			t.Logf("timeout %v, run ended after %v", timeout, took)
			if m := groupMembers(t, pgid); len(m) != 0 {
				t.Errorf("processes of the hook's group survive: %v", m)
			}
			if got := h.log.lines("level=WARN", "timed out", "hanging"); len(got) != 1 {
				t.Errorf("want one warning with the stderr tail, got %q", got)
			}
			if s := h.Stats(); s.Run != 1 || s.TimedOut != 1 || s.Succeeded+s.Failed+s.Killed+s.StartErrors != 0 {
				t.Errorf("stats %+v", s)
			}
		})
	}
}

// A run ends when the hook exits; what it left in its group is killed, so
// the next event of its lane cannot overlap it. A process that left the
// group (setsid) is not tracked; the runner stops waiting for its output.
func TestLeftoversAfterExit(t *testing.T) {
	cases := []struct {
		name    string
		body    string
		killed  bool   // the left process is killed by the runner
		logWant string // a log line to expect
	}{
		{"background child in the group", `sleep 30 & echo $! > "$P"; exit 0`, true, "hook ran"},
		{"child that left the group", `export P; setsid sh -c 'echo $$ > "$P"; exec sleep 30' &
while [ ! -s "$P" ]; do sleep 0.01; done; exit 0`, false, "output stayed open"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			pidFile := filepath.Join(dir, "pid")
			hook := script(t, dir, "leave.sh", "P="+pidFile+"\n"+tc.body+"\n")
			h := newHarness(t, RunnerConfig{KillGrace: 500 * time.Millisecond})
			start := time.Now()
			h.Notify(Hook{Path: hook, Timeout: 20 * time.Second}, Event{Kind: KindInstance, Name: "VI_1", State: StateMaster})
			waitFor(t, 10*time.Second, "the run to end", func() bool { return h.Stats().Succeeded == 1 })
			child := readPid(t, pidFile)
			t.Cleanup(func() { _ = syscall.Kill(child, syscall.SIGKILL) })
			if took := time.Since(start); took > 5*time.Second {
				t.Errorf("the run lasted %v: it waited for the left process", took)
			}
			if tc.killed {
				waitFor(t, 2*time.Second, "the left child to be killed", func() bool { return !processAlive(child) })
			} else if !processAlive(child) {
				t.Errorf("the process that left the group was killed; it is not the runner's")
			}
			if len(h.log.lines(tc.logWant)) != 1 {
				t.Errorf("want one log line with %q", tc.logWant)
			}
		})
	}
}

// Notify returns at once whatever the hooks do; the bound drops the oldest
// waiting events, counts them and warns once per burst.
func TestNotifyNeverBlocks(t *testing.T) {
	cases := []struct {
		name    string
		names   int // lanes the 1000 events are spread over
		running int // runs in progress while the gate is shut
	}{
		{"one name", 1, 1},
		{"ten names", 10, 4},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			gate, ran := filepath.Join(dir, "gate"), filepath.Join(dir, "ran")
			hook := script(t, dir, "gated.sh", fmt.Sprintf(
				"while [ ! -e %s ]; do sleep 0.01; done\necho \"$2 $HADIRECTOR_SEQ\" >> %s\n", gate, ran))
			h := newHarness(t, RunnerConfig{QueueLen: 64, MaxConcurrent: 4})
			const n = 1000
			start := time.Now()
			for i := range n {
				h.Notify(Hook{Path: hook, Timeout: 30 * time.Second}, Event{
					Kind: KindInstance, Name: "VI_" + strconv.Itoa(i%tc.names), State: StateMaster,
					Extra: map[string]string{"seq": strconv.Itoa(i)}})
			}
			took := time.Since(start)
			// The hooks are shut behind the gate: if Notify waited for
			// them, this would not return at all. The bound is that
			// structural fact with room for a slow machine, not a
			// benchmark (see BenchmarkNotify).
			t.Logf("%d Notify calls took %v (%v each)", n, took, took/n)
			if took > 2*time.Second {
				t.Fatalf("%d Notify calls took %v", n, took)
			}
			s := h.Stats()
			wantDropped := uint64(n - 64 - tc.running)
			if s.Queued != n || s.Pending != 64 || s.Running != tc.running || s.Dropped != wantDropped {
				t.Fatalf("stats %+v, want Queued %d Pending 64 Running %d Dropped %d", s, n, tc.running, wantDropped)
			}
			if got := h.log.lines("level=WARN", "queue full"); len(got) != 1 {
				t.Errorf("want one warning for the drop burst, got %d", len(got))
			}
			if err := os.WriteFile(gate, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := h.close(t, 30*time.Second); err != nil {
				t.Fatal(err)
			}
			if got := h.log.lines("level=WARN", "queue empty again", "dropped="+strconv.Itoa(int(wantDropped))); len(got) != 1 {
				t.Errorf("want one summary of the burst, got %q", got)
			}
			// The survivors are the first events (running when the queue
			// filled) and the newest 64, each lane in order.
			lastSeq := map[string]int{}
			count := 0
			for _, l := range strings.Split(strings.TrimSpace(readFile(t, ran)), "\n") {
				var name string
				var seq int
				if _, err := fmt.Sscan(l, &name, &seq); err != nil {
					t.Fatalf("line %q: %v", l, err)
				}
				count++
				if prev, ok := lastSeq[name]; ok && seq <= prev {
					t.Errorf("%s: event %d ran after %d", name, seq, prev)
				}
				lastSeq[name] = seq
				if seq >= tc.running && seq < n-64 {
					t.Errorf("event %d ran, but should have been dropped", seq)
				}
			}
			if count != 64+tc.running {
				t.Errorf("%d runs, want %d", count, 64+tc.running)
			}
		})
	}
}

// Events of one name run one at a time, in order, each after the previous
// ended (keepalived #1991). No coalescing: every transition runs.
func TestPerNameOrder(t *testing.T) {
	dir := t.TempDir()
	logf := filepath.Join(dir, "log")
	hook := script(t, dir, "slow.sh", fmt.Sprintf(
		"echo \"start $3 $(date +%%s%%N)\" >> %[1]s\nsleep 0.2\necho \"end $3 $(date +%%s%%N)\" >> %[1]s\n", logf))
	h := newHarness(t, RunnerConfig{MaxConcurrent: 4})
	states := []string{StateMaster, StateBackup, StateMaster, StateFault}
	for _, s := range states {
		h.Notify(Hook{Path: hook, Timeout: 10 * time.Second}, Event{Kind: KindInstance, Name: "VI_1", State: s})
	}
	if err := h.close(t, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(readFile(t, logf)), "\n")
	if len(lines) != 2*len(states) {
		t.Fatalf("log:\n%s", strings.Join(lines, "\n"))
	}
	var prevEnd int64
	for i, s := range states {
		var w1, w2, s1, s2 string
		var t1, t2 int64
		fmt.Sscan(lines[2*i], &w1, &s1, &t1)
		fmt.Sscan(lines[2*i+1], &w2, &s2, &t2)
		if w1 != "start" || w2 != "end" || s1 != s || s2 != s {
			t.Fatalf("run %d: want start/end of %s, log:\n%s", i, s, strings.Join(lines, "\n"))
		}
		if t1 < prevEnd {
			t.Errorf("run %d (%s) started %v before the previous ended", i, s, time.Duration(prevEnd-t1))
		}
		prevEnd = t2
	}
}

// Different names run at the same time, up to MaxConcurrent: each hook waits
// (a bounded time) for the other to have started.
func TestNamesRunConcurrently(t *testing.T) {
	cases := []struct {
		maxConcurrent int
		succeeded     uint64 // with one slot, the first waits in vain
	}{
		{2, 2},
		{1, 1},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprint("max ", tc.maxConcurrent), func(t *testing.T) {
			dir := t.TempDir()
			// $1 is Hook.Args[0]; $3 the name.
			hook := script(t, dir, "meet.sh", fmt.Sprintf(`D=%s
touch "$D/$3"
if [ "$3" = a ]; then o=b; else o=a; fi
i=0
while [ ! -e "$D/$o" ]; do
	i=$((i+1)); [ $i -gt "$1" ] && exit 1
	sleep 0.01
done
`, dir))
			h := newHarness(t, RunnerConfig{MaxConcurrent: tc.maxConcurrent})
			for _, name := range []string{"a", "b"} {
				h.Notify(Hook{Path: hook, Args: []string{"100"}, Timeout: 10 * time.Second},
					Event{Kind: KindInstance, Name: name, State: StateMaster})
			}
			if err := h.close(t, 20*time.Second); err != nil {
				t.Fatal(err)
			}
			if s := h.Stats(); s.Succeeded != tc.succeeded || s.Succeeded+s.Failed != 2 {
				t.Errorf("stats %+v, want %d succeeded of 2", s, tc.succeeded)
			}
		})
	}
}

func TestClose(t *testing.T) {
	t.Run("waits for running and queued hooks", func(t *testing.T) {
		dir := t.TempDir()
		out := filepath.Join(dir, "out")
		hook := script(t, dir, "slow.sh", fmt.Sprintf("sleep 0.3; echo $3 >> %s\n", out))
		h := newHarness(t, RunnerConfig{})
		for _, s := range []string{StateBackup, StateMaster, StateStop} {
			h.Notify(Hook{Path: hook}, Event{Kind: KindInstance, Name: "VI_1", State: s})
		}
		if err := h.close(t, 20*time.Second); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if got := readFile(t, out); got != "BACKUP\nMASTER\nSTOP\n" {
			t.Errorf("runs: %q", got)
		}
		if s := h.Stats(); s.Succeeded != 3 || s.Dropped != 0 {
			t.Errorf("stats %+v", s)
		}
		// After Close, events are counted and dropped.
		h.Notify(Hook{Path: hook}, Event{Kind: KindInstance, Name: "VI_1", State: StateMaster})
		h.Notify(Hook{Path: hook}, Event{Kind: KindInstance, Name: "VI_1", State: StateBackup})
		if s := h.Stats(); s.Dropped != 2 || s.Run != 3 {
			t.Errorf("after Close: stats %+v", s)
		}
		if got := h.log.lines("runner is closed"); len(got) != 1 {
			t.Errorf("want one log line for events after Close, got %q", got)
		}
	})
	t.Run("kills when its context ends", func(t *testing.T) {
		dir := t.TempDir()
		pidFile := filepath.Join(dir, "pid")
		hook := script(t, dir, "hang.sh", fmt.Sprintf("echo $$ > %s; sleep 30 & wait\n", pidFile))
		h := newHarness(t, RunnerConfig{})
		for _, s := range []string{StateMaster, StateBackup, StateFault} {
			h.Notify(Hook{Path: hook, Timeout: time.Minute}, Event{Kind: KindInstance, Name: "VI_1", State: s})
		}
		pgid := readPid(t, pidFile)
		start := time.Now()
		err := h.close(t, 300*time.Millisecond)
		took := time.Since(start)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Close: %v, want DeadlineExceeded", err)
		}
		t.Logf("Close returned after %v: %v", took, err)
		if took > 300*time.Millisecond+2*time.Second {
			t.Errorf("Close took %v", took)
		}
		if m := groupMembers(t, pgid); len(m) != 0 {
			t.Errorf("the hook's processes survive Close: %v", m)
		}
		if s := h.Stats(); s.Killed != 1 || s.Dropped != 2 || s.Run != 1 {
			t.Errorf("stats %+v, want 1 killed, 2 dropped", s)
		}
	})
}

// A hook that cannot start is counted and logged clearly; the lane goes on.
func TestStartErrors(t *testing.T) {
	dir := t.TempDir()
	good := script(t, dir, "good.sh", "exit 0\n")
	noExec := filepath.Join(dir, "noexec.sh")
	noShebang := filepath.Join(dir, "noshebang")
	for p, mode := range map[string]os.FileMode{noExec: 0o644, noShebang: 0o755} {
		if err := os.WriteFile(p, []byte("echo hi\n"), mode); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct{ name, path, logWant string }{
		{"missing", filepath.Join(dir, "missing.sh"), "no such file"},
		{"not executable", noExec, "permission denied"},
		{"directory", dir, "permission denied"},
		{"no shebang", noShebang, "exec format error"},
		{"relative", "good.sh", "not absolute"},
		{"empty", "", "not absolute"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, RunnerConfig{})
			h.Notify(Hook{Path: tc.path}, Event{Kind: KindInstance, Name: "VI_1", State: StateMaster})
			h.Notify(Hook{Path: good}, Event{Kind: KindInstance, Name: "VI_1", State: StateBackup})
			if err := h.close(t, 10*time.Second); err != nil {
				t.Fatal(err)
			}
			if s := h.Stats(); s.StartErrors != 1 || s.Succeeded != 1 || s.Run != 2 {
				t.Errorf("stats %+v", s)
			}
			if got := h.log.lines("level=ERROR", "cannot start hook", tc.logWant); len(got) != 1 {
				t.Errorf("want one error line with %q, log:\n%s", tc.logWant, h.log)
			}
		})
	}
}

func TestFailures(t *testing.T) {
	cases := []struct {
		name, body string
		logWant    []string
	}{
		{"exit code", "echo to-stdout; echo boom >&2; exit 3\n", []string{"level=WARN", "hook failed", "exit=3", "stderr=boom"}},
		{"killed by itself", "echo dying >&2; kill -9 $$\n", []string{"level=WARN", "hook failed", `exit="signal killed"`, "stderr=dying"}},
		{"long stderr is cut", "head -c 100000 /dev/zero | tr '\\0' x >&2; echo END >&2; exit 1\n",
			[]string{"level=WARN", "hook failed", "[95908 earlier bytes cut]", "xEND"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			hook := script(t, dir, "fail.sh", tc.body)
			h := newHarness(t, RunnerConfig{})
			h.Notify(Hook{Path: hook}, Event{Kind: KindInstance, Name: "VI_1", State: StateFault})
			if err := h.close(t, 10*time.Second); err != nil {
				t.Fatal(err)
			}
			if s := h.Stats(); s.Failed != 1 || s.Run != 1 {
				t.Errorf("stats %+v", s)
			}
			got := h.log.lines(tc.logWant...)
			if len(got) != 1 {
				t.Fatalf("want one line with %q, log:\n%s", tc.logWant, h.log)
			}
			if len(got[0]) > DefaultOutputLimit+1000 {
				t.Errorf("log line of %d bytes: output not bounded", len(got[0]))
			}
		})
	}
}

func TestSuccessIsLogged(t *testing.T) {
	dir := t.TempDir()
	hook := script(t, dir, "ok.sh", "echo fine; echo note >&2\n")
	h := newHarness(t, RunnerConfig{})
	h.Notify(Hook{Path: hook}, Event{Kind: KindInstance, Name: "VI_1", State: StateMaster, Priority: 150})
	if err := h.close(t, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	for _, want := range [][]string{
		{"level=INFO", "hook ran", "name=VI_1", "state=MASTER", "priority=150", "exit=0"},
		{"level=DEBUG", "hook stdout", "stdout=fine"},
		{"level=DEBUG", "hook stderr", "stderr=note"},
	} {
		if len(h.log.lines(want...)) != 1 {
			t.Errorf("want one line with %q", want)
		}
	}
}

func BenchmarkNotify(b *testing.B) {
	dir := b.TempDir()
	gate := filepath.Join(dir, "gate")
	p := filepath.Join(dir, "gated.sh")
	if err := os.WriteFile(p, []byte(fmt.Sprintf("#!/bin/sh\nwhile [ ! -e %s ]; do sleep 0.01; done\n", gate)), 0o755); err != nil {
		b.Fatal(err)
	}
	r := NewRunner(RunnerConfig{}, nil)
	hook := Hook{Path: p}
	ev := Event{Kind: KindInstance, Name: "VI_1", State: StateMaster}
	b.ResetTimer()
	for b.Loop() {
		r.Notify(hook, ev)
	}
	b.StopTimer()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_ = r.Close(ctx)
}
