package main

import (
	"bytes"
	"context"
	"crypto/rand"
	_ "embed"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/hadirector/hadirector/integration/netlab"
	"github.com/hadirector/hadirector/internal/config"
	"github.com/hadirector/hadirector/internal/control"
)

//go:embed lab.toml
var labConfig []byte

// cmdLab runs the whole cluster on this machine in network namespaces,
// from the embedded cluster file: both directors start from the same file,
// each finds itself, and each reports its status; then everything is taken
// down again. It needs root (namespaces) and leaves nothing behind.
func cmdLab(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("lab", "[--hold DURATION]", stderr)
	hold := fs.Duration("hold", 0, "keep the lab running this long before taking it down (Ctrl-C ends it early)")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(stderr, "hadirector lab: needs root (it creates network namespaces); run it with sudo")
		return exitFail
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := runLab(ctx, *hold, stdout); err != nil {
		fmt.Fprintf(stderr, "hadirector lab: %v\n", err)
		return exitFail
	}
	return exitOK
}

func runLab(ctx context.Context, hold time.Duration, out io.Writer) (err error) {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "hadirector-lab")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	// The heartbeat key both directors share, and the config pointing at it.
	keyPath := filepath.Join(dir, "heartbeat.key")
	key := make([]byte, 32)
	rand.Read(key)
	if err := os.WriteFile(keyPath, key, 0o600); err != nil {
		return err
	}
	cfgText := bytes.Replace(labConfig, []byte("/run/hadirector-lab/heartbeat.key"), []byte(keyPath), 1)
	cfgPath := filepath.Join(dir, "cluster.toml")
	if err := os.WriteFile(cfgPath, cfgText, 0o644); err != nil {
		return err
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return fmt.Errorf("the embedded config is invalid (a bug):\n%w", err)
	}
	fmt.Fprintf(out, "== The cluster file both directors run from (%s):\n\n%s\n", cfgPath, cfgText)

	netlab.Sweep("hdlab")
	lab, err := netlab.New("hdlab")
	if err != nil {
		return err
	}
	defer func() {
		if cerr := lab.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("cleaning up: %w", cerr)
		}
		fmt.Fprintln(out, "== Lab taken down: namespaces and processes removed.")
	}()
	fmt.Fprintf(out, "== Building the network (namespaces of lab %s): lb1 and lb2 on bridge \"front\", and a direct cable\n", lab.Name())
	front, err := lab.AddBridge("front")
	if err != nil {
		return err
	}
	nodes := map[string]*netlab.Node{}
	for _, n := range cfg.NodeNames() {
		if nodes[n], err = lab.AddNode(n); err != nil {
			return err
		}
	}
	// The network follows the file: every eth0 joins the front bridge, the
	// two eth1 are the ends of the direct cable.
	addrs := func(n, ifname string) []string {
		var a []string
		for _, p := range cfg.Node(n).Interface(ifname).Addresses {
			a = append(a, p.String())
		}
		return a
	}
	for _, n := range cfg.NodeNames() {
		if _, err := lab.Connect(nodes[n], front, "eth0", addrs(n, "eth0")...); err != nil {
			return err
		}
	}
	if _, _, err := lab.Link(nodes["lb1"], "eth1", addrs("lb1", "eth1"), nodes["lb2"], "eth1", addrs("lb2", "eth1")); err != nil {
		return err
	}

	sockets := map[string]string{}
	for _, n := range cfg.NodeNames() {
		sockets[n] = filepath.Join(dir, n+".sock")
		log, err := os.Create(filepath.Join(dir, n+".log"))
		if err != nil {
			return err
		}
		defer log.Close()
		cmd := nodes[n].Command(ctx, self, "run", "--config", cfgPath, "--node", n, "--socket", sockets[n])
		cmd.Stdout, cmd.Stderr = log, log
		if _, err := nodes[n].StartCmd(cmd); err != nil {
			return fmt.Errorf("starting director %s: %w", n, err)
		}
		fmt.Fprintf(out, "== Started director %s: hadirector run --config %s --node %s\n", n, cfgPath, n)
	}
	start := time.Now()
	for _, n := range cfg.NodeNames() {
		if _, err := waitStatus(ctx, sockets[n], 15*time.Second); err != nil {
			logs, _ := os.ReadFile(filepath.Join(dir, n+".log"))
			return fmt.Errorf("director %s did not answer: %w\n%s", n, err, logs)
		}
	}
	master, err := waitMaster(ctx, sockets, 15*time.Second)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "\n== Elected: %s is MASTER %s after start\n", master, time.Since(start).Round(time.Millisecond))
	for _, n := range cfg.NodeNames() {
		st, err := control.GetStatus(sockets[n], time.Second)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "\n== hadirector status (director %s)\n\n", n)
		printStatus(out, st, time.Now())
	}
	fmt.Fprintln(out, "\nBoth directors run from one file: one is MASTER and owns the VIP, the other is BACKUP.\nVirtual services and the failover demo join the lab as they are built.")
	if hold > 0 {
		fmt.Fprintf(out, "\n== Holding the lab for %s (Ctrl-C to end): try  ip netns exec %s-lb1 ip addr\n", hold, lab.Name())
		select {
		case <-ctx.Done():
		case <-time.After(hold):
		}
	}
	return nil
}

func waitStatus(ctx context.Context, socket string, limit time.Duration) (*control.Status, error) {
	deadline := time.Now().Add(limit)
	for {
		st, err := control.GetStatus(socket, time.Second)
		if err == nil {
			return st, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return nil, err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitMaster waits until exactly one director is MASTER and the others are
// BACKUP, and returns the master's name.
func waitMaster(ctx context.Context, sockets map[string]string, limit time.Duration) (string, error) {
	deadline := time.Now().Add(limit)
	for {
		master, backups := "", 0
		for n, sock := range sockets {
			st, err := control.GetStatus(sock, time.Second)
			if err != nil || len(st.Instances) == 0 {
				continue
			}
			switch st.Instances[0].State {
			case "MASTER":
				master = n
			case "BACKUP":
				backups++
			}
		}
		if master != "" && backups == len(sockets)-1 {
			return master, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return "", fmt.Errorf("no single master elected within %s", limit)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
