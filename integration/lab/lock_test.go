package lab

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestLockRefusesASecondLab(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lab.lock")
	unlock, err := Lock(path)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	if strings.TrimSpace(string(b)) != strconv.Itoa(os.Getpid()) {
		t.Errorf("lock file holds %q, want our pid", b)
	}
	// flock belongs to the open file, so a second Lock conflicts even in
	// this process, as a second `hadirector lab` would.
	_, err = Lock(path)
	if !errors.Is(err, ErrRunning) || !strings.Contains(err.Error(), "process "+strconv.Itoa(os.Getpid())) {
		t.Fatalf("second Lock: %v; want ErrRunning naming the holder", err)
	}
	unlock()
	unlock2, err := Lock(path)
	if err != nil {
		t.Fatalf("Lock after unlock: %v", err)
	}
	unlock2()
}
