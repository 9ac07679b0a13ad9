package lab

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hadirector/hadirector/integration/lvs"
)

var reals = []string{"rs1", "rs2", "rs3"}

func TestClientWaits(t *testing.T) {
	kill := time.Unix(1000, 0)
	at := func(ms int) time.Time { return kill.Add(time.Duration(ms) * time.Millisecond) }
	d := func(ms int) time.Duration { return time.Duration(ms) * time.Millisecond }
	samples := []Sample{
		{Start: at(-500), Took: d(10), Server: "rs1"},
		{Start: at(-400), Took: d(20), Server: "rs2"}, // the gap before the kill does not count
		{Start: at(-10), Took: d(5), Err: errors.New("read: connection reset by peer")},
		{Start: at(-5), Took: d(1005), Server: "rs3"}, // answered at 1000 ms
		{Start: at(20), Took: d(280), Server: "rs1"},  // answered at 300 ms: 300 ms without an answer
		{Start: at(320), Took: d(30), Server: "rs2"},  // 350
		{Start: at(900), Took: d(300), Server: "rs3"}, // 1200: a 200 ms gap after 1000
	}
	w := ClientWaits(samples, kill)
	if w.Requests != 7 || w.Answered != 6 || w.Failed != 1 || w.Failures["reset"] != 1 {
		t.Errorf("counts: %+v", w)
	}
	if w.Longest != d(1005) {
		t.Errorf("Longest = %v, want 1.005s", w.Longest)
	}
	if w.Outage != d(650) { // from 350 to 1000
		t.Errorf("Outage = %v, want 650ms", w.Outage)
	}
	if w.Usual != d(30) && w.Usual != d(280) {
		t.Errorf("Usual = %v, want the median", w.Usual)
	}
	if got := tally(samples); got["rs1"] != 2 || got["rs3"] != 2 || len(got) != 3 {
		t.Errorf("tally = %v", got)
	}
}

func TestClientWaitsNothingAfterKill(t *testing.T) {
	w := ClientWaits([]Sample{{Start: time.Unix(1, 0), Took: time.Millisecond}}, time.Unix(10, 0))
	if w.Outage != 0 || w.Answered != 1 {
		t.Errorf("%+v", w)
	}
}

func TestConnSurvival(t *testing.T) {
	reports := []lvs.StreamReport{
		{Sent: 10, Answered: 10},
		{Sent: 8, Answered: 7, Breaks: []lvs.Break{{Seq: 8, Err: errors.New("read tcp: i/o timeout")}}},
		{Sent: 10, Answered: 10},
		{Sent: 9, Answered: 9}, // only one line more since the failure: not proven
	}
	s := ConnSurvival(reports, []int{8, 5, 6, 8})
	if s.Conns != 4 || s.Survived != 2 || s.Stalled != 1 || s.Sent != 37 || s.Answered != 36 || s.Breaks["timeout"] != 1 {
		t.Errorf("%+v", s)
	}
	if s := ConnSurvival(reports, nil); s.Survived != 3 || s.Stalled != 0 {
		t.Errorf("before a failure: %+v", s)
	}
}

func good() Summary {
	return Summary{
		MasterBefore: "lb1", MasterAfter: "lb2", Failed: "lb1 killed",
		Takeover: 5 * time.Millisecond, TakeoverReason: "master's process is gone",
		Scheduled: map[string]map[string]int{
			"lb1": {"rs1": 10, "rs2": 10, "rs3": 9},
			"lb2": {"rs1": 3, "rs2": 0, "rs3": 2},
		},
		Waits:    Waits{Requests: 50, Answered: 50},
		Survival: Survival{Conns: 200, Survived: 200, Sent: 1000, Answered: 1000},
	}
}

func TestSummaryCheck(t *testing.T) {
	if err := good().Check(reals); err != nil {
		t.Fatalf("a good run fails: %v", err)
	}
	failsWith(t, good, map[string]mutation{
		"no takeover":        {func(s *Summary) { s.MasterAfter = "lb1" }, "did not change"},
		"no new master":      {func(s *Summary) { s.MasterAfter = "" }, "did not change"},
		"lb2 served nothing": {func(s *Summary) { s.Scheduled["lb2"] = map[string]int{} }, "lb2 scheduled no connection"},
		"lb1 served nothing": {func(s *Summary) { delete(s.Scheduled, "lb1") }, "lb1 scheduled no connection"},
		"lb1 skipped rs2":    {func(s *Summary) { s.Scheduled["lb1"]["rs2"] = 0 }, "lb1 sent nothing to rs2"},
		"one conn broke":     {func(s *Summary) { s.Survival.Survived = 199 }, "199 of 200"},
		"no conns":           {func(s *Summary) { s.Survival = Survival{} }, "0 of 0"},
		"no answers":         {func(s *Summary) { s.Waits.Answered = 0 }, "no short request"},
	})
}

// mutation breaks a good summary; its verdict must name want.
type mutation struct {
	mutate func(*Summary)
	want   string
}

// failsWith checks that each mutation of a good summary fails Check with
// its want, and that Print says FAILED.
func failsWith(t *testing.T, good func() Summary, cases map[string]mutation) {
	t.Helper()
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			s := good()
			tc.mutate(&s)
			var b strings.Builder
			err := s.Print(&b, reals)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(b.String(), "RESULT: FAILED") {
				t.Errorf("Print = %v, want %q\n%s", err, tc.want, b.String())
			}
			if cerr := s.Check(reals); fmt.Sprint(cerr) != fmt.Sprint(err) {
				t.Errorf("Check = %v, Print = %v", cerr, err)
			}
		})
	}
}

// printsOK prints s, which must pass, and checks that the output holds
// every want.
func printsOK(t *testing.T, s Summary, wants ...string) string {
	t.Helper()
	var b strings.Builder
	if err := s.Print(&b, reals); err != nil {
		t.Fatalf("a good run fails: %v\n%s", err, b.String())
	}
	for _, want := range wants {
		if !strings.Contains(b.String(), want) {
			t.Errorf("missing %q in\n%s", want, b.String())
		}
	}
	return b.String()
}

func TestSummaryPrint(t *testing.T) {
	s := good()
	s.Waits.Failed, s.Waits.Failures = 3, map[string]int{"timeout": 1, "reset": 2}
	printsOK(t, s,
		"master before:    lb1",
		"master after:     lb2, 5ms after the kill: master's process is gone",
		"lb1 served:       29 new connections (rs1 10, rs2 10, rs3 9)",
		"200 of 200 survived",
		"50 answered, usually in 0s; 3 failed (reset 2, timeout 1)",
		"RESULT: OK",
	)
}
