package healthcheck

import (
	"bufio"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"testing/iotest"
)

// parseResp runs the no-body response parser of the HTTP check over in,
// as exchange does, and reports the code, the head and whether the
// connection would be kept (the body skipped, nothing left over).
func parseResp(in string, maxBody int64, src func(io.Reader) io.Reader) (code int, h respHead, keep bool, err error) {
	b := respReader{buf: make([]byte, respBufSize), src: src(strings.NewReader(in))}
	code, http11, err := b.readStatus()
	if err != nil {
		return 0, h, false, err
	}
	if h, err = b.readHeaders(code, http11); err != nil {
		return code, h, false, err
	}
	if h.reusable {
		if h.chunked {
			keep = b.skipChunked(maxBody) == nil
		} else if h.bodyLen <= maxBody {
			keep = b.discard(h.bodyLen) == nil
		}
		keep = keep && b.buffered() == 0
	}
	return code, h, keep, nil
}

func TestRespParser(t *testing.T) {
	long := "X-Long: " + strings.Repeat("a", 10000) + "\r\n"
	longConn := "Connection: " + strings.Repeat("x", 2000) + ", close\r\n"
	for _, tc := range []struct {
		name string
		in   string
		code int
		keep bool
		err  string // substring of the error; "" for none
	}{
		{"go server", "HTTP/1.1 200 OK\r\nDate: Sat, 21 Nov 2026 10:00:00 GMT\r\nContent-Length: 3\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nok\n", 200, true, ""},
		{"LF only", "HTTP/1.1 200 OK\nContent-Length: 2\n\nok", 200, true, ""},
		{"no reason", "HTTP/1.1 204\r\n\r\n", 204, true, ""},
		{"304 with length", "HTTP/1.1 304 Not Modified\r\nContent-Length: 100\r\n\r\n", 304, true, ""},
		{"case and spaces", "HTTP/1.1 200 OK\r\ncOnTeNt-LeNgTh: \t 2 \r\nCONNECTION: Keep-Alive\r\n\r\nok", 200, true, ""},
		{"empty body", "HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n", 503, true, ""},
		{"body cut off", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nok", 200, false, ""},
		{"bytes beyond the body", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n", 200, false, ""},
		{"body over max", "HTTP/1.1 200 OK\r\nContent-Length: 70000\r\n\r\n" + strings.Repeat("x", 70000), 200, false, ""},
		{"until close", "HTTP/1.1 200 OK\r\n\r\nok", 200, false, ""},
		{"connection close", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok", 200, false, ""},
		{"connection tokens", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: upgrade , CLOSE\r\n\r\nok", 200, false, ""},
		{"HTTP/1.0", "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", 200, false, ""},
		{"HTTP/1.0 keep-alive", "HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok", 200, true, ""},
		{"two lengths", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok", 200, false, ""},
		{"bad length", "HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok", 200, false, ""},
		{"huge length", "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\nok", 200, false, ""},
		{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\nA\r\n0123456789\r\n0\r\nTrailer: x\r\n\r\n", 200, true, ""},
		{"chunked, bad size", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n", 200, false, ""},
		{"chunked, missing CRLF", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcd\r\n0\r\n\r\n", 200, false, ""},
		{"chunked, bare LF", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n", 200, false, ""},
		{"chunked, trailer with bare LF", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\n", 200, false, ""},
		{"chunked, cut off", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab", 200, false, ""},
		{"chunked, over max", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n11171\r\n" + strings.Repeat("x", 70001) + "\r\n0\r\n\r\n", 200, false, ""},
		{"chunked and length", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 200, false, ""},
		{"gzip encoding", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nxx", 200, false, ""},
		{"1xx", "HTTP/1.1 100 Continue\r\n\r\n", 100, false, ""},
		{"folded line", "HTTP/1.1 200 OK\r\nX-A: b\r\n c\r\nContent-Length: 0\r\n\r\n", 200, false, ""},
		{"no colon", "HTTP/1.1 200 OK\r\nnonsense\r\nContent-Length: 0\r\n\r\n", 200, false, ""},
		{"space in name", "HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n", 200, false, ""},
		{"long header line", "HTTP/1.1 200 OK\r\n" + long + "Content-Length: 0\r\n\r\n", 200, false, ""},
		{"long Connection line", "HTTP/1.1 200 OK\r\n" + longConn + "Content-Length: 0\r\n\r\n", 200, false, ""},
		{"headers too long", "HTTP/1.1 200 OK\r\n" + strings.Repeat(long, 120) + "\r\n", 200, false, "header block longer than 1 MiB"},
		{"many short headers too long", "HTTP/1.1 200 OK\r\n" + strings.Repeat("A: b\r\n", 200000) + "\r\n", 200, false, "header block longer than 1 MiB"},
		{"headers cut off", "HTTP/1.1 200 OK\r\nContent-Le", 200, false, "unexpected EOF"},
		{"no empty line", "HTTP/1.1 200 OK\r\nA: b\r\n", 200, false, "unexpected EOF"},
		{"nothing", "", 0, false, "unexpected EOF"},
		{"status cut off", "HTTP/1.1 20", 0, false, "unexpected EOF"},
		{"garbage", "SSH-2.0-OpenSSH_9.2\r\n\r\n", 0, false, "malformed HTTP status line"},
		{"HTTP/2", "HTTP/2 200\r\n\r\n", 0, false, "malformed HTTP status line"},
		{"status too long", "HTTP/1.1 200 " + strings.Repeat("x", 2000) + "\r\n\r\n", 0, false, "malformed HTTP status line (too long)"},
	} {
		for _, split := range []struct {
			name string
			src  func(io.Reader) io.Reader
		}{{"whole", func(r io.Reader) io.Reader { return r }}, {"bytewise", iotest.OneByteReader}, {"halves", iotest.HalfReader}} {
			t.Run(tc.name+"/"+split.name, func(t *testing.T) {
				code, _, keep, err := parseResp(tc.in, DefaultMaxBody, split.src)
				switch {
				case tc.err == "" && err != nil:
					t.Fatalf("error %v", err)
				case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				wantKeep := tc.keep
				if tc.name == "bytes beyond the body" && split.name == "bytewise" {
					wantKeep = true // not read yet when the response ends: unseen
				}
				if code != tc.code || keep != wantKeep {
					t.Errorf("code %d, keep %v; want %d, %v", code, keep, tc.code, wantKeep)
				}
			})
		}
	}
}

// FuzzHTTPResponse checks the no-body response parser against net/http's:
// whatever code it reads, net/http reads the same (if it accepts the
// response at all); and where it would keep the connection, net/http
// agrees that the connection stays open and where the body ends.
func FuzzHTTPResponse(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n",
		"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
		"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n",
		"HTTP/1.1 304 Not Modified\r\nContent-Length: 7\r\n\r\n",
		"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",
		"HTTP/1.1 200 OK\r\n\r\nbody until close",
		"garbage\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		code, h, keep, err := parseResp(in, 1<<10, func(r io.Reader) io.Reader { return r })
		if err != nil {
			return
		}
		br := bufio.NewReader(strings.NewReader(in))
		resp, herr := http.ReadResponse(br, nil)
		if herr != nil {
			// net/http is stricter about headers this parser does not
			// read; but a response it accepts as kept-alive must be one
			// net/http can read.
			if keep && !strings.Contains(herr.Error(), "malformed MIME header") && !errors.Is(herr, io.ErrUnexpectedEOF) {
				t.Fatalf("%q: kept (code %d, %+v); net/http: %v", in, code, h, herr)
			}
			return
		}
		if resp.StatusCode != code {
			t.Fatalf("%q: code %d; net/http says %d", in, code, resp.StatusCode)
		}
		if !keep {
			return
		}
		if resp.Close {
			t.Fatalf("%q: kept (%+v); net/http says Close", in, h)
		}
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("%q: kept (%+v); net/http reading the body: %v", in, h, err)
		}
		if !h.chunked && int64(len(body)) != h.bodyLen {
			t.Fatalf("%q: body of %d bytes; net/http read %d", in, h.bodyLen, len(body))
		}
		if br.Buffered() != 0 {
			t.Fatalf("%q: kept with nothing left; net/http left %d bytes", in, br.Buffered())
		}
	})
}
