package integration

import (
	"context"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Interoperability with Debian's keepalived (2.2.7) as a VRRPv3 peer: one
// hadirector and one keepalived share VRID 66 and one VIP on a bridge, and
// each must treat the other as an ordinary VRRPv3 router (RFC 5798):
// elections by priority both ways, takeover on a graceful stop (priority 0)
// and on a crash (Master_Down_Interval), the backup timing its down timer by
// the master's advert interval (§6.4.2), preemption, and no advert of the
// other side ever dropped. hadirector's cluster file names only its own
// node; keepalived is a foreign router on the segment.
//
// hadirector's state comes from `hadirector status --json`, keepalived's
// from its "Entering … STATE" log lines; the VIP is read from each node's
// eth0 over netlink, and a client on the segment checks who answers on it.
//
// Each case builds its own lab and runs in parallel with the others; each is
// bounded by a context deadline. The timing bounds are generous (this is a
// correctness test, not a benchmark): the measured times are logged.
func TestKeepalivedInterop(t *testing.T) {
	requireInterop(t)
	const adv = 100 * time.Millisecond

	run := func(name string, f func(ctx context.Context, t *testing.T, l *interopLab)) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			f(ctx, t, newInteropLab(ctx, t))
		})
	}

	// 1 (and 6): keepalived outranks hadirector. hadirector is backup, names
	// keepalived as master and drops none of its adverts.
	run("keepalived_higher", func(ctx context.Context, t *testing.T, l *interopLab) {
		ka := l.startKA(ctx, 200, adv, "BACKUP")
		hd := l.startHD(ctx, 100, adv)
		r := interopRoles{hd: hd, ka: ka, master: "ka"}
		l.settle(ctx, r)
		capMark := 0
		if l.capture != nil {
			capMark = l.capture.mark()
		}
		l.hold(ctx, r, time.Second)
		if l.capture != nil {
			// Proof that adverts were there to drop: keepalived's adverts
			// seen on hadirector's interface during the hold.
			n := l.capture.countFrom(capMark, interopKAAddr+" > 224.0.0.18")
			if n < 3 {
				t.Errorf("only %d adverts from keepalived on hd's eth0 in 1 s at 100 ms", n)
			}
			t.Logf("%d adverts from keepalived reached hd's eth0 in 1 s; hadirector dropped none", n)
		}
		l.waitClientReaches(ctx, "ka")
	})

	// 2: hadirector outranks keepalived. keepalived stays backup: it accepts
	// hadirector's adverts (a rejected one would make it master too).
	run("hadirector_higher", func(ctx context.Context, t *testing.T, l *interopLab) {
		ka := l.startKA(ctx, 100, adv, "BACKUP")
		hd := l.startHD(ctx, 150, adv)
		r := interopRoles{hd: hd, ka: ka, master: "hd"}
		st := l.settle(ctx, r)
		if got := st.Instances[0].Master; got != interopHDAddr {
			t.Errorf("hadirector as master reports master %q, want its own %s", got, interopHDAddr)
		}
		l.hold(ctx, r, time.Second)
		ka.checkAccepted(t)
		l.waitClientReaches(ctx, "hd")
	})

	// 3: the master goes away, gracefully (SIGTERM: priority 0) or not
	// (SIGKILL: Master_Down_Interval), in both directions.
	for _, from := range []string{"hd", "ka"} {
		for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
			name := map[string]string{"hd": "hadirector", "ka": "keepalived"}[from]
			run("takeover/"+name+"_master_"+map[syscall.Signal]string{syscall.SIGTERM: "sigterm", syscall.SIGKILL: "sigkill"}[sig],
				func(ctx context.Context, t *testing.T, l *interopLab) { interopTakeover(ctx, t, l, from, sig, adv) })
		}
	}

	// 4: different advert intervals. The backup times its down timer by the
	// master's interval (RFC 5798 §6.4.2), not its own.
	run("advert_interval/hadirector_1s_backup", func(ctx context.Context, t *testing.T, l *interopLab) {
		ka := l.startKA(ctx, 200, adv, "BACKUP")
		hd := l.startHD(ctx, 100, time.Second)
		r := interopRoles{hd: hd, ka: ka, master: "ka"}
		l.settle(ctx, r)
		l.hold(ctx, r, time.Second)
		if line, _, ok := hd.log.find(0, "to=MASTER"); ok {
			t.Errorf("hadirector was master at some point: %s", line.text)
		}
		l.waitClientReaches(ctx, "ka")
		t0 := time.Now()
		l.kill(ka.proc)
		st := hd.waitState(ctx, t, "MASTER")
		took := st.Instances[0].LastTransition.Sub(t0)
		t.Logf("keepalived (master, 100 ms) SIGKILLed: hadirector (backup, 1 s) master after %v (RFC: at most %v by the master's interval; %v by its own)",
			took.Round(time.Millisecond), rfcMasterDown(100, adv).Round(time.Millisecond), rfcMasterDown(100, time.Second).Round(time.Millisecond))
		if took > 1500*time.Millisecond || took < 0 {
			t.Errorf("hadirector took over after %v; want < 1.5 s (the master's 100 ms interval, not its own 1 s)", took)
		}
		l.waitVIP(ctx, l.hd, true)
		l.checkDrops(statusOf(ctx, t, hd.socket))
		t.Logf("the client reached hadirector %v after the kill", l.waitClientReaches(ctx, "hd").Sub(t0).Round(time.Millisecond))
	})
	run("advert_interval/keepalived_1s_backup", func(ctx context.Context, t *testing.T, l *interopLab) {
		ka := l.startKA(ctx, 100, time.Second, "BACKUP")
		hd := l.startHD(ctx, 150, adv)
		r := interopRoles{hd: hd, ka: ka, master: "hd"}
		l.settle(ctx, r)
		l.hold(ctx, r, time.Second)
		if line, _, ok := ka.log.find(0, "advertisement interval updated"); ok {
			t.Logf("keepalived: %s", line.text)
		}
		ka.checkAccepted(t)
		l.waitClientReaches(ctx, "hd")
		mark := ka.log.mark()
		t0 := time.Now()
		l.kill(hd.proc)
		took := ka.enteredAfter(ctx, t, mark, "MASTER").Sub(t0)
		t.Logf("hadirector (master, 100 ms) SIGKILLed: keepalived (backup, 1 s) master after %v (RFC: at most %v by the master's interval; %v by its own)",
			took.Round(time.Millisecond), rfcMasterDown(100, adv).Round(time.Millisecond), rfcMasterDown(100, time.Second).Round(time.Millisecond))
		if took > 1500*time.Millisecond {
			t.Errorf("keepalived took over after %v; want < 1.5 s (the master's 100 ms interval, not its own 1 s)", took)
		}
		l.waitVIP(ctx, l.ka, true)
		t.Logf("the client reached keepalived %v after the kill", l.waitClientReaches(ctx, "ka").Sub(t0).Round(time.Millisecond))
	})

	// 5: preemption. One is master alone; the other starts with a higher
	// priority, takes over, and the first goes backup.
	run("preempt/hadirector_preempts_keepalived", func(ctx context.Context, t *testing.T, l *interopLab) {
		ka := l.startKA(ctx, 100, adv, "MASTER")
		ka.enteredAfter(ctx, t, 0, "MASTER")
		l.waitVIP(ctx, l.ka, true)
		l.waitClientReaches(ctx, "ka")
		mark := ka.log.mark()
		t0 := time.Now()
		hd := l.startHD(ctx, 150, adv)
		r := interopRoles{hd: hd, ka: ka, master: "hd"}
		in := l.settle(ctx, r).Instances[0]
		t.Logf("hadirector (150) started next to keepalived master (100): master %v after its start (its Master_Down_Interval %v), reason %q",
			in.LastTransition.Sub(t0).Round(time.Millisecond), rfcMasterDown(150, adv).Round(time.Millisecond), in.LastReason)
		if line, _, ok := ka.log.find(mark, "higher priority 150"); !ok {
			t.Errorf("keepalived did not log hadirector's higher-priority advert")
		} else {
			t.Logf("keepalived: %s", strings.TrimSpace(line.text))
		}
		t.Logf("the client reached hadirector %v after its start", l.waitClientReaches(ctx, "hd").Sub(t0).Round(time.Millisecond))
		l.hold(ctx, r, 500*time.Millisecond)
		ka.checkAccepted(t)
	})
	run("preempt/keepalived_preempts_hadirector", func(ctx context.Context, t *testing.T, l *interopLab) {
		hd := l.startHD(ctx, 100, adv)
		hd.waitState(ctx, t, "MASTER")
		l.waitVIP(ctx, l.hd, true)
		l.waitClientReaches(ctx, "hd")
		t0 := time.Now()
		ka := l.startKA(ctx, 150, adv, "BACKUP")
		r := interopRoles{hd: hd, ka: ka, master: "ka"}
		in := l.settle(ctx, r).Instances[0]
		became := ka.enteredAfter(ctx, t, 0, "MASTER")
		t.Logf("keepalived (150) started next to hadirector master (100): master %v after its start; hadirector backup %v after it, reason %q",
			became.Sub(t0).Round(time.Millisecond), in.LastTransition.Sub(became).Round(time.Millisecond), in.LastReason)
		if !strings.Contains(in.LastReason, "higher-priority master "+interopKAAddr) {
			t.Errorf("hadirector went backup for %q, want keepalived's higher-priority advert", in.LastReason)
		}
		t.Logf("the client reached keepalived %v after its start", l.waitClientReaches(ctx, "ka").Sub(t0).Round(time.Millisecond))
		l.hold(ctx, r, 500*time.Millisecond)
	})
}

// interopTakeover runs one case of 3: from ("hd" or "ka") is master with
// priority 150 over the other's 100; it is stopped with sig and the other
// must take over within 2 × its Master_Down_Interval (a generous bound: a
// graceful stop takes Skew_Time, a crash at most Master_Down_Interval).
func interopTakeover(ctx context.Context, t *testing.T, l *interopLab, from string, sig syscall.Signal, adv time.Duration) {
	hdPrio, kaPrio := 100, 150
	if from == "hd" {
		hdPrio, kaPrio = 150, 100
	}
	ka := l.startKA(ctx, kaPrio, adv, "BACKUP")
	hd := l.startHD(ctx, hdPrio, adv)
	l.settle(ctx, interopRoles{hd: hd, ka: ka, master: from})
	l.checkDrops(statusOf(ctx, t, hd.socket))
	// The client knows the master (its ARP entry for the VIP points there),
	// so that the new master's gratuitous ARP has an entry to move.
	l.waitClientReaches(ctx, from)

	name := map[string]string{"hd": "hadirector", "ka": "keepalived"}
	other := map[string]string{"hd": "ka", "ka": "hd"}[from]
	oldNode, newNode := l.hd, l.ka
	proc := hd.proc
	if from == "ka" {
		oldNode, newNode, proc = l.ka, l.hd, ka.proc
	}

	mark := ka.log.mark()
	t0 := time.Now()
	if sig == syscall.SIGTERM {
		l.term(proc)
	} else {
		l.kill(proc)
	}
	var took time.Duration
	if other == "ka" {
		took = ka.enteredAfter(ctx, t, mark, "MASTER").Sub(t0)
	} else {
		took = hd.waitState(ctx, t, "MASTER").Instances[0].LastTransition.Sub(t0)
	}
	if sig == syscall.SIGTERM {
		// hadirector hands over (it keeps the VIP until keepalived has
		// spoken); keepalived drops it at once. Either way it goes.
		l.waitVIP(ctx, oldNode, false)
		t.Logf("%s had released the VIP by %v after the signal", name[from], time.Since(t0).Round(time.Millisecond))
	}
	l.waitVIP(ctx, newNode, true)
	reached := l.waitClientReaches(ctx, other)
	t.Logf("%s master stopped with %v: %s master after %v (RFC: Skew_Time %v after priority 0, at most Master_Down_Interval %v after a crash); the client reached it by %v",
		name[from], sig, name[other], took.Round(time.Millisecond),
		(time.Duration(256-100) * adv / 256).Round(time.Millisecond), rfcMasterDown(100, adv).Round(time.Millisecond),
		reached.Sub(t0).Round(time.Millisecond))
	if bound := 2 * rfcMasterDown(100, adv); took < 0 || took > bound {
		t.Errorf("%s took over after %v; want within 2 × Master_Down_Interval = %v", name[other], took, bound)
	}

	err := l.waitExit(ctx, name[from], proc)
	if sig == syscall.SIGTERM {
		if err != nil {
			t.Errorf("%s exited with %v after SIGTERM", name[from], err)
		}
	} else {
		t.Logf("after SIGKILL of %s as master, its VIP is still on %s: %v (expected: nothing removes it; keepalived behaves the same)",
			name[from], from, hasAddr(t, oldNode, "eth0", interopVIP))
	}
	if other == "hd" {
		l.checkDrops(statusOf(ctx, t, hd.socket))
	} else {
		ka.checkAccepted(t)
	}
}
