package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hadirector/hadirector/internal/control"
	"github.com/hadirector/hadirector/internal/ipvs"
)

// The tests run the real binary, as an operator or systemd would.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "hadirector-cmd-test")
	if err != nil {
		panic(err)
	}
	os.Chmod(dir, 0o755) // TestUnreadableConfig runs the binary as nobody
	binary = filepath.Join(dir, "hadirector")
	if out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building hadirector: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// loConfig is a valid one-node cluster whose node lives on the loopback
// interface, so the daemon's host checks pass on any machine. It has no
// VRRP instance (that needs raw sockets and a real interface): elections
// are tested in namespaces (integration/).
const loConfig = `
[cluster]
name = "test"

[[node]]
name = "solo"
priority = 120

[[node.interface]]
name = "lo"
addresses = ["127.0.0.1/8"]
`

func writeFile(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

type result struct {
	code           int
	stdout, stderr string
}

func runBinary(t *testing.T, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("running %v: %v", args, err)
	}
	return result{code, out.String(), errb.String()}
}

// TestBadInput: each bad input is a clear message and exit code 1, and
// `run` starts nothing (its control socket never appears).
func TestBadInput(t *testing.T) {
	dir := t.TempDir()
	good := writeFile(t, dir, "good.toml", loConfig)
	cases := []struct {
		name   string
		args   []string // after the command and --config
		config string
		want   string
	}{
		{"not TOML", nil, writeFile(t, dir, "junk.toml", "\x00\x01 this is { not toml\n"), "junk.toml:1:1: not valid TOML"},
		{"empty file", nil, writeFile(t, dir, "empty.toml", "\n\n"), "empty.toml: the file is empty"},
		{"unreadable (a directory)", nil, dir, "cannot read the config: is a directory"},
		{"missing file", nil, filepath.Join(dir, "absent.toml"), "cannot read the config: no such file or directory"},
		{"unknown --node", []string{"--node", "ghost"}, good, `node "ghost" (from --node) is not in this cluster; its nodes are: solo`},
		{"unknown key at the top", nil, writeFile(t, dir, "k1.toml", "verbose = true\n"+loConfig), "k1.toml:1:1: verbose: unknown key"},
		{"unknown key in a table", nil, writeFile(t, dir, "k2.toml", strings.Replace(loConfig, `name = "test"`, "name = \"test\"\nowner = \"ops\"", 1)), "k2.toml:4:1: cluster.owner: unknown key"},
		{"unknown key in an array table", nil, writeFile(t, dir, "k3.toml", strings.Replace(loConfig, "priority = 120", "priority = 120\nauth_pass = \"x\"", 1)), "k3.toml:8:1: node[0].auth_pass: unknown key"},
		{"unknown key in a nested table", nil, writeFile(t, dir, "k4.toml", strings.Replace(loConfig, `addresses = ["127.0.0.1/8"]`, "addresses = [\"127.0.0.1/8\"]\nmtu = 1500", 1)), "k4.toml:12:1: node[0].interface[0].mtu: unknown key"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, cmd := range []string{"check", "run"} {
				socket := filepath.Join(t.TempDir(), "ctl.sock")
				args := append([]string{cmd, "--config", tc.config}, tc.args...)
				if cmd == "run" {
					args = append(args, "--socket", socket)
				} else if tc.args == nil {
					args = append(args, "--node", "solo")
				}
				r := runBinary(t, nil, args...)
				if r.code != 1 {
					t.Errorf("%s: exit code %d, want 1\nstderr: %s", cmd, r.code, r.stderr)
				}
				if !strings.Contains(r.stderr, tc.want) {
					t.Errorf("%s: stderr does not say %q:\n%s", cmd, tc.want, r.stderr)
				}
				if _, err := os.Stat(socket); err == nil {
					t.Errorf("%s: a control socket was created: the daemon started", cmd)
				}
			}
		})
	}
}

func TestUsage(t *testing.T) {
	for _, args := range [][]string{{}, {"frobnicate"}, {"check", "--nope"}, {"check", "extra-arg"}, {"run", "--log-format", "xml"},
		{"lab", "explode"}, {"lab", "up", "extra"}, {"lab", "--conns"},
		{"lab", "--fail", "disk"}, {"lab", "fail", "disk"}, {"lab", "fail", "server", "extra"}, {"lab", "up", "--fail", "link"}} {
		if r := runBinary(t, nil, args...); r.code != 2 {
			t.Errorf("%v: exit code %d, want 2 (usage)\n%s", args, r.code, r.stderr)
		}
	}
	if r := runBinary(t, nil, "version"); r.code != 0 || !strings.HasPrefix(r.stdout, "hadirector ") {
		t.Errorf("version: %d %q", r.code, r.stdout)
	}
}

func TestCheckExample(t *testing.T) {
	r := runBinary(t, nil, "check", "--config", "../../etc/hadirector.toml")
	if r.code != 0 || !strings.Contains(r.stdout, "OK") {
		t.Fatalf("check etc/hadirector.toml: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := runBinary(t, nil, "check", "--config", "../../etc/hadirector.toml", "--node", "lb3"); r.code != 1 || !strings.Contains(r.stderr, "its nodes are: lb1, lb2") {
		t.Errorf("check --node lb3: exit %d, %s", r.code, r.stderr)
	}
}

// TestRunRefusesServicesWithoutIPVS: on a kernel without IPVS (this
// project's build machines), a config with virtual services is refused with
// a message that says so, instead of running and pretending.
func TestRunRefusesServicesWithoutIPVS(t *testing.T) {
	if os.Getenv("HADIRECTOR_VMTEST") == "1" || ipvs.Preflight() == nil {
		t.Skip("this kernel has IPVS; the refusal is for kernels without it")
	}
	dir := t.TempDir()
	cfg := writeFile(t, dir, "svc.toml", loConfig+"\n[[virtual_service]]\naddress = \"127.0.0.1:80\"\n[[virtual_service.real_server]]\naddress = \"127.0.0.2\"\n")
	socket := filepath.Join(dir, "ctl.sock")
	r := runBinary(t, nil, "run", "--config", cfg, "--node", "solo", "--socket", socket)
	if r.code != 1 || !strings.Contains(r.stderr, "configures 1 virtual services") || !strings.Contains(r.stderr, "the kernel has no IPVS") {
		t.Errorf("exit %d, stderr:\n%s", r.code, r.stderr)
	}
	if _, err := os.Stat(socket); err == nil {
		t.Error("the daemon started")
	}
}

// notifySocket is a stand-in for systemd's end of sd_notify: the same
// datagram socket protocol.
type notifySocket struct {
	conn *net.UnixConn
	path string
	msgs chan string
}

func newNotifySocket(t *testing.T) *notifySocket {
	path := filepath.Join(t.TempDir(), "notify.sock")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	n := &notifySocket{conn: c, path: path, msgs: make(chan string, 256)}
	go func() {
		buf := make([]byte, 4096)
		for {
			k, err := c.Read(buf)
			if err != nil {
				close(n.msgs)
				return
			}
			n.msgs <- string(buf[:k])
		}
	}()
	t.Cleanup(func() { c.Close() })
	return n
}

// expect waits for a message containing want and returns it.
func (n *notifySocket) expect(t *testing.T, want string) string {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case m, ok := <-n.msgs:
			if !ok {
				t.Fatalf("notify socket closed while waiting for %q", want)
			}
			if strings.Contains(m, want) {
				return m
			}
		case <-deadline:
			t.Fatalf("no %q from the daemon within 10s", want)
		}
	}
}

// syncBuffer is a bytes.Buffer safe for exec's copying goroutine and the
// test reading it at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func startDaemon(t *testing.T, env []string, args ...string) (*exec.Cmd, *syncBuffer) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), env...)
	logs := &syncBuffer{}
	cmd.Stderr = logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("daemon log:\n%s", logs.String())
		}
	})
	return cmd, logs
}

func status(t *testing.T, socket string) *control.Status {
	t.Helper()
	r := runBinary(t, nil, "status", "--json", "--socket", socket)
	if r.code != 0 {
		t.Fatalf("status: exit %d: %s", r.code, r.stderr)
	}
	var st control.Status
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatalf("status --json: %v\n%s", err, r.stdout)
	}
	return &st
}

// TestDaemonLifecycle runs the daemon under a stand-in for systemd: it
// reports READY, feeds the watchdog, reloads a good config (RELOADING then
// READY, change applied), refuses a bad one and keeps running the old, and
// stops cleanly on SIGTERM (STOPPING, exit 0, socket removed).
func TestDaemonLifecycle(t *testing.T) {
	dir := t.TempDir()
	cfgPath := writeFile(t, dir, "cluster.toml", loConfig)
	socket := filepath.Join(dir, "run", "ctl.sock")
	ns := newNotifySocket(t)
	env := []string{"NOTIFY_SOCKET=" + ns.path, "WATCHDOG_USEC=200000"}
	cmd, logs := startDaemon(t, env, "run", "--config", cfgPath, "--node", "solo", "--socket", socket, "--log-format", "json")
	ns.expect(t, "READY=1")
	ns.expect(t, "WATCHDOG=1")

	fi, err := os.Stat(socket)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 || fi.Mode().Type() != os.ModeSocket {
		t.Errorf("control socket mode %v, want a socket with 0600", fi.Mode())
	}
	if di, _ := os.Stat(filepath.Dir(socket)); di.Mode().Perm() != 0o700 {
		t.Errorf("control socket directory mode %v, want 0700", di.Mode().Perm())
	}
	st := status(t, socket)
	if st.Node != "solo" || st.Cluster != "test" || len(st.Instances) != 0 {
		t.Fatalf("status: %+v", st)
	}
	// A second daemon on the same socket is refused, and the first keeps it.
	r := runBinary(t, nil, "run", "--config", cfgPath, "--node", "solo", "--socket", socket)
	if r.code != 1 || !strings.Contains(r.stderr, "another hadirector is already running") {
		t.Errorf("second daemon: exit %d: %s", r.code, r.stderr)
	}

	// Good reload.
	writeFile(t, dir, "cluster.toml", strings.Replace(loConfig, `priority = 120`, `priority = 130`, 1))
	cmd.Process.Signal(syscall.SIGHUP)
	if m := ns.expect(t, "RELOADING=1"); !strings.Contains(m, "MONOTONIC_USEC=") {
		t.Errorf("RELOADING without MONOTONIC_USEC: %q", m)
	}
	ns.expect(t, "READY=1")
	st = status(t, socket)
	if st.Reloads != 1 || st.LastReload == nil || !st.LastReload.Applied || fmt.Sprint(st.LastReload.Changes) != "[changed node solo: priority]" {
		t.Errorf("after a good reload: reloads=%d last=%+v", st.Reloads, st.LastReload)
	}

	// Bad reload: refused, old config kept, the reason logged and shown.
	writeFile(t, dir, "cluster.toml", strings.Replace(loConfig, "priority = 120", "priority = 700", 1))
	cmd.Process.Signal(syscall.SIGHUP)
	ns.expect(t, "RELOADING=1")
	ns.expect(t, "READY=1")
	st = status(t, socket)
	if st.Reloads != 1 || st.LastReload == nil || st.LastReload.Applied || !strings.Contains(st.LastReload.Error, "node[0].priority: 700 is out of range 1..255") {
		t.Errorf("after a bad reload: reloads=%d last=%+v", st.Reloads, st.LastReload)
	}
	if !strings.Contains(logs.String(), "reload refused, keeping the running config") || !strings.Contains(logs.String(), "700 is out of range") {
		t.Errorf("the log does not say why the reload was refused:\n%s", logs)
	}

	// A valid config that no longer has this node: refused too.
	writeFile(t, dir, "cluster.toml", strings.Replace(loConfig, `name = "solo"`, `name = "other"`, 1))
	cmd.Process.Signal(syscall.SIGHUP)
	ns.expect(t, "RELOADING=1")
	ns.expect(t, "READY=1")
	st = status(t, socket)
	if st.Node != "solo" || st.LastReload == nil || st.LastReload.Applied || !strings.Contains(st.LastReload.Error, `node "solo" is not in the new config; its nodes are: other`) {
		t.Errorf("after a reload without this node: %+v", st.LastReload)
	}

	cmd.Process.Signal(syscall.SIGTERM)
	ns.expect(t, "STOPPING=1")
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("daemon exit: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("daemon did not stop within 10s of SIGTERM")
	}
	if _, err := os.Stat(socket); err == nil {
		t.Error("control socket left behind after stop")
	}
}

// TestStatusWithoutDaemon: a clear message, exit 1.
func TestStatusWithoutDaemon(t *testing.T) {
	r := runBinary(t, nil, "status", "--socket", filepath.Join(t.TempDir(), "none.sock"))
	if r.code != 1 || !strings.Contains(r.stderr, "no hadirector daemon answers on") {
		t.Errorf("exit %d: %s", r.code, r.stderr)
	}
}

// TestUnreadableConfig: a config the daemon's user cannot read (as root this
// runs the binary as nobody) is a clear message and exit code 1.
func TestUnreadableConfig(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run the binary as another user")
	}
	dir, err := os.MkdirTemp("", "hadirector-perm")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755)
	cfg := writeFile(t, dir, "secret.toml", loConfig)
	os.Chmod(cfg, 0o600)
	for _, cmdName := range []string{"check", "run"} {
		args := []string{cmdName, "--config", cfg, "--node", "solo"}
		if cmdName == "run" {
			args = append(args, "--socket", filepath.Join(dir, "ctl.sock"))
		}
		cmd := exec.Command(binary, args...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		out, err := cmd.CombinedOutput()
		ee, ok := err.(*exec.ExitError)
		if !ok || ee.ExitCode() != 1 || !strings.Contains(string(out), "secret.toml: cannot read the config: permission denied") {
			t.Errorf("%s as nobody: %v\n%s", cmdName, err, out)
		}
	}
}
