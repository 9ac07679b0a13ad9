package main

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hadirector/hadirector/internal/config"
)

func contains(s, sub string) bool { return strings.Contains(s, sub) }

func TestStats(t *testing.T) {
	s := stats([]float64{5, 1, nan, 3, 2, 4})
	if s.n != 5 || s.min != 1 || s.med != 3 || s.p99 != 5 {
		t.Errorf("stats = %+v", s)
	}
	s = stats([]float64{4, 1, 3, 2})
	if s.med != 2.5 || s.p99 != 4 {
		t.Errorf("even n: %+v", s)
	}
	var many []float64
	for i := 1; i <= 200; i++ {
		many = append(many, float64(i))
	}
	if s := stats(many); s.p99 != 198 { // nearest rank: ceil(0.99*200) = 198
		t.Errorf("p99 of 1..200 = %v", s.p99)
	}
	if s := stats(nil); s.n != 0 || !math.IsNaN(s.med) {
		t.Errorf("empty: %+v", s)
	}
}

func TestLongestGap(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		out := make([]time.Duration, len(v))
		for i, x := range v {
			out[i] = time.Duration(x) * time.Millisecond
		}
		return out
	}
	ends := ms(1, 2, 3, 10, 11, 12)
	// The outage 3..10 lies inside [0, 12].
	if g, at, _ := longestGap(ends, 0, 12*time.Millisecond); g != 7*time.Millisecond || at != 3*time.Millisecond {
		t.Errorf("gap %v at %v", g, at)
	}
	// A window starting inside the outage measures it from the last answer before the window.
	if g, at, _ := longestGap(ends, 5*time.Millisecond, 12*time.Millisecond); g != 7*time.Millisecond || at != 3*time.Millisecond {
		t.Errorf("gap %v at %v", g, at)
	}
	// An outage running to the end of the window counts up to the end.
	if g, at, _ := longestGap(ends, 0, 30*time.Millisecond); g != 18*time.Millisecond || at != 12*time.Millisecond {
		t.Errorf("gap %v at %v", g, at)
	}
	// Stopping before the outage: only the small gaps.
	if g, _, _ := longestGap(ends, 0, 3*time.Millisecond); g != time.Millisecond {
		t.Errorf("gap %v", g)
	}
}

func TestMasterDown(t *testing.T) {
	if got := masterDown(time.Second, 100); got != 3609375*time.Microsecond {
		t.Errorf("masterDown(1s, 100) = %v", got)
	}
	if got := skew(10*time.Millisecond, 100); got != 6093750*time.Nanosecond {
		t.Errorf("skew(10ms, 100) = %v", got)
	}
}

func TestHadirectorConfigParses(t *testing.T) {
	for _, im := range []impl{allImpls["hadirector"], allImpls["hadirector+udp"]} {
		e := &env{impl: im, adv: 10 * time.Millisecond}
		cfg := e.hadirectorConfig("/tmp/key")
		for _, want := range []string{`advert_interval = "10ms"`, `vips = ["10.77.0.250/24"]`, "priority = 150", "priority = 100"} {
			if !contains(cfg, want) {
				t.Errorf("%s config lacks %q:\n%s", im.name, want, cfg)
			}
		}
		if im.udp != contains(cfg, `interval = "2ms"`) {
			t.Errorf("%s: heartbeat link present = %v:\n%s", im.name, !im.udp, cfg)
		}
		// The daemon's own loader accepts it.
		path := filepath.Join(t.TempDir(), "cluster.toml")
		if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := config.Load(path); err != nil {
			t.Errorf("%s config does not load: %v\n%s", im.name, err, cfg)
		}
	}
	k := keepalivedConfig("d1", "MASTER", 150, 10*time.Millisecond)
	if !contains(k, "advert_int 0.01") || !contains(k, "version 3") {
		t.Errorf("keepalived config:\n%s", k)
	}
}
