package lab

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hadirector/hadirector/integration/lvs"
	"github.com/hadirector/hadirector/internal/config"
)

func TestParseFailure(t *testing.T) {
	for in, want := range map[string]Failure{"": FailMaster, "master": FailMaster, "server": FailServer, "link": FailLink} {
		if got, err := ParseFailure(in); err != nil || got != want {
			t.Errorf("ParseFailure(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := ParseFailure("disk"); err == nil || !strings.Contains(err.Error(), "master, server or link") {
		t.Errorf("ParseFailure(disk) = %v", err)
	}
}

// The lab's config: rs2 is drained (weight 0) after fall 3 × 1s + 900ms,
// and back after rise 2 × 1s + 900ms.
func TestServerCheckFacts(t *testing.T) {
	cfg := loadConfig(t)
	f, err := ServerCheckFacts(cfg, "10.92.0.22")
	if err != nil {
		t.Fatal(err)
	}
	if f.OnFailure != config.FailDrain || f.Weight != 1 || f.Out != 3900*time.Millisecond || f.Back != 2900*time.Millisecond {
		t.Errorf("%+v", f)
	}
	if f.OutHow != "fall 3 × interval 1s + timeout 900ms" || f.BackHow != "rise 2 × interval 1s + timeout 900ms" {
		t.Errorf("%q, %q", f.OutHow, f.BackHow)
	}
	if got := f.Removal(); got != `at weight 0 (on_failure = "drain")` {
		t.Errorf("Removal = %q", got)
	}
	if f := (CheckFacts{OnFailure: config.FailRemove}); !strings.HasPrefix(f.Removal(), "removed") {
		t.Errorf("Removal = %q", f.Removal())
	}
	if _, err := ServerCheckFacts(cfg, "10.92.0.99"); err == nil {
		t.Error("a server that is not in the file has facts")
	}
}

func TestSplitStreamsAndLostConns(t *testing.T) {
	reset := errors.New("read tcp: connection reset by peer")
	reports := []lvs.StreamReport{
		{Sent: 10, Answered: 10, Servers: []string{"rs1"}},
		{Sent: 10, Answered: 9, Servers: []string{"rs2", "rs3"}, Breaks: []lvs.Break{{Seq: 5, Err: reset, Outage: 2 * time.Second}}},
		{Sent: 10, Answered: 10, Servers: []string{"rs3"}},
		{Sent: 4, Answered: 4, Servers: []string{"rs2"}, Breaks: []lvs.Break{{Seq: 5, Err: reset}}}, // not reconnected
	}
	kept, keptAt, lost := SplitStreams(reports, []int{1, 2, 3, 4}, "rs2")
	if len(kept) != 2 || kept[1].Servers[0] != "rs3" || len(keptAt) != 2 || keptAt[0] != 1 || keptAt[1] != 3 || len(lost) != 2 {
		t.Fatalf("kept %v at %v, lost %v", kept, keptAt, lost)
	}
	l := LostConns(lost)
	if l.Conns != 2 || l.Unbroken != 0 || l.Breaks["reset"] != 2 || l.Reconnected != 1 || l.Outage != 2*time.Second {
		t.Errorf("%+v", l)
	}
	if _, at, _ := SplitStreams(reports, nil, "rs2"); at != nil {
		t.Errorf("no counts in, counts out: %v", at)
	}
}

func goodServer() Summary {
	return Summary{
		Kind: FailServer, MasterBefore: "lb1", MasterAfter: "lb1", Failed: "rs2 killed",
		Directors: []string{"lb1", "lb2"},
		Scheduled: map[string]map[string]int{"lb1": {"rs1": 10, "rs2": 5, "rs3": 10}, "lb2": {}},
		Waits:     Waits{Requests: 100, Answered: 90, Failed: 10, Failures: map[string]int{"refused": 10}},
		Survival:  Survival{Conns: 133, Survived: 133, Sent: 1000, Answered: 1000},
		Server: &ServerOutcome{
			Server: "rs2", Others: []string{"rs1", "rs3"},
			Facts: CheckFacts{OnFailure: config.FailDrain, Weight: 1, Out: 3900 * time.Millisecond, Back: 2900 * time.Millisecond,
				OutHow: "fall 3 × interval 1s + timeout 900ms", BackHow: "rise 2 × interval 1s + timeout 900ms"},
			Out:       map[string]time.Duration{"lb1": 2100 * time.Millisecond, "lb2": 4 * time.Second},
			Back:      map[string]time.Duration{"lb1": time.Second, "lb2": 1100 * time.Millisecond},
			WhileOut:  map[string]int{"rs1": 40, "rs3": 40},
			AfterBack: map[string]int{"rs1": 20, "rs2": 20, "rs3": 20},
			Lost:      Lost{Conns: 67, Breaks: map[string]int{"reset": 67}, Reconnected: 67, Outage: 3 * time.Second},
		},
	}
}

func TestServerSummary(t *testing.T) {
	printsOK(t, goodServer(),
		"== Real server failure summary",
		"master after:     lb1: no failover, no VRRP transition on either director\n                    (a real server's failure is the health checks' business)",
		`taken out:        rs2 at weight 0 (on_failure = "drain") by lb1 after 2.1s, lb2 after 4s (late) from the kill`,
		"(bound: fall 3 × interval 1s + timeout 900ms = 3.9s)",
		"brought back:     rs2 at weight 1 by lb1 after 1s, lb2 after 1.1s from its revival",
		"(bound: rise 2 × interval 1s + timeout 900ms = 2.9s)",
		"while out:        answers rs1 40, rs2 0, rs3 40",
		"10 failed (refused 10)",
		"are refused by its kernel)",
		"clients waited:   no answer for at most 0s from the kill on",
		"kept connections: 133 of 133 to rs1 and rs3 survived",
		"lost connections: 67 to rs2 broke (reset 67), as they must",
		"67 reconnected through the VIP to rs1 and rs3, the slowest 3s after its break",
		"RESULT: OK: rs2 left IPVS and came back on both directors",
	)
	failsWith(t, goodServer, map[string]mutation{
		"failover":         {func(s *Summary) { s.MasterAfter = "lb2" }, "needless failover"},
		"a passing one":    {func(s *Summary) { s.Changes = []string{"lb2 went BACKUP"} }, "needless VRRP transitions: lb2 went BACKUP"},
		"lb2 never out":    {func(s *Summary) { delete(s.Server.Out, "lb2") }, "lb2 did not take rs2 out"},
		"lb1 never back":   {func(s *Summary) { delete(s.Server.Back, "lb1") }, "lb1 did not bring rs2 back"},
		"still served":     {func(s *Summary) { s.Server.WhileOut["rs2"] = 3 }, "3 short requests went to rs2 while it was out"},
		"nothing while":    {func(s *Summary) { s.Server.WhileOut = map[string]int{} }, "no short request was answered while rs2 was out"},
		"not after return": {func(s *Summary) { s.Server.AfterBack["rs2"] = 0 }, "no short request went to rs2 after it came back"},
		"a kept conn lost": {func(s *Summary) { s.Survival.Survived = 132 }, "132 of 133"},
		"no answers":       {func(s *Summary) { s.Waits.Answered = 0 }, "no short request was answered"},
	})
}

func goodLink() Summary {
	return Summary{
		Kind: FailLink, MasterBefore: "lb1", MasterAfter: "lb1", Failed: "link hb cut",
		Directors: []string{"lb1", "lb2"},
		Scheduled: map[string]map[string]int{"lb1": {"rs1": 10, "rs2": 10, "rs3": 10}, "lb2": {}},
		Waits:     Waits{Requests: 100, Answered: 100},
		Survival:  Survival{Conns: 200, Survived: 200, Sent: 1000, Answered: 1000},
		Link: &LinkOutcome{
			Link: "hb", Iface: "eth1", Cut: 4 * time.Second,
			Down:     map[string]time.Duration{"lb1": 900 * time.Millisecond, "lb2": 880 * time.Millisecond},
			Up:       map[string]time.Duration{"lb1": 80 * time.Millisecond, "lb2": 90 * time.Millisecond},
			Warnings: []string{"lb2: heartbeat link DOWN: the peer is not heard on it (link hb)", "lb2: the links failed"},
		},
	}
}

func TestLinkSummary(t *testing.T) {
	out := printsOK(t, goodLink(),
		"== Heartbeat link failure summary",
		"master after:     lb1: no failover, no VRRP transition on either director",
		"link hb:          DOWN on lb1 after 900ms, lb2 after 880ms from the cut",
		"up again on lb1 after 80ms, lb2 after 90ms from the restore (cut for 4s)",
		"warned:           lb2: heartbeat link DOWN: the peer is not heard on it (link hb)\n                    lb2: the links failed\n",
		"lb1 served:       30 new connections",
		"clients waited:   no answer for at most 0s from the cut on",
		"kept connections: 200 of 200 survived the cut",
		"RESULT: OK: no failover",
	)
	if strings.Contains(out, "lb2 served") {
		t.Errorf("the backup's empty line is shown:\n%s", out)
	}
	failsWith(t, goodLink, map[string]mutation{
		"failover":       {func(s *Summary) { s.MasterAfter = "lb2" }, "needless failover"},
		"both masters":   {func(s *Summary) { s.MasterAfter = "lb1+lb2" }, "needless failover"},
		"a blip":         {func(s *Summary) { s.Changes = []string{"lb2 went BACKUP"} }, "needless VRRP transitions: lb2 went BACKUP"},
		"never down":     {func(s *Summary) { delete(s.Link.Down, "lb2") }, "lb2 never showed link hb DOWN"},
		"not back":       {func(s *Summary) { delete(s.Link.Up, "lb1") }, "lb1 did not show link hb up again"},
		"a conn broke":   {func(s *Summary) { s.Survival.Survived, s.Survival.Breaks = 199, map[string]int{"timeout": 1} }, "199 of 200"},
		"no master info": {func(s *Summary) { s.MasterBefore, s.MasterAfter = "", "" }, "needless failover"},
		"no outcome":     {func(s *Summary) { s.Link = nil }, "no outcome of the link failure"},
	})
}

func TestLogWarnings(t *testing.T) {
	log := `time=2026-11-21T11:11:01.103Z level=INFO msg="heartbeat link up" node=lb1 link=hb
time=2026-11-21T11:11:01.103Z level=WARN msg="heartbeat link DOWN: the peer is not heard on it" node=lb1 link=hb last_rx=2026-11-21T11:11:00.751Z err="sendmsg: network is unreachable"
time=2026-11-21T11:11:01.316Z level=WARN msg="every heartbeat link to the peer is silent, but its node answers ARP: the links failed; the VRRP timer decides" node=lb1 interface=eth0
time=2026-11-21T11:11:02.103Z level=WARN msg="heartbeat link DOWN: the peer is not heard on it" node=lb1 link=hb last_rx=2026-11-21T11:11:00.751Z err=""
time=2026-11-21T11:11:03.000Z level=ERROR msg=oops node=lb1
`
	got := LogWarnings(log)
	want := []string{
		"heartbeat link DOWN: the peer is not heard on it (link hb) (×2)",
		"every heartbeat link to the peer is silent, but its node answers ARP: the links failed; the VRRP timer decides",
		"oops",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("LogWarnings =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if LogWarnings("") != nil {
		t.Error("warnings in an empty log")
	}
}

func TestLogTransitions(t *testing.T) {
	at := time.Date(2026, 11, 21, 11, 25, 44, 0, time.UTC)
	log := `time=2026-11-21T11:25:44.893Z level=INFO msg="VRRP transition" node=lb2 instance=front from=BACKUP to=MASTER priority=100 reason="no advert from a master for Master_Down_Interval"
time=2026-11-21T11:25:45.000Z level=INFO msg="VIPs taken" node=lb2
time=2026-11-21T11:25:45.648Z level=INFO msg="VRRP transition" node=lb2 instance=front from=MASTER to=BACKUP priority=100 reason="higher-priority master 10.92.0.11 (priority 150)"
`
	got := LogTransitions(log, "cut", at)
	want := []string{
		"BACKUP→MASTER 893ms after the cut (no advert from a master for Master_Down_Interval)",
		"MASTER→BACKUP 1.65s after the cut (higher-priority master 10.92.0.11 (priority 150))",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("LogTransitions =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	s := goodLink()
	s.Changes = []string{"lb2: " + strings.Join(got, "; ")}
	var b strings.Builder
	if err := s.Print(&b, reals); err == nil || !strings.Contains(b.String(), "a backup's timer ran out") {
		t.Errorf("no hint about the timer:\n%s", b.String())
	}
}

func TestBetween(t *testing.T) {
	t0 := time.Unix(100, 0)
	s := []Sample{{Start: t0.Add(-time.Second)}, {Start: t0}, {Start: t0.Add(time.Second)}, {Start: t0.Add(2 * time.Second)}}
	if got := between(s, t0, t0.Add(2*time.Second)); len(got) != 2 || !got[0].Start.Equal(t0) {
		t.Errorf("between = %v", got)
	}
}

func TestPerDirector(t *testing.T) {
	got := perDirector([]string{"lb1", "lb2"}, map[string]time.Duration{"lb1": 5 * time.Second}, 4*time.Second)
	if got != "lb1 after 5s (late), lb2 never" {
		t.Errorf("perDirector = %q", got)
	}
}
