package lvs

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/hadirector/hadirector/internal/ipvs"
	"github.com/hadirector/hadirector/internal/ipvs/kerneltest"
)

// Environment of the VM runs (see integration/vm).
const (
	// EnvVMTest is set to "1" by the test VM's init for the test binary.
	EnvVMTest = "HADIRECTOR_VMTEST"
	// EnvDaemon names a daemon binary to use instead of the payload's
	// (e.g. on a host whose kernel has IPVS). It must be an absolute path.
	EnvDaemon = "HADIRECTOR_LVS_DAEMON"
	// PayloadDaemon is where go-exec.sh puts the daemon passed with
	// HADIRECTOR_VM_PAYLOAD=/abs/path/to/hadirector.
	PayloadDaemon = "/payload/hadirector"
)

// HowToRun is the command line these tests want, for skip and fail
// messages.
const HowToRun = `CGO_ENABLED=0 go build -o /tmp/hd/hadirector ./cmd/hadirector && ` +
	`HADIRECTOR_VM_PAYLOAD=/tmp/hd/hadirector CGO_ENABLED=0 go test -exec "$PWD/integration/vm/go-exec.sh" ./integration/lvs/ ` +
	`(or integration/lvs/vmtest.sh)`

// InVM reports whether the test runs inside the test VM.
func InVM() bool { return os.Getenv(EnvVMTest) == "1" }

// NeedIPVS returns if the kernel has IPVS; otherwise it fails the test
// inside the VM (where IPVS is the point) and skips it elsewhere.
func NeedIPVS(tb testing.TB) {
	tb.Helper()
	kerneltest.NeedIPVS(tb, ipvs.Preflight, HowToRun)
}

// DaemonBinary returns the hadirector binary under test: $HADIRECTOR_LVS_DAEMON
// if set, else /payload/hadirector. Inside the VM a missing binary fails
// the test (the run was wired wrongly); elsewhere it skips.
func DaemonBinary(tb testing.TB) string {
	tb.Helper()
	p := PayloadDaemon
	if env := os.Getenv(EnvDaemon); env != "" {
		p = env
	}
	err := checkExecutable(p)
	if err == nil {
		return p
	}
	if InVM() {
		tb.Fatalf("inside the test VM the daemon must be at %s: %v; pass it with %s", p, err, HowToRun)
	}
	tb.Skipf("no daemon binary (%v): these tests run in the VM: %s", err, HowToRun)
	return ""
}

func checkExecutable(p string) error {
	if !filepath.IsAbs(p) {
		return errors.New(p + " is not an absolute path")
	}
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return errors.New(p + " is not an executable file")
	}
	return nil
}
