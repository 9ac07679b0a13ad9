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
	Cmd string `json:"cmd"` // "status"
}

// Response is what the daemon answers. Error is set when OK is false.
type Response struct {
	OK     bool    `json:"ok"`
	Error  string  `json:"error,omitempty"`
	Status *Status `json:"status,omitempty"`
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
	// Drops counts received VRRP packets that were not acted on, by reason.
	Drops    map[string]uint64 `json:"drops,omitempty"`
	Services []ServiceStatus   `json:"services"`
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

// ServiceStatus is one virtual service and its real servers.
type ServiceStatus struct {
	Name        string       `json:"name"`
	Key         string       `json:"key"`
	Scheduler   string       `json:"scheduler"`
	Forwarding  string       `json:"forwarding"`
	RealServers []RealStatus `json:"real_servers"`
}

// RealStatus is one real server of a service.
type RealStatus struct {
	Address string `json:"address"`
	Weight  int    `json:"weight"` // configured weight
	Health  string `json:"health"` // "unchecked" until probes run
}
