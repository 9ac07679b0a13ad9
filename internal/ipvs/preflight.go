package ipvs

import (
	"errors"
	"fmt"
	"os/exec"
	"runtime"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// ErrNoIPVS means the kernel hadirector runs on cannot do IPVS. Errors
// returned by [Preflight] and [Open] wrap it; test with errors.Is.
var ErrNoIPVS = errors.New("the kernel has no IPVS")

// genlFamily is the generic-netlink family name of the kernel's IPVS module
// (IPVS_GENL_NAME in include/uapi/linux/ip_vs.h).
const genlFamily = "IPVS"

// Preflight checks that the kernel of the current network namespace has IPVS,
// i.e. that the generic-netlink family "IPVS" is registered. If it is not,
// Preflight runs `modprobe ip_vs` once (as an operator would) and looks again.
// On failure the error wraps [ErrNoIPVS] and tells the operator what to do.
//
// hadirector must call this before anything touches github.com/moby/ipvs:
// that library does not report a missing IPVS (see the package doc).
func Preflight() error {
	return preflight(lookupFamily, modprobeIPVS)
}

// preflight is Preflight with its two effects injected (for unit tests).
func preflight(lookup func() error, modprobe func() error) error {
	if lookup() == nil {
		return nil
	}
	probe := "succeeded"
	if err := modprobe(); err != nil {
		probe = err.Error()
	}
	if err := lookup(); err != nil {
		return fmt.Errorf("%w: generic netlink family %q not found (lookup: %v; modprobe ip_vs: %s); "+
			"hadirector cannot program virtual services on this host — "+
			"load ip_vs (modprobe ip_vs) or use a kernel built with CONFIG_IP_VS",
			ErrNoIPVS, genlFamily, err, probe)
	}
	return nil
}

func lookupFamily() error {
	_, err := netlink.GenlFamilyGet(genlFamily)
	return err
}

// modprobeIPVS loads ip_vs. Its error only explains a failed preflight: the
// second family lookup decides (a missing modprobe binary is no failure by
// itself; the module may have been loaded by other means meanwhile).
func modprobeIPVS() error {
	out, err := exec.Command("modprobe", "ip_vs").CombinedOutput()
	if errors.Is(err, exec.ErrNotFound) {
		return errors.New("no modprobe binary in PATH")
	}
	if err != nil {
		if msg := strings.TrimSpace(string(out)); msg != "" {
			return fmt.Errorf("%w: %s", err, msg)
		}
		return err
	}
	return nil
}

// preflightIn runs Preflight inside the network namespace at nsPath ("" =
// the current one). Genetlink families are global, but IPVS state is per
// namespace and the namespace may be unusable, so check where we will work.
func preflightIn(nsPath string) error {
	if nsPath == "" {
		return Preflight()
	}
	var err error
	inErr := inNetns(nsPath, func() { err = Preflight() })
	if inErr != nil {
		return inErr
	}
	return err
}

// inNetns runs fn on an OS thread switched into the network namespace at
// nsPath. It uses a dedicated goroutine with a locked thread; if the thread
// cannot be switched back, the goroutine exits still locked, so the Go
// runtime destroys the thread instead of reusing it in the wrong namespace.
func inNetns(nsPath string, fn func()) error {
	target, err := netns.GetFromPath(nsPath)
	if err != nil {
		return fmt.Errorf("ipvs: open network namespace %s: %w", nsPath, err)
	}
	defer target.Close()

	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- fmt.Errorf("ipvs: get current network namespace: %w", err)
			return // thread stays locked and is discarded
		}
		defer orig.Close()
		if err := netns.Set(target); err != nil {
			runtime.UnlockOSThread() // still in orig: safe to reuse
			errc <- fmt.Errorf("ipvs: enter network namespace %s: %w", nsPath, err)
			return
		}
		fn()
		if err := netns.Set(orig); err != nil {
			errc <- fmt.Errorf("ipvs: leave network namespace %s: %w", nsPath, err)
			return // thread stays locked and is discarded
		}
		runtime.UnlockOSThread()
		errc <- nil
	}()
	return <-errc
}
