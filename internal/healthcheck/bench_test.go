package healthcheck

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The probe-scale benchmark (issue 4, benchmark 1):
//
//	HADIRECTOR_BENCH=1 go test -run TestProbeScale -v -count=1 ./internal/healthcheck/
//
// 10 000 HTTP targets (127.77.x.y:18080, one listener per address) served by
// a child process (this test binary re-executed), so that the server's CPU
// is not counted as the prober's; probed every second by one Manager for
// HADIRECTOR_BENCH_SECONDS (default 10) after a warm-up. Prints the
// prober's CPU (% of one core, from getrusage) and RSS, and the server's
// CPU. HADIRECTOR_BENCH_SILENT=1 makes the server accept and never answer
// (the worst case for memory: every check in flight for its whole timeout).
// HADIRECTOR_BENCH_TARGETS overrides the number of targets,
// HADIRECTOR_BENCH_INTERVAL the interval (default 1s; timeout min(interval, 1s)),
// HADIRECTOR_BENCH_QUANTUM the scheduler's quantum (Options.Quantum),
// HADIRECTOR_BENCH_KEEPALIVE=1 probes over kept-alive connections, and
// HADIRECTOR_BENCH_CPUPROFILE names a file for a CPU profile of the window.
const (
	benchEnv       = "HADIRECTOR_BENCH"
	benchServerEnv = "HADIRECTOR_BENCH_SERVER"      // set in the child: number of targets
	benchPartEnv   = "HADIRECTOR_BENCH_SERVER_PART" // "k/m": the child serves targets i with i%m == k
	benchPort      = 18080
)

func benchAddr(i int) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 77, byte(i >> 8), byte(i)}), benchPort)
}

// runBenchServer is the child process: it serves "ok" on n loopback
// addresses until its stdin closes.
func runBenchServer() {
	n, err := strconv.Atoi(os.Getenv(benchServerEnv))
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench server:", err)
		os.Exit(2)
	}
	raiseFileLimit()
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "ok\n")
		}),
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	silent := os.Getenv("HADIRECTOR_BENCH_SILENT") == "1"
	part, parts := 0, 1
	if v := os.Getenv(benchPartEnv); v != "" {
		fmt.Sscanf(v, "%d/%d", &part, &parts)
	}
	for i := range n {
		if i%parts != part {
			continue
		}
		l, err := net.Listen("tcp", benchAddr(i).String())
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench server:", err)
			os.Exit(2)
		}
		if silent {
			// Accept, read, never answer: every probe hangs until its
			// timeout.
			go func() {
				for {
					c, err := l.Accept()
					if err != nil {
						return
					}
					go func() { _, _ = io.Copy(io.Discard, c); c.Close() }()
				}
			}()
			continue
		}
		go srv.Serve(l)
	}
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, os.Stdin)
	os.Exit(0)
}

// cpuTime is the process's user and system CPU time.
// raiseFileLimit lifts RLIMIT_NOFILE as far as the process may (root: to
// 65536), for 10 000 listeners plus their connections.
func raiseFileLimit() {
	var rl syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl) != nil {
		return
	}
	want := syscall.Rlimit{Cur: max(rl.Cur, 65536), Max: max(rl.Max, 65536)}
	if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want) != nil {
		rl.Cur = rl.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl)
	}
}

func cpuTime() (user, sys time.Duration) {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano()), time.Duration(ru.Stime.Nano())
}

// procCPU reads another process's utime+stime from /proc/PID/stat.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	// Fields after the comm: state is f[0]; utime and stime are fields 14
	// and 15 of the line, f[11] and f[12] here. USER_HZ is 100 on Linux.
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// statusKB reads a "VmRSS:"-style line of /proc/self/status, in KiB.
func statusKB(key string) int64 {
	b, _ := os.ReadFile("/proc/self/status")
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, key+":"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}

func TestProbeScale(t *testing.T) {
	if os.Getenv(benchEnv) != "1" {
		t.Skip("benchmark: set HADIRECTOR_BENCH=1 to run (prints CPU and RSS of 10 000 HTTP probes a second)")
	}
	n := 10000
	if v := os.Getenv("HADIRECTOR_BENCH_TARGETS"); v != "" {
		n, _ = strconv.Atoi(v)
	}
	window := 10 * time.Second
	if v := os.Getenv("HADIRECTOR_BENCH_SECONDS"); v != "" {
		s, _ := strconv.Atoi(v)
		window = time.Duration(s) * time.Second
	}
	interval := time.Second
	if v := os.Getenv("HADIRECTOR_BENCH_INTERVAL"); v != "" {
		var err error
		if interval, err = time.ParseDuration(v); err != nil {
			t.Fatal(err)
		}
	}
	if n > 65536 {
		t.Fatal("at most 65536 targets")
	}

	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	keepAlive := os.Getenv("HADIRECTOR_BENCH_KEEPALIVE") == "1"
	raiseFileLimit()
	// With keep-alive every target holds a connection open on the server
	// side too: one listener and one connection per target. Where the file
	// limit cannot be raised past 20 000 (this sandbox refuses), one
	// process cannot hold both for 10 000 targets, so the targets are
	// split over as many server processes as needed.
	parts := 1
	if keepAlive {
		var rl syscall.Rlimit
		_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl)
		for uint64(2*n/parts+100) > rl.Cur {
			parts++
		}
	}
	var servers []*exec.Cmd
	for k := range parts {
		child := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
		child.Env = append(os.Environ(), benchServerEnv+"="+strconv.Itoa(n), fmt.Sprintf("%s=%d/%d", benchPartEnv, k, parts))
		child.Stderr = os.Stderr
		stdin, err := child.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		stdout, err := child.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := child.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { stdin.Close(); child.Wait() })
		line, err := bufio.NewReader(stdout).ReadString('\n')
		if err != nil || line != "ready\n" {
			t.Fatalf("bench server: %q, %v", line, err)
		}
		servers = append(servers, child)
	}
	serverCPU := func() (d time.Duration) {
		for _, c := range servers {
			d += procCPU(c.Process.Pid)
		}
		return d
	}

	// The kernel's share, for scale: bare TCP connect + RST close, in a
	// loop, to the same server, before any probe runs. On loopback the
	// kernel processes both ends of each connection in the prober's
	// context, so this is a floor that no prober can go under here.
	floorN := 3000
	floorCPU := connectFloor(t, floorN)
	var kaFloorUser, kaFloorSys time.Duration
	if keepAlive {
		kaFloorUser, kaFloorSys = keepAliveFloor(t, min(n, 1000), 3*time.Second)
	}

	var opts Options
	if v := os.Getenv("HADIRECTOR_BENCH_QUANTUM"); v != "" {
		var err error
		if opts.Quantum, err = time.ParseDuration(v); err != nil {
			t.Fatal(err)
		}
	}
	m := NewManager(opts)
	defer m.Close()
	silent := os.Getenv("HADIRECTOR_BENCH_SILENT") == "1"
	want := StateUp
	if silent {
		want = StateDown
	}
	var transitions, up atomic.Int64 // up: targets in the wanted state
	go func() {
		for tr := range m.Transitions() {
			transitions.Add(1)
			if tr.To == want {
				up.Add(1)
			}
		}
	}()
	addStart := time.Now()
	for i := range n {
		spec := Spec{
			Check:    HTTPSpec{Addr: benchAddr(i), Path: "/health", KeepAlive: keepAlive},
			Interval: interval, Timeout: min(interval, time.Second), Rise: 2, Fall: 3,
		}
		if err := m.Add(TargetID(benchAddr(i).String()), spec); err != nil {
			t.Fatal(err)
		}
	}
	addTook := time.Since(addStart)
	// Warm-up: two rounds bring every target up (rise 2), three down (fall 3).
	deadline := time.Now().Add(15*time.Second + 3*interval)
	for up.Load() < int64(n) {
		if time.Now().After(deadline) {
			details := map[string]int{}
			for i := range n {
				if st, _ := m.Status(TargetID(benchAddr(i).String())); !st.Last.OK {
					details[st.Last.Detail]++
				}
			}
			t.Fatalf("only %d of %d targets in the wanted state after the warm-up; stats %+v; failures: %v", up.Load(), n, m.Stats(), details)
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(time.Second)

	if path := os.Getenv("HADIRECTOR_BENCH_CPUPROFILE"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			t.Fatal(err)
		}
		defer pprof.StopCPUProfile()
	}
	s0, srv0, w0 := m.Stats(), serverCPU(), time.Now()
	u0, k0 := cpuTime()
	time.Sleep(window)
	s1, srv1, wall := m.Stats(), serverCPU(), time.Since(w0)
	u1, k1 := cpuTime()

	if path := os.Getenv("HADIRECTOR_BENCH_HEAPPROFILE"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	checks := s1.Checks - s0.Checks
	fails := s1.Failures - s0.Failures
	pct := func(d time.Duration) float64 { return 100 * float64(d) / float64(wall) }
	mode := "healthy"
	if keepAlive {
		mode = "healthy, keep-alive connections"
	}
	if silent {
		mode = "silent (accept, never answer: every check runs into its timeout)"
	}
	report := fmt.Sprintf(`probe scale: %d HTTP targets, %s, interval %v, measured over %v (after a warm-up), GOMAXPROCS %d
  prober (this process): CPU %.1f %% of one core (user %.1f %%, system %.1f %%); RSS %.1f MiB (peak %.1f MiB); Go heap in use %.1f MiB, stacks %.1f MiB, runtime Sys %.1f MiB; %d goroutines at the end
  server (%d child process(es)): CPU %.1f %% of one core
  checks %d (%.0f/s), failed %d, late rounds %d, transitions %d (all %d targets %v), adding the targets took %v`,
		n, mode, interval, wall.Round(time.Millisecond), runtime.GOMAXPROCS(0),
		pct(u1-u0+k1-k0), pct(u1-u0), pct(k1-k0), float64(statusKB("VmRSS"))/1024, float64(statusKB("VmHWM"))/1024,
		float64(ms.HeapInuse)/(1<<20), float64(ms.StackInuse)/(1<<20), float64(ms.Sys)/(1<<20), runtime.NumGoroutine(),
		len(servers), pct(srv1-srv0),
		checks, float64(checks)/wall.Seconds(), fails, s1.Late-s0.Late, transitions.Load(), n, want, addTook.Round(time.Millisecond))
	perCheck := (u1 - u0 + k1 - k0) / time.Duration(max(checks, 1))
	report += fmt.Sprintf(`
  per check: %v CPU (user %v, system %v)
  kernel floor: a bare TCP connect + RST close to the same server costs %v CPU here (%d in a loop), i.e. %.1f %% of a core at %.0f connections/s`,
		perCheck.Round(100*time.Nanosecond), ((u1 - u0) / time.Duration(max(checks, 1))).Round(100*time.Nanosecond),
		((k1 - k0) / time.Duration(max(checks, 1))).Round(100*time.Nanosecond),
		floorCPU.Round(100*time.Nanosecond), floorN, 100*float64(floorCPU)*float64(checks)/wall.Seconds()/float64(time.Second), float64(checks)/wall.Seconds())
	if keepAlive {
		report += fmt.Sprintf(`
  kernel floor, keep-alive: a request written and its answer read on a kept connection, raw syscalls, 50 connections every 5ms then epoll_wait until they have all answered, no Go runtime in the way: %v CPU (user %v, system %v)`,
			(kaFloorUser + kaFloorSys).Round(100*time.Nanosecond), kaFloorUser.Round(100*time.Nanosecond), kaFloorSys.Round(100*time.Nanosecond))
	}
	fmt.Println(report)
	t.Log(report)
	if !silent && fails > checks/100 {
		t.Errorf("%d of %d checks failed", fails, checks)
	}
}

// connectFloor measures the CPU of n blocking connect + RST close to the
// bench server's addresses.
func connectFloor(t *testing.T, n int) time.Duration {
	u0, k0 := cpuTime()
	for i := range n {
		a := benchAddr(i % 10000).Addr().As4()
		fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := syscall.Connect(fd, &syscall.SockaddrInet4{Port: benchPort, Addr: a}); err != nil {
			syscall.Close(fd)
			continue
		}
		_ = syscall.SetsockoptLinger(fd, syscall.SOL_SOCKET, syscall.SO_LINGER, &syscall.Linger{Onoff: 1})
		syscall.Close(fd)
	}
	u1, k1 := cpuTime()
	return (u1 - u0 + k1 - k0) / time.Duration(n)
}

// keepAliveFloor measures the CPU per probe of the least a prober of
// kept-alive HTTP connections must do, with none of its own work: on n
// connections to the bench server, for d, every 5ms the requests of 50 of
// them are written, and their answers read once one epoll_wait says they
// are there (10 000 probes a second, the benchmark's rate). It returns
// the user and system CPU per probe.
func keepAliveFloor(t *testing.T, n int, d time.Duration) (user, sys time.Duration) {
	const batch = 50
	req := []byte("GET /health HTTP/1.1\r\nHost: x\r\nUser-Agent: hadirector-healthcheck\r\nAccept: */*\r\nConnection: keep-alive\r\n\r\n")
	ep, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(ep)
	fds := make([]int, 0, n)
	defer func() {
		for _, fd := range fds {
			_ = syscall.SetsockoptLinger(fd, syscall.SOL_SOCKET, syscall.SO_LINGER, &syscall.Linger{Onoff: 1})
			syscall.Close(fd)
		}
	}()
	for i := range n {
		fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		fds = append(fds, fd)
		if err := syscall.Connect(fd, &syscall.SockaddrInet4{Port: benchPort, Addr: benchAddr(i).Addr().As4()}); err != nil {
			t.Fatal(err)
		}
		_ = syscall.SetsockoptInt(fd, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1)
		if err := syscall.SetNonblock(fd, true); err != nil {
			t.Fatal(err)
		}
		ev := syscall.EpollEvent{Events: syscall.EPOLLIN | 1<<31, Fd: int32(fd)} // 1<<31: EPOLLET
		if err := syscall.EpollCtl(ep, syscall.EPOLL_CTL_ADD, fd, &ev); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]byte, 4096)
	evs := make([]syscall.EpollEvent, batch)
	probes := 0
	round := func() {
		for i := 0; i < n; i += batch {
			for _, fd := range fds[i:min(i+batch, n)] {
				if _, err := syscall.Write(fd, req); err != nil {
					t.Fatal(err)
				}
			}
			for pending := min(batch, n-i); pending > 0; {
				k, err := syscall.EpollWait(ep, evs, 1000)
				if err == syscall.EINTR {
					continue
				}
				if err != nil || k == 0 {
					t.Fatalf("keep-alive floor: epoll_wait: %d events, %v", k, err)
				}
				for _, e := range evs[:k] {
					if m, _ := syscall.Read(int(e.Fd), buf); m > 0 {
						pending--
						probes++
					}
				}
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	round() // warm-up: the server's connections are all set up
	probes = 0
	u0, k0 := cpuTime()
	for end := time.Now().Add(d); time.Now().Before(end); {
		round()
	}
	u1, k1 := cpuTime()
	p := time.Duration(max(probes, 1))
	return (u1 - u0) / p, (k1 - k0) / p
}

// BenchmarkHTTPCheck measures one HTTP check against a loopback server
// (CPU and allocations per probe, client side plus the in-process server),
// over a new connection per probe and over a kept-alive one.
func BenchmarkHTTPCheck(b *testing.B) {
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok\n")
	}), ErrorLog: log.New(io.Discard, "", 0)}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(l)
	defer srv.Close()
	for _, keep := range []bool{false, true} {
		name := "new-connection"
		if keep {
			name = "keep-alive"
		}
		b.Run(name, func(b *testing.B) {
			c, err := HTTPSpec{Addr: netip.MustParseAddrPort(l.Addr().String()), KeepAlive: keep}.NewChecker(nil)
			if err != nil {
				b.Fatal(err)
			}
			defer closeChecker(c)
			b.ReportAllocs()
			for b.Loop() {
				ctx := &roundCtx{deadline: time.Now().Add(time.Second)}
				if res := c.Check(ctx); !res.OK {
					b.Fatal(res.Detail)
				}
				ctx.cancel(context.Canceled)
			}
		})
	}
}
