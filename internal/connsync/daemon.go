package connsync

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/netlink"

	"github.com/hadirector/hadirector/internal/ipvs"
)

// The generic-netlink API of the sync daemons (include/uapi/linux/ip_vs.h;
// net/netfilter/ipvs/ip_vs_ctl.c: ip_vs_genl_set_daemon,
// ip_vs_genl_new_daemon, ip_vs_genl_dump_daemons, ip_vs_genl_fill_daemon).
const (
	genlName    = "IPVS" // IPVS_GENL_NAME
	genlVersion = 1      // IPVS_GENL_VERSION

	cmdNewDaemon = 9  // IPVS_CMD_NEW_DAEMON; also the command of GET_DAEMON's replies
	cmdDelDaemon = 10 // IPVS_CMD_DEL_DAEMON
	cmdGetDaemon = 11 // IPVS_CMD_GET_DAEMON (dump only)

	cmdAttrDaemon = 3 // IPVS_CMD_ATTR_DAEMON: the nest of the attributes below

	daemonAttrState       = 1 // u32: IP_VS_STATE_MASTER or IP_VS_STATE_BACKUP
	daemonAttrMcastIfn    = 2 // NUL-terminated string, at most 15 characters
	daemonAttrSyncID      = 3 // u32
	daemonAttrSyncMaxlen  = 4 // u16
	daemonAttrMcastGroup  = 5 // 4 bytes, network order
	daemonAttrMcastGroup6 = 6 // 16 bytes
	daemonAttrMcastPort   = 7 // u16, host order
	daemonAttrMcastTTL    = 8 // u8

	ifNameMax = 15 // IP_VS_IFNAME_MAXLEN - 1
)

// DefaultDaemonTimeout bounds each [Daemons] call unless [WithTimeout] says
// otherwise. Starting a daemon takes the RTNL lock, so a busy host can make
// it wait.
const DefaultDaemonTimeout = 5 * time.Second

var (
	// ErrTimeout: the kernel did not answer a call in time.
	ErrTimeout = errors.New("connsync: sync daemon call timed out")
	// ErrClosed: the Daemons was closed.
	ErrClosed = errors.New("connsync: sync daemon handle is closed")
	// ErrConfig: a DaemonConfig that Start refuses before asking the
	// kernel, or a ListenerConfig that Listen refuses.
	ErrConfig = errors.New("connsync: invalid sync daemon config")
)

// Role is a sync daemon's role: the kernel runs at most one of each per
// network namespace.
type Role uint32

// Roles (IP_VS_STATE_MASTER, IP_VS_STATE_BACKUP).
const (
	Master Role = 1 // sends this node's connections
	Backup Role = 2 // receives the peer's connections into this node's table
)

func (r Role) String() string {
	switch r {
	case Master:
		return "master"
	case Backup:
		return "backup"
	}
	return fmt.Sprintf("role(%d)", uint32(r))
}

// DaemonConfig is one sync daemon. Zero optional fields take the kernel's
// defaults; List reports the values in effect.
type DaemonConfig struct {
	Role      Role
	Interface string // the interface the daemon sends or listens on (mcast_ifn)
	// SyncID is written into (master) or required of (backup; 0 accepts
	// any) each message. Only 8 bits travel, so Start refuses more than 255:
	// a backup with a larger sync ID would drop every message.
	SyncID uint32
	// MaxLen is the largest message payload. 0 means the kernel's default:
	// 1500 − 28 for a master, the interface MTU (at least 1500) − 28 for a
	// backup (− 48 with an IPv6 group). The kernel clamps other values to
	// 1 (master) or 1024 (backup) up to 65535 − 28 (or − 48). A backup must
	// accept the master's MaxLen.
	MaxLen uint16
	// Group is the multicast group: an IPv4 or IPv6 multicast address. The
	// zero Addr means DefaultGroup.
	Group netip.Addr
	Port  uint16 // UDP port; 0 means DefaultPort. Thread i uses Port+i.
	TTL   uint8  // multicast TTL or hop limit of the master; 0 means 1
}

func (c DaemonConfig) String() string {
	return fmt.Sprintf("%v sync daemon (interface %s, sync ID %d, maxlen %d, group %v, port %d, TTL %d)",
		c.Role, c.Interface, c.SyncID, c.MaxLen, c.Group, c.Port, c.TTL)
}

func (c DaemonConfig) check() error {
	switch {
	case c.Role != Master && c.Role != Backup:
		return fmt.Errorf("%w: role %v", ErrConfig, c.Role)
	case c.Interface == "" || len(c.Interface) > ifNameMax || strings.ContainsRune(c.Interface, 0):
		return fmt.Errorf("%w: interface name %q (1 to %d bytes)", ErrConfig, c.Interface, ifNameMax)
	case c.SyncID > 0xff:
		return fmt.Errorf("%w: sync ID %d: only 8 bits reach the wire (0 to 255)", ErrConfig, c.SyncID)
	case c.Group.IsValid() && (!c.Group.IsMulticast() || c.Group.Zone() != ""):
		return fmt.Errorf("%w: group %v is not a multicast address", ErrConfig, c.Group)
	}
	return nil
}

// conn is what Daemons needs of a *genetlink.Conn (a seam for tests).
type conn interface {
	Execute(m genetlink.Message, family uint16, flags netlink.HeaderFlags) ([]genetlink.Message, error)
	SetDeadline(t time.Time) error
	Close() error
}

// Daemons controls the kernel's sync daemons in one network namespace over
// generic netlink. It is safe for concurrent use; calls run one at a time,
// each within the timeout.
//
// Errors from the kernel wrap syscall.Errno: test them with errors.Is.
// Start gives syscall.EEXIST if that role runs already, syscall.ENODEV for
// an unknown interface, syscall.EINVAL for a mixed-family destination in the
// IPVS table (sync refuses those) or a non-multicast group,
// syscall.EAFNOSUPPORT for an IPv6 group on a kernel without IPVS IPv6.
// Stop gives syscall.ESRCH if the role is not running. All need CAP_NET_ADMIN
// (syscall.EPERM).
type Daemons struct {
	c       conn
	family  uint16
	nsPath  string
	timeout time.Duration

	// sem serialises calls, so that each call's deadline is its own; a
	// channel rather than a mutex so that waiting for it is bounded too.
	sem    chan struct{}
	closed atomic.Bool
	once   sync.Once
	// wedged is set when a call timed out: its late reply would be read as
	// the answer to the next call, so every later call fails instead.
	wedged bool

	startMu sync.Mutex
	started map[Role]time.Time // when this handle last started each role
}

// stopSettle is how long after starting a backup daemon Stop waits before
// stopping it. Stopping a backup daemon within milliseconds of its start
// hangs the kernel call (Debian 12's 6.1, seen every time in the test VM):
// the DEL_DAEMON request never returns. 100 ms was always enough there.
const stopSettle = 250 * time.Millisecond

// Option configures [Open].
type Option func(*Daemons)

// WithTimeout sets the per-call deadline (default [DefaultDaemonTimeout]).
func WithTimeout(t time.Duration) Option {
	return func(d *Daemons) { d.timeout = t }
}

// Open returns control of the sync daemons of the network namespace at
// netnsPath (e.g. /var/run/netns/NAME; "" = the caller's). It refuses with
// an error wrapping [ipvs.ErrNoIPVS] when the kernel has no IPVS (after
// trying modprobe ip_vs, as [ipvs.Preflight] does).
func Open(netnsPath string, opts ...Option) (*Daemons, error) {
	d := &Daemons{nsPath: netnsPath, timeout: DefaultDaemonTimeout, sem: make(chan struct{}, 1)}
	for _, o := range opts {
		o(d)
	}
	// Generic-netlink families are global, so the current namespace will
	// do for the preflight (and for its modprobe).
	if err := ipvs.Preflight(); err != nil {
		return nil, fmt.Errorf("connsync: %w", err)
	}
	cfg := &netlink.Config{}
	if netnsPath != "" {
		f, err := os.Open(netnsPath)
		if err != nil {
			return nil, fmt.Errorf("connsync: open network namespace: %w", err)
		}
		defer f.Close()
		cfg.NetNS = int(f.Fd())
	}
	c, err := genetlink.Dial(cfg)
	if err != nil {
		return nil, fmt.Errorf("connsync: open generic netlink socket in %s: %w", d.ns(), err)
	}
	if err := c.SetDeadline(time.Now().Add(d.timeout)); err != nil {
		c.Close()
		return nil, fmt.Errorf("connsync: %w", err)
	}
	fam, err := c.GetFamily(genlName)
	if err != nil {
		c.Close()
		if errors.Is(err, os.ErrNotExist) {
			err = fmt.Errorf("%w: generic netlink family %q not found: %v", ipvs.ErrNoIPVS, genlName, err)
		}
		return nil, fmt.Errorf("connsync: in %s: %w", d.ns(), err)
	}
	d.c, d.family = c, fam.ID
	return d, nil
}

func (d *Daemons) ns() string {
	if d.nsPath == "" {
		return "the current network namespace"
	}
	return "network namespace " + d.nsPath
}

// Close releases the netlink socket; a call in progress fails. Calls after
// Close return [ErrClosed].
func (d *Daemons) Close() error {
	var err error
	d.once.Do(func() {
		d.closed.Store(true)
		err = d.c.Close()
	})
	return err
}

// Start starts the sync daemon cfg describes. Defaults and clamping are the
// kernel's (see [DaemonConfig]); read them back with List.
func (d *Daemons) Start(cfg DaemonConfig) error {
	if err := cfg.check(); err != nil {
		return err
	}
	ae := netlink.NewAttributeEncoder()
	ae.Nested(cmdAttrDaemon, func(nae *netlink.AttributeEncoder) error {
		nae.Uint32(daemonAttrState, uint32(cfg.Role))
		nae.String(daemonAttrMcastIfn, cfg.Interface)
		nae.Uint32(daemonAttrSyncID, cfg.SyncID)
		if cfg.MaxLen != 0 {
			nae.Uint16(daemonAttrSyncMaxlen, cfg.MaxLen)
		}
		switch {
		case cfg.Group.Is4():
			a := cfg.Group.As4()
			nae.Bytes(daemonAttrMcastGroup, a[:])
		case cfg.Group.Is6():
			a := cfg.Group.As16()
			nae.Bytes(daemonAttrMcastGroup6, a[:])
		}
		if cfg.Port != 0 {
			nae.Uint16(daemonAttrMcastPort, cfg.Port) // host order, as the kernel reads it
		}
		if cfg.TTL != 0 {
			nae.Uint8(daemonAttrMcastTTL, cfg.TTL)
		}
		return nil
	})
	if _, err := d.execute(cmdNewDaemon, ae, netlink.Request|netlink.Acknowledge); err != nil {
		return fmt.Errorf("connsync: start %v in %s: %w", cfg, d.ns(), err)
	}
	d.startMu.Lock()
	if d.started == nil {
		d.started = map[Role]time.Time{}
	}
	d.started[cfg.Role] = time.Now()
	d.startMu.Unlock()
	return nil
}

// Stop stops the sync daemon of role. A master throws away the connections
// it has queued but not sent yet.
func (d *Daemons) Stop(role Role) error {
	if role != Master && role != Backup {
		return fmt.Errorf("%w: role %v", ErrConfig, role)
	}
	d.startMu.Lock()
	at, ok := d.started[role]
	d.startMu.Unlock()
	if wait := stopSettle - time.Since(at); ok && wait > 0 {
		time.Sleep(wait)
	}
	// The kernel reads only the state; ipvsadm also sends the interface and
	// sync ID, which it ignores.
	ae := netlink.NewAttributeEncoder()
	ae.Nested(cmdAttrDaemon, func(nae *netlink.AttributeEncoder) error {
		nae.Uint32(daemonAttrState, uint32(role))
		return nil
	})
	if _, err := d.execute(cmdDelDaemon, ae, netlink.Request|netlink.Acknowledge); err != nil {
		return fmt.Errorf("connsync: stop %v sync daemon in %s: %w", role, d.ns(), err)
	}
	return nil
}

// List returns the running sync daemons, the master first, with the
// settings in effect.
func (d *Daemons) List() ([]DaemonConfig, error) {
	msgs, err := d.execute(cmdGetDaemon, nil, netlink.Request|netlink.Dump)
	if err != nil {
		return nil, fmt.Errorf("connsync: list sync daemons in %s: %w", d.ns(), err)
	}
	out := make([]DaemonConfig, 0, len(msgs))
	for _, m := range msgs {
		cfg, ok, err := parseDaemon(m.Data)
		if err != nil {
			return nil, fmt.Errorf("connsync: list sync daemons in %s: %w", d.ns(), err)
		}
		if ok {
			out = append(out, cfg)
		}
	}
	return out, nil
}

// execute sends one request with command cmd and the attributes of ae (nil
// for none) and returns the replies, within d.timeout (waiting for an
// earlier call included).
func (d *Daemons) execute(cmd uint8, ae *netlink.AttributeEncoder, flags netlink.HeaderFlags) ([]genetlink.Message, error) {
	req := genetlink.Message{Header: genetlink.Header{Command: cmd, Version: genlVersion}}
	if ae != nil {
		b, err := ae.Encode()
		if err != nil {
			return nil, err
		}
		req.Data = b
	}
	if d.closed.Load() {
		return nil, ErrClosed
	}
	deadline := time.Now().Add(d.timeout)
	t := time.NewTimer(d.timeout)
	defer t.Stop()
	select {
	case d.sem <- struct{}{}:
	case <-t.C:
		return nil, fmt.Errorf("%w after %v waiting for an earlier call", ErrTimeout, d.timeout)
	}
	defer func() { <-d.sem }()
	switch {
	case d.closed.Load():
		return nil, ErrClosed
	case d.wedged:
		return nil, fmt.Errorf("%w earlier: reopen the handle", ErrTimeout)
	}
	if err := d.c.SetDeadline(deadline); err != nil {
		return nil, err
	}
	msgs, err := d.c.Execute(req, d.family, flags)
	switch {
	case err == nil:
		return msgs, nil
	case d.closed.Load():
		return nil, ErrClosed
	case errors.Is(err, os.ErrDeadlineExceeded):
		d.wedged = true
		return nil, fmt.Errorf("%w after %v", ErrTimeout, d.timeout)
	}
	return nil, err
}

// parseDaemon decodes one GET_DAEMON reply; ok is false if it holds no
// daemon nest.
func parseDaemon(b []byte) (cfg DaemonConfig, ok bool, err error) {
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return cfg, false, err
	}
	for ad.Next() {
		if ad.Type() != cmdAttrDaemon {
			continue
		}
		ok = true
		ad.Nested(func(nad *netlink.AttributeDecoder) error {
			for nad.Next() {
				switch nad.Type() {
				case daemonAttrState:
					cfg.Role = Role(nad.Uint32())
				case daemonAttrMcastIfn:
					cfg.Interface = nad.String()
				case daemonAttrSyncID:
					cfg.SyncID = nad.Uint32()
				case daemonAttrSyncMaxlen:
					cfg.MaxLen = nad.Uint16()
				case daemonAttrMcastGroup, daemonAttrMcastGroup6:
					a, aok := netip.AddrFromSlice(nad.Bytes())
					if !aok {
						return fmt.Errorf("daemon group attribute of %d bytes", len(nad.Bytes()))
					}
					cfg.Group = a
				case daemonAttrMcastPort:
					cfg.Port = nad.Uint16()
				case daemonAttrMcastTTL:
					cfg.TTL = nad.Uint8()
				}
			}
			return nil
		})
	}
	if err := ad.Err(); err != nil {
		return cfg, false, fmt.Errorf("parse sync daemon reply: %w", err)
	}
	return cfg, ok, nil
}
