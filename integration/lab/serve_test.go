package lab

import (
	"bufio"
	"context"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"
)

// The step commands' protocol: one command line in, the answer out, and a
// last line with the exit code; no socket means no lab.
func TestCommandProtocol(t *testing.T) {
	old := SocketPath
	defer func() { SocketPath = old }()
	SocketPath = filepath.Join(t.TempDir(), "lab.sock")

	if _, err := Command(context.Background(), "status", new(strings.Builder)); !errors.Is(err, ErrNoLab) {
		t.Fatalf("no lab: %v, want ErrNoLab", err)
	}
	ln, err := net.Listen("unix", SocketPath)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		line, _ := bufio.NewReader(c).ReadString('\n')
		got <- line
		c.Write([]byte("== lb1: MASTER\nmore\n" + rcPrefix + "3\nignored\n"))
	}()
	var out strings.Builder
	rc, err := Command(context.Background(), "status", &out)
	if err != nil || rc != 3 {
		t.Fatalf("Command = %d, %v; want 3", rc, err)
	}
	if l := <-got; l != "status\n" {
		t.Errorf("the lab got %q", l)
	}
	if out.String() != "== lb1: MASTER\nmore\n" {
		t.Errorf("answer %q", out.String())
	}
}

func TestAnswerUnknownCommand(t *testing.T) {
	a, b := net.Pipe()
	l := &Lab{}
	done := make(chan bool)
	go func() { done <- l.answer(context.Background(), a) }()
	b.Write([]byte("explode\n"))
	reply, _ := bufio.NewReader(b).ReadString(0)
	if down := <-done; down || !strings.Contains(reply, `unknown lab command "explode"`) || !strings.HasSuffix(reply, rcPrefix+"2\n") {
		t.Errorf("down=%v reply %q", down, reply)
	}
}

// "fail WHAT" names the failure; an unknown one is a usage error (rc 2),
// and a failure that was shown already is refused (rc 1), both without
// touching the lab.
func TestAnswerFail(t *testing.T) {
	for _, tc := range []struct {
		lab       *Lab
		cmd, want string
		wantRC    string
	}{
		{&Lab{}, "fail disk\n", `unknown failure "disk"`, "2"},
		{&Lab{summary: &Summary{Kind: FailServer}}, "fail link\n", "shown a failure already (server)", "1"},
		{&Lab{summary: &Summary{}}, "fail\n", "shown a failure already (master)", "1"},
	} {
		a, b := net.Pipe()
		done := make(chan bool)
		go func() { done <- tc.lab.answer(context.Background(), a) }()
		b.Write([]byte(tc.cmd))
		reply, _ := bufio.NewReader(b).ReadString(0)
		if down := <-done; down || !strings.Contains(reply, tc.want) || !strings.HasSuffix(reply, rcPrefix+tc.wantRC+"\n") {
			t.Errorf("%q: down=%v reply %q", tc.cmd, down, reply)
		}
	}
}
