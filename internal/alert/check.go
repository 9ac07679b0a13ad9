package alert

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// ErrInsecureHook marks a hook that someone other than root (or the daemon's
// own user) could replace.
var ErrInsecureHook = errors.New("insecure hook")

// CheckHook checks a hook program before the daemon relies on it: path is
// absolute; it names (after symlinks) an existing regular file that the
// daemon may execute; and neither the file nor any directory on the way to it
// can be changed by anyone but root or the daemon's own user.
//
// Why: hooks run as the daemon, normally root, at the worst moment (a
// failover). keepalived's script security (enable_script_security;
// check_security() in keepalived/core/notify.c) refuses a script when the
// file or any directory on its path is owned by a non-root user, or is
// writable by a non-root group or by others, a directory being excused by
// its sticky bit (as /tmp). Whoever can write the file, or rename things in a
// directory above it, can put their own program there and have root run it.
// CheckHook applies the same rule, a little stricter: group write is refused
// whatever the group (keepalived allows it for group root), and the owner may
// be root or the daemon's own user (the same trust as the daemon itself,
// which matters only when it does not run as root). Symlinks are followed;
// the links themselves and every directory of both the given and the
// resolved path are checked.
//
// Errors name the path and the fix; insecure permissions wrap
// ErrInsecureHook, a missing file wraps fs.ErrNotExist.
func CheckHook(path string) error {
	if path == "" {
		return errors.New("hook: empty path")
	}
	if !filepath.IsAbs(path) {
		return fmt.Errorf("hook %q: not an absolute path (hooks are exec'd without a PATH search)", path)
	}
	clean := filepath.Clean(path)
	if err := checkDirs(path, clean); err != nil {
		return err
	}
	real, err := filepath.EvalSymlinks(clean)
	if err != nil {
		return fmt.Errorf("hook %s: %w", path, unwrapPathError(err))
	}
	if real != clean {
		if err := checkDirs(path, real); err != nil {
			return err
		}
	}
	fi, err := os.Stat(real)
	if err != nil {
		return fmt.Errorf("hook %s: %w", path, unwrapPathError(err))
	}
	name := path
	if real != clean {
		name = fmt.Sprintf("%s (-> %s)", path, real)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("hook %s: not a regular file (%s)", name, fileType(fi.Mode()))
	}
	const xOK = 1
	if fi.Mode().Perm()&0o111 == 0 || syscall.Access(real, xOK) != nil {
		return fmt.Errorf("hook %s: not executable (mode %04o); fix: chmod 0755 %s",
			name, fi.Mode().Perm(), real)
	}
	if err := checkOwner(name, real, fi); err != nil {
		return err
	}
	if fi.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("hook %s: %w: writable by group or others (mode %04o), who could replace what the daemon runs; fix: chmod go-w %s",
			name, ErrInsecureHook, fi.Mode().Perm(), real)
	}
	return nil
}

// checkDirs checks every directory above p (p itself is checked by the
// caller), and every symlink met on the way, without following the last
// element of each prefix.
func checkDirs(hook, p string) error {
	dir := filepath.Dir(p)
	var prefixes []string
	for {
		prefixes = append(prefixes, dir)
		if dir == "/" {
			break
		}
		dir = filepath.Dir(dir)
	}
	// Walk from / down, so the first problem reported is the highest.
	for i := len(prefixes) - 1; i >= 0; i-- {
		d := prefixes[i]
		fi, err := os.Lstat(d)
		if err != nil {
			return fmt.Errorf("hook %s: %w", hook, unwrapPathError(err))
		}
		if err := checkOwner(hook, d, fi); err != nil {
			return err
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			continue // its target is checked on the resolved path
		}
		if !fi.IsDir() {
			return fmt.Errorf("hook %s: %s is not a directory", hook, d)
		}
		if fi.Mode().Perm()&0o022 != 0 && fi.Mode()&fs.ModeSticky == 0 {
			return fmt.Errorf("hook %s: %w: directory %s is writable by group or others (mode %04o) without the sticky bit, so they could replace the hook; fix: chmod go-w %s",
				hook, ErrInsecureHook, d, fi.Mode().Perm(), d)
		}
	}
	// The last element, if a symlink, is checked for its owner too.
	if fi, err := os.Lstat(p); err == nil && fi.Mode()&fs.ModeSymlink != 0 {
		return checkOwner(hook, p, fi)
	}
	return nil
}

func checkOwner(hook, p string, fi fs.FileInfo) error {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("hook %s: cannot read the owner of %s", hook, p)
	}
	if st.Uid == 0 || int(st.Uid) == os.Geteuid() {
		return nil
	}
	return fmt.Errorf("hook %s: %w: %s is owned by uid %d, who could replace the hook; fix: chown root %s",
		hook, ErrInsecureHook, p, st.Uid, p)
}

// unwrapPathError keeps the cause of a *fs.PathError (the path is already
// in our message) but still matches errors.Is(err, fs.ErrNotExist).
func unwrapPathError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s: %w", pe.Path, pe.Err)
	}
	return err
}

func fileType(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeDevice != 0:
		return "a device"
	default:
		return strings.TrimSpace(m.Type().String())
	}
}
