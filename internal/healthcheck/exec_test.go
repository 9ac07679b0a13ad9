package healthcheck

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// script writes an executable shell script and returns its path.
func script(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "check.sh")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestExecCheck(t *testing.T) {
	noLeak(t)
	const timeout = time.Second
	tests := []struct {
		name       string
		body       string
		args       []string
		dynamic    bool
		ok         bool
		detail     string
		wantWeight int // -1: none
	}{
		{"exit 0", "exit 0", nil, false, true, "exit 0", -1},
		{"exit 1", "echo 'backend says no' >&2; exit 1", nil, false, false, "exit 1: backend says no", -1},
		{"exit 7 without dynamic", "exit 7", nil, false, false, "exit 7", -1},
		{"dynamic exit 0", "exit 0", nil, true, true, "exit 0", -1},
		{"dynamic exit 1", "exit 1", nil, true, false, "exit 1", -1},
		{"dynamic exit 2: weight 0", "exit 2", nil, true, true, "exit 2: weight 0", 0},
		{"dynamic exit 7: weight 5", "exit 7", nil, true, true, "exit 7: weight 5", 5},
		{"dynamic exit 255: weight 253", "exit 255", nil, true, true, "weight 253", 253},
		{"environment", `test "$HADIRECTOR_CHECK_ADDR" = 192.0.2.7 && test "$HADIRECTOR_CHECK_PORT" = 8080 && test -z "$HOME"`, nil, false, true, "exit 0", -1},
		{"argv without a shell", `test "$1" = 'a b;$(x)' && test "$#" = 1`, []string{"a b;$(x)"}, false, true, "exit 0", -1},
		{"killed by a signal", "kill -USR1 $$", nil, false, false, "killed by signal user defined signal 1", -1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			spec := ExecSpec{
				Command: append([]string{script(t, tc.body)}, tc.args...),
				Dynamic: tc.dynamic,
				Addr:    netip.MustParseAddr("192.0.2.7"),
				Port:    8080,
			}
			res, took := runCheck(t, newChecker(t, spec, nil), timeout)
			wantResult(t, res, tc.ok, tc.detail)
			wantWithin(t, took, timeout)
			if tc.wantWeight < 0 && res.HasWeight {
				t.Errorf("weight %d; want none", res.Weight)
			}
			if tc.wantWeight >= 0 && (!res.HasWeight || res.Weight != tc.wantWeight) {
				t.Errorf("weight %d (has %v); want %d", res.Weight, res.HasWeight, tc.wantWeight)
			}
		})
	}
}

func TestExecSpecErrors(t *testing.T) {
	for _, s := range []ExecSpec{{}, {Command: []string{"check.sh"}}, {Command: []string{"bin/true"}}} {
		if _, err := s.NewChecker(nil); err == nil {
			t.Errorf("%q accepted", s.Command)
		}
	}
	res, _ := runCheck(t, newChecker(t, ExecSpec{Command: []string{"/nonexistent/check"}}, nil), time.Second)
	wantResult(t, res, false, "cannot start")
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// pid (comm) S ...: the state follows the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

func readPids(t *testing.T, path string) []int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("the script did not record its pids: %v", err)
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		n, err := strconv.Atoi(f)
		if err != nil {
			t.Fatal(err)
		}
		pids = append(pids, n)
	}
	return pids
}

func TestExecTimeoutKillsTheGroup(t *testing.T) {
	noLeak(t)
	const timeout = 600 * time.Millisecond
	for _, tc := range []struct {
		name string
		body string
	}{
		// Ignores SIGTERM (and so do its children, which inherit SIG_IGN),
		// forks a grandchild and a child, then hangs.
		{"ignores SIGTERM and forks", `trap '' TERM
sleep 30 &
echo $! >> "$PIDS"
(sleep 30 & echo $! >> "$PIDS"; wait) &
echo $! >> "$PIDS"
echo $$ >> "$PIDS"
wait`},
		// Exits at once, healthy, but leaves a background child behind.
		{"leaves a child behind", `sleep 30 &
echo $! >> "$PIDS"
exit 0`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pidFile := filepath.Join(t.TempDir(), "pids")
			body := "PIDS=" + pidFile + "\n" + tc.body
			res, took := runCheck(t, newChecker(t, ExecSpec{Command: []string{script(t, body)}}, nil), timeout)
			wantWithin(t, took, timeout)
			pids := readPids(t, pidFile)
			if len(pids) == 0 {
				t.Fatal("no pids recorded")
			}
			if strings.Contains(tc.name, "SIGTERM") {
				wantResult(t, res, false, "timeout after")
				if len(pids) != 4 {
					t.Errorf("recorded pids %v; want 4 (the script, two children, a grandchild)", pids)
				}
				if took < timeout-timeMargin {
					t.Errorf("returned after %v, before the timeout %v", took, timeout)
				}
			}
			// Orphans are reaped by init; give it a moment.
			waitFor(t, 2*time.Second, "the check's processes to be gone", func() bool {
				for _, p := range pids {
					if alive(p) {
						return false
					}
				}
				return true
			})
		})
	}
}

func TestExecCanceled(t *testing.T) {
	noLeak(t)
	c := newChecker(t, ExecSpec{Command: []string{script(t, "trap '' TERM; sleep 30")}}, nil)
	ctx, cancel := testContext(t)
	go func() { time.Sleep(100 * time.Millisecond); cancel() }()
	start := time.Now()
	res := c.Check(ctx)
	wantResult(t, res, false, "canceled")
	wantWithin(t, time.Since(start), 100*time.Millisecond)
}
