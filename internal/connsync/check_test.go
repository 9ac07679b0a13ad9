package connsync

import (
	"strings"
	"testing"

	"github.com/hadirector/hadirector/integration/netlab"
)

// TestCheckInterface runs in a namespace: an interface without IPv4, and
// a maxlen over the MTU, are refused with the reason.
func TestCheckInterface(t *testing.T) {
	a, b := netlab.PairForTest(t, "hdck", "v4", []string{"10.88.0.1/24"}, []string{"10.88.0.2/24"})
	if _, _, err := a.Lab().Link(a, "v6only", []string{"fd88::1/64"}, b, "v6only", []string{"fd88::2/64"}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		ifname string
		maxlen int
		want   string // "" = accepted
	}{
		{"v4", 0, ""},
		{"v4", 1472, ""},
		{"v4", 1473, "does not fit the MTU 1500 of v4 (at most 1472)"},
		{"v6only", 0, "has no IPv4 address"},
		{"nosuch", 0, "sync interface nosuch"},
	} {
		var err error
		a.Do(func() error { err = CheckInterface(tc.ifname, tc.maxlen); return nil })
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s maxlen %d: %v", tc.ifname, tc.maxlen, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s maxlen %d: err %v, want %q", tc.ifname, tc.maxlen, err, tc.want)
		}
	}
}
