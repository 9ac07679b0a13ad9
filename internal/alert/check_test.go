package alert

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestCheckHook(t *testing.T) {
	root := t.TempDir() // 0700, ours, under /tmp (1777: sticky)
	mkdir := func(name string, mode os.FileMode) string {
		p := filepath.Join(root, name)
		if err := os.Mkdir(p, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil { // past the umask
			t.Fatal(err)
		}
		return p
	}
	file := func(dir, name string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("#!/bin/sh\nexit 0\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	symlink := func(target, name string) string {
		p := filepath.Join(root, name)
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
		return p
	}

	good := file(root, "good.sh", 0o755)
	ownerOnly := file(root, "owner-only.sh", 0o700)
	groupW := file(root, "group-w.sh", 0o775)
	worldW := file(root, "world-w.sh", 0o757)
	noExec := file(root, "no-exec.sh", 0o644)
	openDir := mkdir("open", 0o777)
	inOpen := file(openDir, "hook.sh", 0o755)
	stickyDir := mkdir("sticky", 0o777|os.ModeSticky)
	inSticky := file(stickyDir, "hook.sh", 0o755)
	groupDir := mkdir("group", 0o775)
	inGroup := file(groupDir, "hook.sh", 0o755)
	fifo := filepath.Join(root, "fifo")
	if err := syscall.Mkfifo(fifo, 0o755); err != nil {
		t.Fatal(err)
	}

	type tc struct {
		name     string
		path     string
		insecure bool   // wraps ErrInsecureHook
		notExist bool   // wraps fs.ErrNotExist
		msg      string // in the error; "" means no error
	}
	cases := []tc{
		{name: "executable, not writable by others", path: good},
		{name: "mode 0700", path: ownerOnly},
		{name: "in a sticky world-writable directory", path: inSticky},
		{name: "symlink to a good hook", path: symlink(good, "link-good")},
		{name: "unclean but absolute path", path: root + "//./open/../good.sh"},
		{name: "empty", path: "", msg: "empty path"},
		{name: "relative", path: "hooks/notify.sh", msg: "not an absolute path"},
		{name: "missing", path: filepath.Join(root, "missing.sh"), notExist: true, msg: "no such file"},
		{name: "missing directory", path: filepath.Join(root, "nodir", "x.sh"), notExist: true, msg: "no such file"},
		{name: "directory", path: openDir, msg: "not a regular file (a directory)"},
		{name: "named pipe", path: fifo, msg: "not a regular file (a named pipe)"},
		{name: "not executable", path: noExec, msg: "not executable (mode 0644); fix: chmod 0755"},
		{name: "group-writable", path: groupW, insecure: true, msg: "writable by group or others (mode 0775)"},
		{name: "world-writable", path: worldW, insecure: true, msg: "fix: chmod go-w " + worldW},
		{name: "symlink to a group-writable hook", path: symlink(groupW, "link-bad"), insecure: true, msg: "-> " + groupW},
		{name: "in a world-writable directory", path: inOpen, insecure: true, msg: "directory " + openDir + " is writable by group or others (mode 0777) without the sticky bit"},
		{name: "in a group-writable directory", path: inGroup, insecure: true, msg: "directory " + groupDir},
		{name: "through a symlinked open directory", path: filepath.Join(symlink(openDir, "link-open"), "hook.sh"), insecure: true, msg: "directory " + openDir},
	}
	if os.Geteuid() == 0 {
		// Owners other than root or us (needs root to chown).
		strangerFile := file(root, "stranger.sh", 0o755)
		strangerDir := mkdir("stranger", 0o755)
		inStranger := file(strangerDir, "hook.sh", 0o755)
		strangerLink := symlink(good, "stranger-link")
		for _, p := range []string{strangerFile, strangerDir, strangerLink} {
			if err := os.Lchown(p, 65534, 65534); err != nil {
				t.Fatal(err)
			}
		}
		cases = append(cases,
			tc{name: "owned by another user", path: strangerFile, insecure: true, msg: "owned by uid 65534"},
			tc{name: "in a directory owned by another user", path: inStranger, insecure: true, msg: strangerDir + " is owned by uid 65534"},
			tc{name: "symlink owned by another user", path: strangerLink, insecure: true, msg: strangerLink + " is owned by uid 65534"},
		)
	} else {
		t.Log("not root: owner cases not run")
	}

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := CheckHook(c.path)
			if c.msg == "" {
				if err != nil {
					t.Fatalf("CheckHook(%q): %v", c.path, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("CheckHook(%q): no error, want %q", c.path, c.msg)
			}
			if !strings.Contains(err.Error(), c.msg) {
				t.Errorf("CheckHook(%q) = %q, want it to contain %q", c.path, err, c.msg)
			}
			if got := errors.Is(err, ErrInsecureHook); got != c.insecure {
				t.Errorf("errors.Is(err, ErrInsecureHook) = %v: %v", got, err)
			}
			if got := errors.Is(err, fs.ErrNotExist); got != c.notExist {
				t.Errorf("errors.Is(err, fs.ErrNotExist) = %v: %v", got, err)
			}
			t.Log(err)
		})
	}
}

func TestTailBuffer(t *testing.T) {
	cases := []struct {
		name   string
		max    int
		writes []string
		want   string
	}{
		{"empty", 8, nil, ""},
		{"fits", 8, []string{"ab", "cd\n"}, "abcd"},
		{"exactly full", 4, []string{"abcd"}, "abcd"},
		{"one big write", 4, []string{"abcdefgh"}, "[4 earlier bytes cut] efgh"},
		{"small writes roll", 4, []string{"abc", "def", "g"}, "[3 earlier bytes cut] defg"},
		{"cut inside a rune", 4, []string{"xé", "abc"}, "[2 earlier bytes cut] \uFFFDabc"},
		{"limit zero keeps nothing", 0, []string{"abc"}, "[3 earlier bytes cut] "},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := newTail(c.max)
			for _, w := range c.writes {
				if n, err := b.Write([]byte(w)); n != len(w) || err != nil {
					t.Fatalf("Write = %d, %v", n, err)
				}
			}
			if got := b.String(); got != c.want {
				t.Errorf("got %q, want %q", got, c.want)
			}
			if len(b.buf) > c.max {
				t.Errorf("kept %d bytes, max %d", len(b.buf), c.max)
			}
		})
	}
}
