package director

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/hadirector/hadirector/internal/config"
)

const cluster = `
[cluster]
name = "t"
[[node]]
name = "lb1"
priority = 150
[[node.interface]]
name = "eth0"
addresses = ["192.0.2.11/24"]
[[node]]
name = "lb2"
[[node.interface]]
name = "eth0"
addresses = ["192.0.2.12/24"]
[[vrrp_instance]]
name = "VI_1"
vrid = 51
interface = "eth0"
vips = ["192.0.2.100/24"]
priority = { lb2 = 120 }
[[virtual_service]]
address = "192.0.2.100:80"
[[virtual_service.real_server]]
address = "192.0.2.21"
weight = 3
`

func parse(t *testing.T, src string) *config.Config {
	t.Helper()
	c, err := config.Parse("t.toml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func start(t *testing.T, node string) *Engine {
	t.Helper()
	e, err := New(parse(t, cluster), node, "test", slog.New(slog.NewTextHandler(io.Discard, nil)), Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { e.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return e
}

func TestStatusIsPerNode(t *testing.T) {
	for _, tt := range []struct {
		node string
		prio int
	}{{"lb1", 150}, {"lb2", 120}} {
		st, err := start(t, tt.node).Status(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if st.Node != tt.node || st.Instances[0].Priority != tt.prio || st.Instances[0].State != "INIT" ||
			st.Services[0].Key != "tcp/192.0.2.100:80" || st.Services[0].RealServers[0].Weight != 3 {
			t.Errorf("%s: %+v", tt.node, st)
		}
	}
}

func TestReload(t *testing.T) {
	e := start(t, "lb1")
	ctx := context.Background()
	changes, err := e.Reload(ctx, parse(t, strings.Replace(cluster, "weight = 3", "weight = 4", 1)))
	if err != nil || len(changes) != 1 || changes[0].String() != "changed real_server tcp/192.0.2.100:80 192.0.2.21:80: weight" {
		t.Fatalf("Reload = %v, %v", changes, err)
	}
	// A config without this node is refused and the running one kept.
	without := strings.Replace(strings.Replace(cluster, `name = "lb1"`, `name = "lb3"`, 1), "priority = { lb2 = 120 }", "", 1)
	if _, err := e.Reload(ctx, parse(t, without)); err == nil || !strings.Contains(err.Error(), `node "lb1" is not in the new config`) {
		t.Fatalf("Reload without this node: %v", err)
	}
	st, _ := e.Status(ctx)
	if st.Reloads != 1 || st.LastReload.Applied || st.Services[0].RealServers[0].Weight != 4 {
		t.Errorf("after the refused reload: %+v, %+v", st, st.LastReload)
	}
}

func TestStoppedEngine(t *testing.T) {
	e, err := New(parse(t, cluster), "lb1", "test", slog.New(slog.NewTextHandler(io.Discard, nil)), Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	e.Run(ctx)
	c2, cancel2 := context.WithTimeout(context.Background(), time.Second)
	defer cancel2()
	if _, err := e.Status(c2); !errors.Is(err, ErrStopped) {
		t.Errorf("Status on a stopped engine: %v, want ErrStopped", err)
	}
	if _, err := New(parse(t, cluster), "lb9", "test", nil, Options{}); err == nil {
		t.Error("New accepted a node that is not in the config")
	}
}
