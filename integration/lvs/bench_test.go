package lvs_test

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/hadirector/hadirector/integration/lvs"
)

// needBench skips a benchmark unless HADIRECTOR_BENCH is set (CI does not
// run them); then it needs IPVS and the daemon, as the scenarios do.
func needBench(t *testing.T) {
	t.Helper()
	if os.Getenv("HADIRECTOR_BENCH") == "" {
		t.Skip("benchmark: set HADIRECTOR_BENCH=1")
	}
	lvs.NeedIPVS(t)
	lvs.DaemonBinary(t)
}

// TestBenchDetection is issue 4's benchmark 3: a real server fails → its
// weight in the kernel's IPVS table changes, measured by polling the
// kernel every millisecond from the moment of the failure. Two failures:
// "refuse" (the server's listeners close: probes are refused at once) and
// "blackhole" (its link goes down: probes time out). The target is p99 ≤
// fall × interval + timeout + 20 ms.
//
//	HADIRECTOR_BENCH=1 HADIRECTOR_VM_ENV="HADIRECTOR_BENCH HADIRECTOR_BENCH_RUNS" integration/lvs/vmtest.sh -run TestBenchDetection
//
// It runs in the VM (TCG, so every figure includes emulation overhead).
func TestBenchDetection(t *testing.T) {
	needBench(t)
	runs := 30
	if n, err := strconv.Atoi(os.Getenv("HADIRECTOR_BENCH_RUNS")); err == nil && n > 0 {
		runs = n
	}
	const (
		interval = 200 * time.Millisecond
		timeout  = 100 * time.Millisecond
		fall     = 2
	)
	bound := fall*interval + timeout + 20*time.Millisecond
	ctx := scenarioContext(t)
	b := lvs.New(t, lvs.Options{Mode: lvs.NAT})
	startMaster(ctx, t, b, b.Config(lvs.ConfigOptions{}))
	svc := httpService(b)
	waitWeights(ctx, t, b, svc, "every real server at weight 1", allAt(b, lvs.HTTPPort, 1))

	for _, kind := range []string{"refuse", "blackhole"} {
		var lat []time.Duration
		for range runs {
			i := rand.IntN(len(b.RealNames())) + 1
			name := b.RealNames()[i-1]
			addr := realAddr(b, i, lvs.HTTPPort)
			// A random phase against the probes' schedule.
			time.Sleep(time.Duration(rand.Int64N(int64(interval))))
			start := time.Now()
			if kind == "refuse" {
				b.Server(name).Kill()
			} else if err := lvs.SetLinkUp(b.Node(name), "eth0", false); err != nil {
				t.Fatal(err)
			}
			waitWeights(ctx, t, b, svc, name+" at weight 0", func(w map[netip.AddrPort]int) bool { return w[addr] == 0 })
			lat = append(lat, time.Since(start))
			if kind == "refuse" {
				if err := b.Server(name).Revive(); err != nil {
					t.Fatal(err)
				}
			} else if err := lvs.SetLinkUp(b.Node(name), "eth0", true); err != nil {
				t.Fatal(err)
			}
			waitWeights(ctx, t, b, svc, name+" back", allAt(b, lvs.HTTPPort, 1))
		}
		slices.Sort(lat)
		p99 := lat[min(len(lat)-1, (len(lat)*99+99)/100-1)]
		verdict := "MET"
		if p99 > bound {
			verdict = "NOT MET"
		}
		fmt.Printf("detection %-9s runs %d  min %v  median %v  p99 %v  max %v  (target p99 ≤ %v: %s)\n", kind, len(lat),
			lat[0].Round(time.Millisecond), lat[len(lat)/2].Round(time.Millisecond), p99.Round(time.Millisecond),
			lat[len(lat)-1].Round(time.Millisecond), bound, verdict)
	}
}
