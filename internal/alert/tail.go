package alert

import (
	"strconv"
	"strings"
)

// tailBuffer keeps the last max bytes written to it. One goroutine writes
// (os/exec's copier); it is read only after the command has been waited for.
type tailBuffer struct {
	max   int
	buf   []byte
	total int64
}

func newTail(max int) *tailBuffer { return &tailBuffer{max: max} }

func (t *tailBuffer) Write(p []byte) (int, error) {
	n := len(p)
	t.total += int64(n)
	if t.max <= 0 {
		return n, nil
	}
	if n >= t.max {
		t.buf = append(t.buf[:0], p[n-t.max:]...)
		return n, nil
	}
	if over := len(t.buf) + n - t.max; over > 0 {
		copy(t.buf, t.buf[over:])
		t.buf = t.buf[:len(t.buf)-over]
	}
	t.buf = append(t.buf, p...)
	return n, nil
}

// String is the kept tail as valid UTF-8 without its final newline, prefixed
// with how much was cut when the output was longer.
func (t *tailBuffer) String() string {
	s := strings.ToValidUTF8(strings.TrimRight(string(t.buf), "\n"), "\uFFFD")
	if cut := t.total - int64(len(t.buf)); cut > 0 {
		s = "[" + strconv.FormatInt(cut, 10) + " earlier bytes cut] " + s
	}
	return s
}
