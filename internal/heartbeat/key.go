package heartbeat

import (
	"fmt"
	"io"
	"os"
)

// LoadKey reads a shared HMAC key from a file (the config's key_file).
// The key is the file's bytes exactly, newline included if there is one:
// both directors get the same file, so they get the same key. The file must
// be a regular file of MinKeyLen..4096 bytes that neither group nor others
// may access (chmod 600); generate one with
//
//	head -c 32 /dev/urandom > /etc/hadirector/heartbeat.key && chmod 600 /etc/hadirector/heartbeat.key
func LoadKey(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("heartbeat: key file: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("heartbeat: key file: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("heartbeat: key file %s: not a regular file", path)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("heartbeat: key file %s: mode %04o lets group or others access the key (chmod 600 %s)", path, perm, path)
	}
	if st.Size() > maxKeyLen {
		return nil, fmt.Errorf("heartbeat: key file %s: %d bytes, at most %d allowed", path, st.Size(), maxKeyLen)
	}
	key, err := io.ReadAll(io.LimitReader(f, maxKeyLen+1))
	if err != nil {
		return nil, fmt.Errorf("heartbeat: key file %s: %w", path, err)
	}
	if err := checkKey(key); err != nil {
		return nil, fmt.Errorf("heartbeat: key file %s: %w", path, err)
	}
	return key, nil
}
