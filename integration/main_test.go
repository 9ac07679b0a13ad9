// Package integration holds hadirector's scenario tests: real daemons in
// network namespaces on the host (this file's package), and the qemu VM
// harness for IPVS (vm/). Scenario tests skip with a clear message when not
// root.
package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/hadirector/hadirector/internal/control"
)

// hadirector is the binary under test, built once for the package.
var hadirector string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "hadirector-integration")
	if err != nil {
		panic(err)
	}
	hadirector = filepath.Join(dir, "hadirector")
	build := exec.Command("go", "build", "-o", hadirector, "../cmd/hadirector")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building hadirector: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// statusOf asks a daemon for its status through the real CLI, retrying
// until it answers or ctx ends.
func statusOf(ctx context.Context, t *testing.T, socket string) *control.Status {
	t.Helper()
	for {
		cmd := exec.CommandContext(ctx, hadirector, "status", "--json", "--socket", socket)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		if err := cmd.Run(); err == nil {
			var st control.Status
			if err := json.Unmarshal(out.Bytes(), &st); err != nil {
				t.Fatalf("status --json: %v\n%s", err, out.String())
			}
			return &st
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no status from %s: %s", socket, errb.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
}
