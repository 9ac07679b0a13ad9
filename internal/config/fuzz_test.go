package config

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse: whatever the bytes, Parse returns either a config or problems
// (never both, never neither) and does not panic.
func FuzzParse(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/bad/*.toml")
	seeds = append(seeds, "testdata/base.toml", "../../etc/hadirector.toml")
	for _, s := range seeds {
		if b, err := os.ReadFile(s); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse("fuzz.toml", data)
		if (c == nil) == (err == nil) {
			t.Fatalf("Parse returned config %v and error %v", c != nil, err)
		}
		var probs Problems
		if err != nil && (!errors.As(err, &probs) || len(probs) == 0) {
			t.Fatalf("error is not a non-empty Problems: %v", err)
		}
	})
}
