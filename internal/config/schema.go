package config

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Config is one cluster: its directors, the links between them, the VRRP
// instances that own the virtual addresses and the virtual services behind
// them. The same file is deployed on every director; each finds itself by
// node name.
//
// The toml tags are the file's keys. Every key is documented in README.md
// ("Configuration reference"); defaults live in defaults.go.
type Config struct {
	Cluster    Cluster          `toml:"cluster"`
	Nodes      []Node           `toml:"node"`
	Links      []Link           `toml:"link"`
	Instances  []Instance       `toml:"vrrp_instance"`
	SyncGroups []SyncGroup      `toml:"sync_group"`
	Services   []VirtualService `toml:"virtual_service"`
	Sync       *Sync            `toml:"sync"`
	IPVS       IPVS             `toml:"ipvs"`

	// File is the path the config was read from.
	File string `toml:"-"`

	// pos is where each key was written, by TOML path; used to place
	// problems found after decoding.
	pos map[string]Pos
}

// Cluster names the cluster.
type Cluster struct {
	Name string `toml:"name"`
}

// Node is one director.
type Node struct {
	Name string `toml:"name"`
	// Priority is the node's VRRP priority in every instance that does not
	// set its own for this node.
	Priority   int         `toml:"priority"`
	Interfaces []Interface `toml:"interface"`
}

// Interface is a network interface of a node and the node's own (not
// virtual) addresses on it.
type Interface struct {
	Name      string         `toml:"name"`
	Addresses []netip.Prefix `toml:"addresses"`
}

// Link is an extra heartbeat path between the directors, besides VRRP on
// each instance's interface.
type Link struct {
	Name     string   `toml:"name"`
	Type     LinkType `toml:"type"`
	Interval Duration `toml:"interval"`
	// UDP links: the interface whose node addresses are the endpoints and
	// the port.
	Interface string `toml:"interface"`
	Port      int    `toml:"port"`
	// KeyFile holds the shared HMAC-SHA256 key: required for UDP, optional
	// (but recommended) for serial links.
	KeyFile string `toml:"key_file"`
	// Serial links: the device (the same path on every node) and its speed.
	Device string `toml:"device"`
	Baud   int    `toml:"baud"`
}

// Instance is one VRRP virtual router: a VRID on an interface owning a set
// of virtual addresses of one family.
type Instance struct {
	Name           string   `toml:"name"`
	VRID           int      `toml:"vrid"`
	Interface      string   `toml:"interface"`
	VIPs           []VIP    `toml:"vips"`
	AdvertInterval Duration `toml:"advert_interval"`
	Preempt        bool     `toml:"preempt"`
	PreemptDelay   Duration `toml:"preempt_delay"`
	// Priority overrides a node's priority in this instance, by node name.
	Priority map[string]int `toml:"priority"`
	// Links names the heartbeat links that also carry this instance's adverts.
	Links []string `toml:"links"`
	// Unicast sends adverts to the peers instead of the multicast group.
	// The peers are the other nodes' addresses on the interface, plus
	// UnicastPeers (routers that are not in this file, e.g. a keepalived).
	Unicast      bool         `toml:"unicast"`
	UnicastPeers []netip.Addr `toml:"unicast_peers"`
	// TrackInterfaces put the instance in Fault (weight 0) or lower its
	// priority by the weight while a tracked interface is down.
	TrackInterfaces []TrackInterface `toml:"track_interface"`
	// Notify is a program run on every transition with keepalived's
	// arguments: INSTANCE NAME STATE PRIORITY.
	Notify        string   `toml:"notify"`
	NotifyTimeout Duration `toml:"notify_timeout"`
	// Gratuitous ARP / unsolicited NA on taking the VIPs: GARPRepeat rounds
	// at once, the same again after GARPDelay (0: no second burst), and
	// every GARPRefresh while master (0: off).
	GARPRepeat  int      `toml:"garp_repeat"`
	GARPDelay   Duration `toml:"garp_delay"`
	GARPRefresh Duration `toml:"garp_refresh"`
}

// TrackInterface is an interface whose link state affects an instance.
type TrackInterface struct {
	Name string `toml:"name"`
	// Weight 0 means Fault while the link is down; otherwise the priority
	// changes by Weight (usually negative) while it is down.
	Weight int `toml:"weight"`
}

// SyncGroup is a set of instances that fail over together, such as the
// external VIP and the internal gateway VIP of a NAT cluster.
type SyncGroup struct {
	Name          string   `toml:"name"`
	Instances     []string `toml:"instances"`
	Notify        string   `toml:"notify"`
	NotifyTimeout Duration `toml:"notify_timeout"`
}

// Peers is where node sends this instance's adverts in unicast mode: the
// other nodes' first address of the instance's family on its interface,
// then UnicastPeers.
func (c *Config) Peers(in *Instance, node string) []netip.Addr {
	var peers []netip.Addr
	for _, n := range c.Nodes {
		if n.Name == node {
			continue
		}
		if ifc := n.Interface(in.Interface); ifc != nil {
			if a, ok := ifc.FirstAddr(in.Family()); ok {
				peers = append(peers, a)
			}
		}
	}
	return append(peers, in.UnicastPeers...)
}

// Family is the address family of the instance's VIPs (all the same).
func (in *Instance) Family() Family {
	if len(in.VIPs) == 0 {
		return 0
	}
	return familyOf(in.VIPs[0].Addr())
}

// PriorityOf is node's effective priority in this instance.
func (c *Config) PriorityOf(in *Instance, node string) int {
	if p, ok := in.Priority[node]; ok {
		return p
	}
	if n := c.Node(node); n != nil {
		return n.Priority
	}
	return 0
}

// VirtualService is an IPVS virtual service and its real servers.
type VirtualService struct {
	// Name is a label for status and alerts; it defaults to the service key.
	Name string `toml:"name"`
	// Address is VIP:port. Exclusive with FWMark.
	Address  Endpoint `toml:"address"`
	Protocol Protocol `toml:"protocol"`
	// FWMark selects packets by firewall mark instead of address:port;
	// Family says which family those packets are.
	FWMark         int       `toml:"fwmark"`
	Family         Family    `toml:"family"`
	Scheduler      Scheduler `toml:"scheduler"`
	SchedulerFlags []string  `toml:"scheduler_flags"`
	// Persistence keeps a client on one real server for this long after its
	// last connection; 0 disables it. PersistenceGranularity is the prefix
	// length that groups clients into one persistence entry.
	Persistence            Duration `toml:"persistence_timeout"`
	PersistenceGranularity int      `toml:"persistence_granularity"`
	// Forwarding is the default method for the real servers.
	Forwarding Forwarding `toml:"forwarding"`
	// Quorum is the sum of live real-server weights the service needs; below
	// it the sorry server (if any) takes the traffic. QuorumHysteresis widens
	// the band so a flapping server does not flap the service.
	Quorum           int       `toml:"quorum"`
	QuorumHysteresis int       `toml:"quorum_hysteresis"`
	SorryServer      *Endpoint `toml:"sorry_server"`
	// OnFailure is what a failed real server becomes: "drain" (weight 0,
	// so persistent and synced connections finish) or "remove" (deleted
	// from the table).
	OnFailure OnFailure `toml:"on_failure"`
	// Notify is a program run on every real-server and quorum transition
	// of the service (see README "Notify hooks").
	Notify        string       `toml:"notify"`
	NotifyTimeout Duration     `toml:"notify_timeout"`
	Check         *Check       `toml:"check"`
	RealServers   []RealServer `toml:"real_server"`
}

// OnFailure is what happens to a real server whose checks fail.
type OnFailure string

// Failure policies.
const (
	FailDrain  OnFailure = "drain"
	FailRemove OnFailure = "remove"
)

// UnmarshalText implements encoding.TextUnmarshaler.
func (f *OnFailure) UnmarshalText(b []byte) error {
	s, err := enum(b, "failure policy", "drain", "remove")
	*f = OnFailure(s)
	return err
}

// IPVS configures how the director keeps the kernel's table.
type IPVS struct {
	// ReconcilePeriod is how often the whole kernel table is read and
	// drift (entries changed by hand) repaired.
	ReconcilePeriod Duration `toml:"reconcile_period"`
	// StateFile records which services the daemon owns, so that a service
	// removed from the config while the daemon was down is deleted at the
	// next start. Keep it on tmpfs; "" disables it.
	StateFile string `toml:"state_file"`
}

// RealServer is one destination of a virtual service.
type RealServer struct {
	// Address is ip[:port]; the port defaults to the service's port.
	Address    Endpoint   `toml:"address"`
	Weight     int        `toml:"weight"`
	Forwarding Forwarding `toml:"forwarding"`
	// UpperThreshold / LowerThreshold are IPVS connection thresholds: no new
	// connections above the upper one until below the lower one. 0 = none.
	UpperThreshold int `toml:"upper_threshold"`
	LowerThreshold int `toml:"lower_threshold"`
	// Check replaces the service's check for this real server.
	Check *Check `toml:"check"`
}

// Check is a health check of a real server.
type Check struct {
	Type     CheckType `toml:"type"`
	Port     int       `toml:"port"` // defaults to the real server's port
	Interval Duration  `toml:"interval"`
	Timeout  Duration  `toml:"timeout"`
	Rise     int       `toml:"rise"`
	Fall     int       `toml:"fall"`
	// HTTP(S)
	Path          string        `toml:"path"`
	ExpectStatus  []StatusRange `toml:"expect_status"`
	Host          string        `toml:"host"`
	BodyRegex     string        `toml:"body_regex"`
	TLSServerName string        `toml:"tls_server_name"`
	// BodySHA256: the hex SHA-256 the whole body must have (HTTP/S).
	BodySHA256 string `toml:"body_sha256"`
	// VerifyTLS verifies the certificate (HTTPS), against CAFile's CAs or
	// the system's.
	VerifyTLS bool   `toml:"verify_tls"`
	CAFile    string `toml:"ca_file"`
	// KeepAlive reuses one HTTP connection from probe to probe.
	KeepAlive bool `toml:"keepalive"`
	// Exec: argv of a program; exit status 0 means healthy. With
	// DynamicWeight, 2..255 means healthy with weight status-2.
	Command       []string `toml:"command"`
	DynamicWeight bool     `toml:"dynamic_weight"`
	// Initial is the state before the first rise/fall: "up" (trust the
	// server until it fails, keepalived's default) or "down" (wait for rise
	// successes, keepalived's alpha mode).
	Initial InitialState `toml:"initial"`
}

// InitialState is a check's state before its first verdict.
type InitialState string

// Initial states.
const (
	InitialUp   InitialState = "up"
	InitialDown InitialState = "down"
)

// UnmarshalText implements encoding.TextUnmarshaler.
func (i *InitialState) UnmarshalText(b []byte) error {
	s, err := enum(b, "initial state", "up", "down")
	*i = InitialState(s)
	return err
}

// Sync configures the kernel's IPVS connection-state sync between the
// directors.
type Sync struct {
	Enabled   bool     `toml:"enabled"`
	Interface string   `toml:"interface"`
	SyncID    int      `toml:"sync_id"`
	Mode      SyncMode `toml:"mode"`
	MaxLen    int      `toml:"maxlen"`
	Group     string   `toml:"group"`
	Port      int      `toml:"port"`
	TTL       int      `toml:"ttl"`
	// The kernel's sync sysctls (net.ipv4.vs.*) for this node's network
	// namespace; a key not written leaves the kernel's value alone.
	// Threshold is sync_threshold's pair [threshold, period].
	Threshold     []int    `toml:"sync_threshold"`
	RefreshPeriod Duration `toml:"sync_refresh_period"`
	Retries       int      `toml:"sync_retries"`
	SloppyTCP     bool     `toml:"sloppy_tcp"`
	SloppySCTP    bool     `toml:"sloppy_sctp"`
	// The peer state channel between the directors, on the sync
	// interface: health verdicts, operator overrides, config epoch and
	// connection counts. PeerPort 0 turns it off. KeyFile authenticates it
	// (default: the first UDP link's key file).
	PeerPort     int      `toml:"peer_port"`
	PeerInterval Duration `toml:"peer_interval"`
	KeyFile      string   `toml:"key_file"`
	// The caught-up gate: a backup that outranks a live master preempts
	// only once it holds CatchUp (a fraction) of the master's connections,
	// or CatchUpTimeout after it began to wait. CatchUp 0 turns it off.
	CatchUp        float64  `toml:"catch_up"`
	CatchUpTimeout Duration `toml:"catch_up_timeout"`
}

// Sysctl says whether the file set the sync key (sync_threshold, ...),
// so that unset ones leave the kernel's value alone.
func (c *Config) Sysctl(key string) bool { return c.isSet("sync." + key) }

// Node returns the node called name, or nil.
func (c *Config) Node(name string) *Node {
	for i := range c.Nodes {
		if c.Nodes[i].Name == name {
			return &c.Nodes[i]
		}
	}
	return nil
}

// NodeNames lists the nodes in file order.
func (c *Config) NodeNames() []string {
	names := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		names[i] = n.Name
	}
	return names
}

// Interface returns the node's interface called name, or nil.
func (n *Node) Interface(name string) *Interface {
	for i := range n.Interfaces {
		if n.Interfaces[i].Name == name {
			return &n.Interfaces[i]
		}
	}
	return nil
}

// FirstAddr is the first address of family f on the interface.
func (ifc *Interface) FirstAddr(f Family) (netip.Addr, bool) {
	for _, p := range ifc.Addresses {
		if familyOf(p.Addr()) == f {
			return p.Addr(), true
		}
	}
	return netip.Addr{}, false
}

// Key identifies a virtual service in the kernel's table: protocol and
// address:port, or firewall mark and family. Two services with one key are
// the same IPVS service.
func (s *VirtualService) Key() string {
	if s.FWMark != 0 {
		return fmt.Sprintf("fwmark/%d/%s", s.FWMark, s.Family)
	}
	return fmt.Sprintf("%s/%s", s.Protocol, s.Address)
}

// ---- value types with their text forms ------------------------------------

// Duration is a time.Duration written as a string with a unit: "1s", "250ms".
type Duration time.Duration

// D is the duration as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("%q is not a duration; write it with a unit, e.g. \"1s\" or \"250ms\"", b)
	}
	*d = Duration(v)
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// VIP is a virtual address with its prefix length. Written without one it is
// a host address (/32 or /128).
type VIP struct{ netip.Prefix }

// UnmarshalText implements encoding.TextUnmarshaler.
func (v *VIP) UnmarshalText(b []byte) error {
	s := string(b)
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return fmt.Errorf("%q is not an IP address", s)
		}
		v.Prefix = netip.PrefixFrom(a, a.BitLen())
		return nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return fmt.Errorf("%q is not an address/prefix-length", s)
	}
	v.Prefix = p
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (v VIP) MarshalText() ([]byte, error) { return []byte(v.String()), nil }

// Endpoint is an IP address with an optional port: "192.0.2.1",
// "192.0.2.1:80", "2001:db8::1" or "[2001:db8::1]:80". Port 0 means none.
type Endpoint struct {
	Addr netip.Addr
	Port int
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (e *Endpoint) UnmarshalText(b []byte) error {
	s := string(b)
	if a, err := netip.ParseAddr(s); err == nil {
		if a.Zone() != "" {
			return fmt.Errorf("%q: zoned addresses are not supported here", s)
		}
		*e = Endpoint{Addr: a}
		return nil
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return fmt.Errorf("%q is not an address or address:port (IPv6 with a port is written [2001:db8::1]:80)", s)
	}
	if ap.Port() == 0 {
		return fmt.Errorf("%q: port 0 is not a port; leave the port out instead", s)
	}
	*e = Endpoint{Addr: ap.Addr(), Port: int(ap.Port())}
	return nil
}

func (e Endpoint) String() string {
	if e.Port == 0 {
		return e.Addr.String()
	}
	return netip.AddrPortFrom(e.Addr, uint16(e.Port)).String()
}

// MarshalText implements encoding.TextMarshaler.
func (e Endpoint) MarshalText() ([]byte, error) { return []byte(e.String()), nil }

// AddrPort is the endpoint as a netip.AddrPort.
func (e Endpoint) AddrPort() netip.AddrPort { return netip.AddrPortFrom(e.Addr, uint16(e.Port)) }

// StatusRange is an HTTP status code or an inclusive range: "200", "200-299".
type StatusRange struct{ Lo, Hi int }

// UnmarshalText implements encoding.TextUnmarshaler.
func (r *StatusRange) UnmarshalText(b []byte) error {
	s := string(b)
	lo, hi, isRange := strings.Cut(s, "-")
	if !isRange {
		hi = lo
	}
	l, err1 := strconv.Atoi(lo)
	h, err2 := strconv.Atoi(hi)
	if err1 != nil || err2 != nil || l < 100 || h > 599 || l > h {
		return fmt.Errorf("%q is not an HTTP status or range of statuses between 100 and 599, e.g. \"200\" or \"200-299\"", s)
	}
	*r = StatusRange{l, h}
	return nil
}

func (r StatusRange) String() string {
	if r.Lo == r.Hi {
		return strconv.Itoa(r.Lo)
	}
	return fmt.Sprintf("%d-%d", r.Lo, r.Hi)
}

// MarshalText implements encoding.TextMarshaler.
func (r StatusRange) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// Family is an address family.
type Family int

// Address families.
const (
	IPv4 Family = 4
	IPv6 Family = 6
)

func familyOf(a netip.Addr) Family {
	if a.Unmap().Is4() {
		return IPv4
	}
	return IPv6
}

// FamilyOf is the family of an address.
func FamilyOf(a netip.Addr) Family { return familyOf(a) }

func (f Family) String() string {
	switch f {
	case IPv4:
		return "inet"
	case IPv6:
		return "inet6"
	}
	return "unset"
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (f *Family) UnmarshalText(b []byte) error {
	switch strings.ToLower(string(b)) {
	case "inet", "ipv4":
		*f = IPv4
	case "inet6", "ipv6":
		*f = IPv6
	default:
		return fmt.Errorf("%q is not an address family; use \"inet\" or \"inet6\"", b)
	}
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (f Family) MarshalText() ([]byte, error) { return []byte(f.String()), nil }

// enum reads a case-insensitive name from a closed set.
func enum(b []byte, what string, allowed ...string) (string, error) {
	s := strings.ToLower(string(b))
	for _, a := range allowed {
		if s == a {
			return s, nil
		}
	}
	return "", fmt.Errorf("%q is not a %s; use one of: %s", b, what, strings.Join(allowed, ", "))
}

// Protocol is the transport protocol of a virtual service.
type Protocol string

// Protocols of virtual services.
const (
	TCP  Protocol = "tcp"
	UDP  Protocol = "udp"
	SCTP Protocol = "sctp"
)

// UnmarshalText implements encoding.TextUnmarshaler.
func (p *Protocol) UnmarshalText(b []byte) error {
	s, err := enum(b, "protocol", "tcp", "udp", "sctp")
	*p = Protocol(s)
	return err
}

// Forwarding is how IPVS sends packets to a real server.
type Forwarding string

// Forwarding methods: NAT (masquerading), direct routing, IP-in-IP tunnel.
const (
	NAT Forwarding = "nat"
	DR  Forwarding = "dr"
	TUN Forwarding = "tun"
)

// UnmarshalText implements encoding.TextUnmarshaler.
func (f *Forwarding) UnmarshalText(b []byte) error {
	s, err := enum(b, "forwarding method", "nat", "dr", "tun")
	*f = Forwarding(s)
	return err
}

// Schedulers the Linux kernel ships (net/netfilter/ipvs/ip_vs_*.c).
var Schedulers = []string{"rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh", "twos"}

// Scheduler is an IPVS scheduler name.
type Scheduler string

// UnmarshalText implements encoding.TextUnmarshaler.
func (s *Scheduler) UnmarshalText(b []byte) error {
	v, err := enum(b, "scheduler", Schedulers...)
	*s = Scheduler(v)
	return err
}

// CheckType is the kind of a health check.
type CheckType string

// Health check kinds.
const (
	CheckTCP   CheckType = "tcp"
	CheckHTTP  CheckType = "http"
	CheckHTTPS CheckType = "https"
	CheckICMP  CheckType = "icmp"
	CheckExec  CheckType = "exec"
)

// UnmarshalText implements encoding.TextUnmarshaler.
func (t *CheckType) UnmarshalText(b []byte) error {
	s, err := enum(b, "check type", "tcp", "http", "https", "icmp", "exec")
	*t = CheckType(s)
	return err
}

// LinkType is the kind of a heartbeat link.
type LinkType string

// Heartbeat link kinds.
const (
	LinkUDP    LinkType = "udp"
	LinkSerial LinkType = "serial"
)

// UnmarshalText implements encoding.TextUnmarshaler.
func (t *LinkType) UnmarshalText(b []byte) error {
	s, err := enum(b, "link type", "udp", "serial")
	*t = LinkType(s)
	return err
}

// SyncMode says which kernel sync daemons run on a director.
type SyncMode string

// Sync modes: both daemons on both directors (so a role switch keeps the
// buffers and a restarted node learns from the active one), or only the one
// that follows the VRRP role, as keepalived does.
const (
	SyncBoth       SyncMode = "both"
	SyncFollowRole SyncMode = "follow-role"
)

// UnmarshalText implements encoding.TextUnmarshaler.
func (m *SyncMode) UnmarshalText(b []byte) error {
	s, err := enum(b, "sync mode", "both", "follow-role")
	*m = SyncMode(s)
	return err
}

// Bits is the address length of the family: 32 or 128.
func (f Family) Bits() int { return f.bits() }

// ServicesEpoch identifies the virtual services and the IPVS settings of
// this config: two directors whose epochs differ do not run the same
// services (a reload reached one and not the other), and must not adopt
// each other's health verdicts. It hashes the decoded values, so comments
// and layout do not count.
func (c *Config) ServicesEpoch() uint64 {
	b, err := json.Marshal(struct {
		Services []VirtualService
		IPVS     IPVS
	}{c.Services, c.IPVS})
	if err != nil {
		return 0
	}
	sum := sha256.Sum256(b)
	return binary.BigEndian.Uint64(sum[:8])
}
