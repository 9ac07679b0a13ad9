package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestBrokenConfigs loads each file in testdata/bad and checks every problem
// it must report: position, key and the words that tell the operator what is
// wrong. Each file is the valid testdata/base.toml with one defect.
func TestBrokenConfigs(t *testing.T) {
	type want struct {
		line, col int // 0: no position (file-level)
		key       string
		msg       string // substring of the message
		hint      string // substring of the hint ("" = not checked)
	}
	tests := []struct {
		file  string
		wants []want
	}{
		{"empty", []want{{0, 0, "", "the file is empty", "[cluster]"}}},
		{"not_toml", []want{{1, 6, "", "not valid TOML: expected '=' after key", "toml.io"}}},
		{"duplicate_toml_key", []want{{24, 1, "vrid", "not valid TOML: key vrid is already defined", ""}}},
		{"missing_cluster", []want{{0, 0, "cluster", "missing (required)", "add a [cluster] table"}}},
		{"node_as_table", []want{{4, 2, "node", "expected an array, got a table", "write [[node]] for each entry"}}},
		{"unknown_top_table", []want{{25, 2, "clustr", "unknown key", `did you mean "cluster"?`}}},
		{"unknown_key_instance", []want{{21, 1, "vrrp_instance[0].vrd", "unknown key", `did you mean "vrid"?`}}},
		{"on_failure_value", []want{{28, 14, "virtual_service[0].on_failure", `"delete" is not a failure policy; use one of: drain, remove`, ""}}},
		{"check_http_bad_digest", []want{{31, 1, "virtual_service[0].check.body_sha256", `"abc" is not a SHA-256 digest`, "sha256sum"}, {32, 1, "virtual_service[0].check.dynamic_weight", `does not apply to a check of type "http"`, "remove it"}}},
		{"sync_profile_ranges", []want{
			{27, 1, "sync.sync_threshold", "[50 3] is not a valid threshold and period", "threshold < period"},
			{28, 1, "sync.sync_refresh_period", "1.5s is not whole seconds", "whole seconds"},
			{29, 1, "sync.sync_retries", "4 is out of range 0..3", "refresh period / 8"},
			{30, 1, "sync.peer_port", "8848 collides with the sync traffic on 8848", "default is 8850"},
			{31, 1, "sync.catch_up", "1.5 is out of range", "0 (gate off) to 1"},
			{32, 1, "sync.key_file", `"keys/peer" is not an absolute path`, "absolute path"},
		}},
		{"check_unknown_key", []want{{33, 1, "virtual_service[0].real_server[0].check.intervall", "unknown key", `did you mean "interval"?`}}},
		{"missing_vrid", []want{{19, 3, "vrrp_instance[0].vrid", "missing (required)", "1..255"}}},
		{"vrid_range", []want{{21, 1, "vrrp_instance[0].vrid", "256 is out of range 1..255", ""}}},
		{"duplicate_vrid", []want{{27, 1, "vrrp_instance[1].vrid", `VRID 51 is already used on eth0 (inet) by vrrp_instance "VI_1"`, "pick another"}}},
		{"vip_in_two_instances", []want{{29, 9, "vrrp_instance[1].vips[0]", `192.0.2.100 is already a VIP of vrrp_instance "VI_1"`, ""}}},
		{"vips_mixed_family", []want{{23, 27, "vrrp_instance[0].vips[1]", "2001:db8::100 is inet6 but the instance's first VIP is inet", "two instances"}}},
		{"advert_interval_step", []want{{24, 1, "vrrp_instance[0].advert_interval", "15ms is not a multiple of 10ms", "centiseconds"}}},
		{"advert_interval_integer", []want{{24, 19, "vrrp_instance[0].advert_interval", "expected a string, got an integer", `"1s"`}}},
		{"priority_unknown_node", []want{{24, 25, "vrrp_instance[0].priority.lb3", `node "lb3" is not in this file`, "lb1, lb2"}}},
		{"node_priority_range", []want{{6, 1, "node[0].priority", "300 is out of range 1..255", ""}}},
		{"duplicate_node", []want{{13, 1, "node[1].name", `node "lb1" is already defined at line 4`, "unique"}}},
		{"preempt_delay_nopreempt", []want{{25, 1, "vrrp_instance[0].preempt_delay", "no effect with preempt = false", ""}}},
		{"instance_interface_missing_on_node", []want{
			{22, 1, "vrrp_instance[0].interface", `node "lb1" has no interface "eth1"`, `[[node.interface]] name = "eth1"`},
			{22, 1, "vrrp_instance[0].interface", `node "lb2" has no interface "eth1"`, ""},
		}},
		{"unknown_scheduler", []want{{27, 13, "virtual_service[0].scheduler", `"wlcc" is not a scheduler; use one of: rr, wrr`, ""}}},
		{"service_address_bad", []want{{26, 11, "virtual_service[0].address", `"192.0.2.300:80" is not an address or address:port`, ""}}},
		{"service_fwmark_and_address", []want{{27, 1, "virtual_service[0].fwmark", "mutually exclusive", ""}}},
		{"real_server_family", []want{{29, 1, "virtual_service[0].real_server[0].address", "2001:db8::21 is inet6 but the service is inet", ""}}},
		{"real_server_dr_port", []want{{30, 1, "virtual_service[0].real_server[0].address", "DR forwarding cannot change the port", `forwarding = "nat"`}}},
		{"real_server_weight_type", []want{{30, 10, "virtual_service[0].real_server[0].weight", "expected an integer, got a string", ""}}},
		{"quorum_unreachable", []want{{27, 1, "virtual_service[0].quorum", "quorum 5 is more than the sum of all real-server weights (2)", ""}}},
		{"check_timeout_over_interval", []want{{31, 1, "virtual_service[0].check.timeout", "timeout 2s must be more than 0 and at most the interval (1s)", ""}}},
		{"check_key_wrong_type", []want{{30, 1, "virtual_service[0].check.path", `does not apply to a check of type "tcp"`, "remove it"}}},
		{"scheduler_flag_wrong_scheduler", []want{{28, 20, "virtual_service[0].scheduler_flags[0]", "sh-port applies to the sh scheduler, not wlc", `scheduler = "sh"`}}},
		{"sync_interface_no_ipv4", []want{
			{26, 1, "sync.interface", `node "lb1" has no interface "eth9"`, ""},
			{26, 1, "sync.interface", `node "lb2" has no inet address on "eth9"`, ""},
		}},
		{"unicast_no_peers", []want{{18, 1, "vrrp_instance[0].unicast", `node "lb1" would have no unicast peer: an empty peer list is refused, never a silent fall-back to multicast`, "unicast_peers"}}},
		{"unicast_peers_without_unicast", []want{{24, 1, "vrrp_instance[0].unicast_peers", "does not apply without unicast = true", ""}}},
		{"sync_group_unknown_instance", []want{{27, 22, "sync_group[0].instances[1]", `no vrrp_instance is called "VI_gw"`, "VI_1"}}},
		{"track_weight_range", []want{{27, 1, "vrrp_instance[0].track_interface[0].weight", "-300 is out of range -253..253", "Fault"}}},
		{"notify_relative", []want{{24, 1, "vrrp_instance[0].notify", `"notify.sh" is not an absolute path`, "without a shell"}}},
		{"link_wrong_type_key", []want{{31, 1, "link[0].device", `does not apply to a link of type "udp"`, "remove it"}}},
	}
	files, _ := filepath.Glob("testdata/bad/*.toml")
	if len(files) != len(tests) {
		t.Errorf("testdata/bad has %d files but the table has %d cases: keep them in step", len(files), len(tests))
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			path := filepath.Join("testdata", "bad", tt.file+".toml")
			c, err := Load(path)
			if c != nil || err == nil {
				t.Fatalf("Load(%s) = %v, %v; want no config and an error", path, c, err)
			}
			var probs Problems
			if !errors.As(err, &probs) {
				t.Fatalf("error is %T, want Problems", err)
			}
			if len(probs) != len(tt.wants) {
				t.Fatalf("got %d problems, want %d:\n%v", len(probs), len(tt.wants), err)
			}
			for i, w := range tt.wants {
				p := probs[i]
				if p.File != path || p.Pos != (Pos{w.line, w.col}) || p.Key != w.key || !strings.Contains(p.Msg, w.msg) || !strings.Contains(p.Hint, w.hint) {
					t.Errorf("problem %d:\n got  %s\n want %s:%d:%d: %s: ...%s... (hint: ...%s...)", i, p, path, w.line, w.col, w.key, w.msg, w.hint)
				}
			}
		})
	}
}

func TestProblemFormat(t *testing.T) {
	p := Problem{File: "a.toml", Pos: Pos{3, 7}, Key: "vrrp_instance[0].vrid", Msg: "bad", Hint: "fix it"}
	if got, want := p.String(), "a.toml:3:7: vrrp_instance[0].vrid: bad (hint: fix it)"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	p = Problem{File: "a.toml", Msg: "the file is empty"}
	if got, want := p.String(), "a.toml: the file is empty"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// TestEveryProblemReported: check prints all problems, in file order, not
// only the first.
func TestEveryProblemReported(t *testing.T) {
	src := `
[cluster]
name = "t"
colour = "blue"

[[node]]
name = "lb1"
priority = 0

[[node.interface]]
name = "eth0"
addresses = ["192.0.2.11/24"]

[[vrrp_instance]]
name = "VI_1"
vrid = 300
interface = "eth0"
vips = ["192.0.2.100"]
advert_interval = 5
`
	_, err := Parse("multi.toml", []byte(src))
	var probs Problems
	if !errors.As(err, &probs) {
		t.Fatalf("want Problems, got %v", err)
	}
	// Decoding problems come first (unknown key, wrong type) and stop
	// before semantic checks, which would only repeat their consequences.
	want := []string{"multi.toml:4:1: cluster.colour: unknown key", "multi.toml:19:19: vrrp_instance[0].advert_interval: expected a string"}
	if len(probs) != len(want) {
		t.Fatalf("got %d problems, want %d:\n%v", len(probs), len(want), err)
	}
	for i, w := range want {
		if !strings.HasPrefix(probs[i].String(), w) {
			t.Errorf("problem %d = %q, want prefix %q", i, probs[i], w)
		}
	}
	// With the decoding problems fixed, all semantic ones appear together.
	src = strings.Replace(strings.Replace(src, `colour = "blue"`, "", 1), "advert_interval = 5", `advert_interval = "5ms"`, 1)
	_, err = Parse("multi.toml", []byte(src))
	if !errors.As(err, &probs) || len(probs) != 3 {
		t.Fatalf("want 3 problems (priority, vrid, advert_interval), got:\n%v", err)
	}
	for i, key := range []string{"node[0].priority", "vrrp_instance[0].vrid", "vrrp_instance[0].advert_interval"} {
		if probs[i].Key != key {
			t.Errorf("problem %d key = %q, want %q", i, probs[i].Key, key)
		}
	}
}

func TestReadErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct{ path, msg string }{
		{filepath.Join(dir, "nope.toml"), "no such file or directory (check the --config path)"},
		{dir, "is a directory (--config takes a file)"},
	} {
		c, err := Load(tt.path)
		if c != nil || err == nil || !strings.Contains(err.Error(), "cannot read the config: "+tt.msg) || !strings.HasPrefix(err.Error(), tt.path+": ") {
			t.Errorf("Load(%s) = %v, %v; want an error naming the file and %q", tt.path, c, err, tt.msg)
		}
	}
}

func TestExampleIsValid(t *testing.T) {
	c, err := Load("../../etc/hadirector.toml")
	if err != nil {
		t.Fatalf("etc/hadirector.toml must pass check:\n%v", err)
	}
	if len(c.Nodes) != 2 || len(c.Services) != 2 || c.Services[0].Forwarding != DR {
		t.Errorf("the example is a DR pair with two virtual services; got %d nodes, %d services", len(c.Nodes), len(c.Services))
	}
}

func TestDefaults(t *testing.T) {
	src, err := os.ReadFile("testdata/base.toml")
	if err != nil {
		t.Fatal(err)
	}
	src = append(src, `
[[virtual_service]]
address = "192.0.2.100:80"

[virtual_service.check]
type = "http"
interval = "500ms"

[[virtual_service.real_server]]
address = "192.0.2.21"

[[virtual_service.real_server]]
address = "192.0.2.22"
weight = 0
[virtual_service.real_server.check]
type = "tcp"

[[virtual_service]]
fwmark = 9
persistence_timeout = "60s"

[sync]
interface = "eth0"
`...)
	c, err := Parse("defaults.toml", src)
	if err != nil {
		t.Fatal(err)
	}
	in := c.Instances[0]
	s := c.Services[0]
	r0, r1 := s.RealServers[0], s.RealServers[1]
	fw := c.Services[1]
	checks := []struct {
		name      string
		got, want any
	}{
		{"node priority", c.Nodes[1].Priority, DefaultNodePriority},
		{"explicit node priority kept", c.Nodes[0].Priority, 150},
		{"PriorityOf", c.PriorityOf(&in, "lb1"), 150},
		{"advert_interval", in.AdvertInterval.D(), DefaultAdvertInterval},
		{"preempt", in.Preempt, true},
		{"protocol", s.Protocol, TCP},
		{"scheduler", s.Scheduler, Scheduler("wlc")},
		{"forwarding", s.Forwarding, DR},
		{"quorum", s.Quorum, 1},
		{"name from key", s.Name, "tcp/192.0.2.100:80"},
		{"real port from service", r0.Address.Port, 80},
		{"weight", r0.Weight, 1},
		{"explicit weight 0 kept", r1.Weight, 0},
		{"real forwarding from service", r0.Forwarding, DR},
		{"check inherited", r0.Check.Type, CheckHTTP},
		{"check path", r0.Check.Path, "/"},
		{"check status", r0.Check.ExpectStatus, []StatusRange{{200, 299}}},
		{"check timeout capped by interval", r0.Check.Timeout.D(), 500 * time.Millisecond},
		{"check rise/fall", [2]int{r0.Check.Rise, r0.Check.Fall}, [2]int{2, 3}},
		{"own check replaces service's", r1.Check.Type, CheckTCP},
		{"own check gets defaults", r1.Check.Interval.D(), DefaultCheckInterval},
		{"fwmark family", fw.Family, IPv4},
		{"fwmark key", fw.Key(), "fwmark/9/inet"},
		{"persistence granularity", fw.PersistenceGranularity, 32},
		{"sync enabled", c.Sync.Enabled, true},
		{"sync id = first VRID", c.Sync.SyncID, 51},
		{"sync group", c.Sync.Group, "224.0.0.81"},
		{"sync port", c.Sync.Port, 8848},
		{"sync mode", c.Sync.Mode, SyncBoth},
		{"on_failure", s.OnFailure, FailDrain},
		{"service notify_timeout", s.NotifyTimeout.D(), DefaultNotifyTimeout},
		{"check initial", r0.Check.Initial, InitialUp},
		{"ipvs reconcile_period", c.IPVS.ReconcilePeriod.D(), DefaultReconcile},
	}
	for _, ck := range checks {
		if !equal(ck.got, ck.want) {
			t.Errorf("%s = %v, want %v", ck.name, ck.got, ck.want)
		}
	}
}

func equal(a, b any) bool { return strings.TrimSpace(fmtAny(a)) == strings.TrimSpace(fmtAny(b)) }

// TestTOMLForms: the same cluster written with inline tables, dotted keys
// and arrays of inline tables decodes to the same config.
func TestTOMLForms(t *testing.T) {
	long, err := os.ReadFile("testdata/base.toml")
	if err != nil {
		t.Fatal(err)
	}
	long = append(long, "priority = { lb2 = 120 }\n\n[[virtual_service]]\naddress = \"192.0.2.100:80\"\n[[virtual_service.real_server]]\naddress = \"192.0.2.21\"\nweight = 3\n"...)
	short := `cluster.name = "t"
node = [
  { name = "lb1", priority = 150, interface = [{ name = "eth0", addresses = ["192.0.2.11/24"] }] },
  { name = "lb2", interface = [{ name = "eth0", addresses = ["192.0.2.12/24"] }] },
]
[[vrrp_instance]]
name = "VI_1"
vrid = 0x33
interface = "eth0"
vips = ["192.0.2.100/24"]
priority.lb2 = 120
[[virtual_service]]
address = "192.0.2.100:80"
real_server = [{ address = "192.0.2.21", weight = 3 }]
`
	a, err := Parse("long.toml", long)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Parse("short.toml", []byte(short))
	if err != nil {
		t.Fatal(err)
	}
	if d := Diff(a, b); len(d) != 0 {
		t.Errorf("the two forms differ: %v", d)
	}
}

func fmtAny(v any) string { return fmt.Sprintf("%v", v) }
