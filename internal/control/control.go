// Package control owns the daemon's local API: a Unix stream socket (root
// only, mode 0600) over which `hadirector status` and, later, drain / enable
// / set-weight talk to the running daemon, and the JSON types they exchange.
//
// The protocol is one JSON request line and one JSON response line per
// connection, so a client is a few lines in any language (or socat).
package control

import (
	"time"
)

// DefaultSocket is where the daemon listens unless told otherwise.
const DefaultSocket = "/run/hadirector/hadirector.sock"

// Request is what a client sends.
type Request struct {
	Cmd string `json:"cmd"` // "status", "drain", "enable", "set-weight"
	// Service (name or key) and Real (ip or ip:port) name the real server
	// of drain, enable and set-weight; Weight is set-weight's.
	Service string `json:"service,omitempty"`
	Real    string `json:"real,omitempty"`
	Weight  int    `json:"weight,omitempty"`
}

// Response is what the daemon answers. Error is set when OK is false.
type Response struct {
	OK      bool    `json:"ok"`
	Error   string  `json:"error,omitempty"`
	Message string  `json:"message,omitempty"` // what an admin command did
	Status  *Status `json:"status,omitempty"`
}

// AdminRequest is an operator's change to a real server.
type AdminRequest struct {
	Op      string // "drain", "enable", "set-weight"
	Service string
	Real    string
	Weight  int
}

// Status is a snapshot of the daemon.
type Status struct {
	Cluster    string           `json:"cluster"`
	Node       string           `json:"node"`
	Version    string           `json:"version"`
	PID        int              `json:"pid"`
	Started    time.Time        `json:"started"`
	ConfigFile string           `json:"config_file"`
	Loaded     time.Time        `json:"config_loaded"` // last successful load or reload
	Reloads    int              `json:"reloads"`       // reloads applied
	LastReload *ReloadStatus    `json:"last_reload,omitempty"`
	Instances  []InstanceStatus `json:"instances"`
	Links      []LinkStatus     `json:"links,omitempty"`
	// NodeLoss is the node-loss probe's record; nil without links.
	NodeLoss *NodeLossStatus `json:"node_loss,omitempty"`
	// Drops counts received VRRP packets that were not acted on, by reason.
	Drops    map[string]uint64 `json:"drops,omitempty"`
	Services []ServiceStatus   `json:"services"`
	// IPVS is the kernel table's keeper; nil when there are no services.
	IPVS *IPVSStatus `json:"ipvs,omitempty"`
	// Sync is the kernel's connection-sync daemons; nil without [sync].
	Sync *SyncStatus `json:"sync,omitempty"`
}

// SyncStatus is the kernel connection-sync daemons of this director.
type SyncStatus struct {
	Mode      string `json:"mode"`
	Interface string `json:"interface"`
	SyncID    int    `json:"sync_id"`
	// Daemons are the roles running in the kernel, with their settings.
	Daemons []string `json:"daemons"`
	// Sysctls are the net.ipv4.vs sync sysctls in force.
	Sysctls   map[string]string `json:"sysctls,omitempty"`
	Actions   []string          `json:"actions,omitempty"` // what the director did, latest last
	LastError string            `json:"last_error,omitempty"`
	At        time.Time         `json:"at"`
	// Peer is the peer state channel (nil when it is off).
	Peer *PeerStatus `json:"peer,omitempty"`
	// Decoder is the passive listener's view of the peer's sync messages
	// (nil when it is not running).
	Decoder *DecoderStatus `json:"decoder,omitempty"`
}

// DecoderStatus counts the sync messages this node received from its
// peer's master daemon, as its kernel's backup sees them.
type DecoderStatus struct {
	Messages    uint64            `json:"messages"`
	Entries     uint64            `json:"entries"`
	Drops       map[string]uint64 `json:"drops,omitempty"` // datagrams, by reason
	Skipped     map[string]uint64 `json:"skipped,omitempty"`
	SocketDrops uint64            `json:"socket_drops"`
	LastSeen    time.Time         `json:"last_seen,omitzero"`
	LastSender  string            `json:"last_sender,omitempty"`
	Senders     int               `json:"senders"` // more than one: two masters on the sync link
	Error       string            `json:"error,omitempty"`
}

// PeerStatus is the peer state channel and the caught-up gate.
type PeerStatus struct {
	Local  string    `json:"local"`
	Remote string    `json:"remote"`
	Up     bool      `json:"up"`
	LastRx time.Time `json:"last_rx,omitzero"`
	// What the peer said last (zero before it said anything).
	PeerMaster  bool   `json:"peer_master"`
	PeerConns   uint64 `json:"peer_conns"`
	PeerEntries int    `json:"peer_entries"` // real servers it finds down or has overrides for
	SameEpoch   bool   `json:"same_epoch"`   // it runs the same services
	// This node: its connections, whether the peer holds its latest
	// entries, whether it programs the master's verdicts.
	Conns     uint64 `json:"conns"`
	PeerHolds bool   `json:"peer_holds"`
	Following bool   `json:"following"`
	// The caught-up gate: preemption held back, since when, and why.
	Holding   bool      `json:"holding"`
	GateSince time.Time `json:"gate_since,omitzero"`
	Gate      string    `json:"gate,omitempty"`
	// Counters: messages, and what was dropped (bad MAC, replay, ... and
	// undecodable), by reason.
	TxState uint64            `json:"tx_state"`
	TxPages uint64            `json:"tx_pages"`
	RxState uint64            `json:"rx_state"`
	RxPages uint64            `json:"rx_pages"`
	Drops   map[string]uint64 `json:"drops,omitempty"`
}

// IPVSStatus says how the kernel table is kept.
type IPVSStatus struct {
	Services     int           `json:"services"`     // desired services
	Destinations int           `json:"destinations"` // desired destinations
	LastRun      time.Time     `json:"last_run,omitzero"`
	LastDuration time.Duration `json:"last_duration"`
	LastFull     time.Time     `json:"last_full,omitzero"` // last full read and drift repair
	FullRuns     uint64        `json:"full_runs"`
	ChangeRuns   uint64        `json:"change_runs"`
	Ops          uint64        `json:"ops"`        // kernel operations made
	FailedOps    uint64        `json:"failed_ops"` // of which failed (retried)
	Repairs      uint64        `json:"repairs"`    // entries put back after a change by hand
	Failed       []string      `json:"failed,omitempty"`
	// Unowned are kernel services hadirector leaves alone.
	Unowned []string `json:"unowned,omitempty"`
	Error   string   `json:"error,omitempty"`
	// CountersError: the connection counters could not be read.
	CountersError string `json:"counters_error,omitempty"`
}

// ReloadStatus is the outcome of the last reload attempt.
type ReloadStatus struct {
	At      time.Time `json:"at"`
	Applied bool      `json:"applied"`
	Changes []string  `json:"changes,omitempty"` // what changed, when applied
	Error   string    `json:"error,omitempty"`   // why not, when refused
}

// InstanceStatus is one VRRP instance as this node sees it.
type InstanceStatus struct {
	Name           string        `json:"name"`
	VRID           int           `json:"vrid"`
	Interface      string        `json:"interface"`
	State          string        `json:"state"` // INIT, BACKUP, MASTER, FAULT
	Priority       int           `json:"priority"`
	AdvertInterval time.Duration `json:"advert_interval"`
	VIPs           []string      `json:"vips"`
	Master         string        `json:"master,omitempty"` // the current master's address, when known
	LastTransition time.Time     `json:"last_transition,omitzero"`
	LastReason     string        `json:"last_reason,omitempty"`
	Links          []string      `json:"links,omitempty"` // extra links carrying its adverts
}

// LinkStatus is one heartbeat link's health.
type LinkStatus struct {
	Name        string            `json:"name"`
	Kind        string            `json:"kind"` // udp, serial
	Up          bool              `json:"up"`
	Since       time.Time         `json:"since,omitzero"`   // of the current Up value
	LastRx      time.Time         `json:"last_rx,omitzero"` // last valid frame
	RxFrames    uint64            `json:"rx_frames"`
	TxFrames    uint64            `json:"tx_frames"`
	Drops       map[string]uint64 `json:"drops,omitempty"`
	Transitions uint64            `json:"transitions"`
}

// NodeLossStatus is the node-loss probe's record. When every heartbeat
// link to the peer goes silent, an ARP probe of the peer tells a lost node
// (no answer: the backup takes over at once) from links that failed or
// frames that came late (an answer: the VRRP timer decides).
type NodeLossStatus struct {
	Probes uint64 `json:"probes"`
	Alive  uint64 `json:"alive"`  // the peer's node answered
	Lost   uint64 `json:"lost"`   // no answer: the peer was declared lost
	Errors uint64 `json:"errors"` // the probe could not be made
	// Late counts silences the node answered in that a frame then ended:
	// frames were late (a link interval short for the host's scheduling).
	Late uint64 `json:"late"`
	// LinksFailed counts silences the node answered in that ended with
	// every link down: the links failed while the node lives.
	LinksFailed uint64    `json:"links_failed"`
	LastProbe   time.Time `json:"last_probe,omitzero"`
	// LastResult: alive, lost, error, or resumed (no answer, but a link
	// carried a frame again before the probe ended).
	LastResult string `json:"last_result,omitempty"`
}

// ServiceStatus is one virtual service and its real servers.
type ServiceStatus struct {
	Name       string `json:"name"`
	Key        string `json:"key"`
	Scheduler  string `json:"scheduler"`
	Forwarding string `json:"forwarding"`
	// Quorum: the live weight the service needs; LiveWeight what it has.
	Quorum      int       `json:"quorum"`
	LiveWeight  int       `json:"live_weight"`
	QuorumUp    bool      `json:"quorum_up"`
	QuorumSince time.Time `json:"quorum_since,omitzero"`
	SorryServer string    `json:"sorry_server,omitempty"`
	SorryActive bool      `json:"sorry_active,omitempty"`
	// SorryConns are the sorry server's connection counters.
	SorryActiveConns   *uint32      `json:"sorry_active_conns,omitempty"`
	SorryInactiveConns *uint32      `json:"sorry_inactive_conns,omitempty"`
	RealServers        []RealStatus `json:"real_servers"`
}

// RealStatus is one real server of a service.
type RealStatus struct {
	Address    string `json:"address"`
	Forwarding string `json:"forwarding"`
	Weight     int    `json:"weight"` // configured weight
	// EffectiveWeight is its weight in IPVS now (0 when down or drained);
	// InTable is false when it is not in IPVS at all (failed, with
	// on_failure = "remove").
	EffectiveWeight int  `json:"effective_weight"`
	InTable         bool `json:"in_table"`
	// Health: "up", "down", or "unchecked" (no check: counts as up).
	Health string `json:"health"`
	// State: up, down, drained, or standby (healthy but the sorry server
	// has the traffic).
	State          string    `json:"state"`
	Drained        bool      `json:"drained,omitempty"`
	WeightOverride *int      `json:"weight_override,omitempty"`
	Since          time.Time `json:"since,omitzero"`
	Check          string    `json:"check,omitempty"`
	Detail         string    `json:"detail,omitempty"` // the last verdict's reason
	// ActiveConns and InactiveConns are the kernel's counters (absent when
	// they could not be read).
	ActiveConns   *uint32 `json:"active_conns,omitempty"`
	InactiveConns *uint32 `json:"inactive_conns,omitempty"`
}
