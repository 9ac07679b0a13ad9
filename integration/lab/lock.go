package lab

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// LockPath is the lab's lock: one lab per machine, because its namespaces
// and state directory have fixed names.
const LockPath = "/run/hadirector-lab.lock"

// ErrRunning is what Lock returns when another lab holds the lock.
var ErrRunning = errors.New("another hadirector lab is running")

// Lock takes the lab's lock at path (LockPath) for this process, writing
// its pid into the file. The lock is an flock, so it goes away with the
// process even if it crashes; the file stays (removing it would let two
// processes lock two different files). Unlock with the returned function.
func Lock(path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		b, _ := os.ReadFile(path)
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			holder := "another process"
			if pid, perr := strconv.Atoi(strings.TrimSpace(string(b))); perr == nil {
				holder = fmt.Sprintf("process %d", pid)
			}
			return nil, fmt.Errorf("%w (%s holds %s): wait for it to end, or stop it (Ctrl-C in its terminal)", ErrRunning, holder, path)
		}
		return nil, fmt.Errorf("locking %s: %w", path, err)
	}
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return func() {
		_ = f.Truncate(0)
		f.Close() // releases the flock
	}, nil
}
