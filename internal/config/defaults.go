package config

import (
	"fmt"
	"time"
)

// The defaults, all of them, in one place. README.md's configuration
// reference lists the same values (keep them in step); TestDefaults checks
// that applyDefaults applies them.
const (
	DefaultNodePriority   = 100
	DefaultAdvertInterval = time.Second
	DefaultPreempt        = true
	DefaultLinkInterval   = 10 * time.Millisecond
	DefaultUDPLinkPort    = 694 // IANA "ha-cluster", as Linux-HA heartbeat used
	DefaultSerialBaud     = 115200
	DefaultProtocol       = TCP
	DefaultFWMarkFamily   = IPv4
	DefaultScheduler      = Scheduler("wlc")
	DefaultForwarding     = DR // as ipvsadm: -g (gatewaying) unless told otherwise
	DefaultQuorum         = 1
	DefaultWeight         = 1
	DefaultCheckInterval  = 2 * time.Second
	DefaultCheckTimeout   = time.Second // and never longer than the interval
	DefaultCheckRise      = 2
	DefaultCheckFall      = 3
	DefaultHTTPPath       = "/"
	DefaultSyncMode       = SyncBoth
	DefaultSyncGroup      = "224.0.0.81" // the kernel's IP_VS_SYNC_GROUP
	DefaultSyncPort       = 8848         // the kernel's IP_VS_SYNC_PORT
	DefaultSyncTTL        = 1
	DefaultHTTPStatusLo   = 200
	DefaultHTTPStatusHi   = 299
	DefaultSyncEnabled    = true
	DefaultPeerPort       = 8850 // the kernel's sync traffic uses 8848 and up
	DefaultPeerInterval   = time.Second
	DefaultCatchUp        = 0.9
	DefaultCatchUpTimeout = 60 * time.Second
	DefaultNotifyTimeout  = 10 * time.Second
	DefaultGARPRepeat     = 5               // keepalived's vrrp_garp_master_repeat
	DefaultGARPDelay      = 5 * time.Second // keepalived's vrrp_garp_master_delay
	DefaultOnFailure      = FailDrain
	DefaultCheckInitial   = InitialUp // keepalived's default (no "alpha")
	DefaultReconcile      = 10 * time.Second
)

// applyDefaults fills every key the file did not set. It runs after decoding
// and before validation; "set" means written in the file, whatever its value,
// so an explicit zero (weight = 0, preempt = false) is kept.
//
// Defaults that depend on another value of the same section (a real server's
// port is its service's port) are applied here too, and only when that value
// is usable; validation reports the cause otherwise.
func applyDefaults(c *Config) {
	for i := range c.Nodes {
		def(c, fmt.Sprintf("node[%d].priority", i), &c.Nodes[i].Priority, DefaultNodePriority)
	}
	for i := range c.Links {
		l, p := &c.Links[i], fmt.Sprintf("link[%d]", i)
		def(c, p+".interval", &l.Interval, Duration(DefaultLinkInterval))
		switch l.Type {
		case LinkUDP:
			def(c, p+".port", &l.Port, DefaultUDPLinkPort)
		case LinkSerial:
			def(c, p+".baud", &l.Baud, DefaultSerialBaud)
		}
	}
	for i := range c.Instances {
		in, p := &c.Instances[i], fmt.Sprintf("vrrp_instance[%d]", i)
		def(c, p+".advert_interval", &in.AdvertInterval, Duration(DefaultAdvertInterval))
		def(c, p+".preempt", &in.Preempt, DefaultPreempt)
		def(c, p+".notify_timeout", &in.NotifyTimeout, Duration(DefaultNotifyTimeout))
		def(c, p+".garp_repeat", &in.GARPRepeat, DefaultGARPRepeat)
		def(c, p+".garp_delay", &in.GARPDelay, Duration(DefaultGARPDelay))
	}

	for i := range c.SyncGroups {
		def(c, fmt.Sprintf("sync_group[%d].notify_timeout", i), &c.SyncGroups[i].NotifyTimeout, Duration(DefaultNotifyTimeout))
	}
	for i := range c.Services {
		s, p := &c.Services[i], fmt.Sprintf("virtual_service[%d]", i)
		if s.FWMark != 0 {
			def(c, p+".family", &s.Family, DefaultFWMarkFamily)
		} else {
			def(c, p+".protocol", &s.Protocol, DefaultProtocol)
			if s.Address.Addr.IsValid() {
				s.Family = familyOf(s.Address.Addr)
			}
		}
		def(c, p+".scheduler", &s.Scheduler, DefaultScheduler)
		def(c, p+".forwarding", &s.Forwarding, DefaultForwarding)
		def(c, p+".quorum", &s.Quorum, DefaultQuorum)
		def(c, p+".on_failure", &s.OnFailure, DefaultOnFailure)
		def(c, p+".notify_timeout", &s.NotifyTimeout, Duration(DefaultNotifyTimeout))
		if s.Persistence > 0 {
			def(c, p+".persistence_granularity", &s.PersistenceGranularity, s.Family.bits())
		}
		if !c.isSet(p + ".name") {
			s.Name = s.Key()
		}
		if s.SorryServer != nil && s.SorryServer.Port == 0 && s.FWMark == 0 {
			s.SorryServer.Port = s.Address.Port
		}
		if s.Check != nil {
			checkDefaults(c, p+".check", s.Check)
		}
		for j := range s.RealServers {
			r, rp := &s.RealServers[j], fmt.Sprintf("%s.real_server[%d]", p, j)
			def(c, rp+".weight", &r.Weight, DefaultWeight)
			def(c, rp+".forwarding", &r.Forwarding, s.Forwarding)
			if r.Address.Port == 0 && s.FWMark == 0 {
				r.Address.Port = s.Address.Port
			}
			if r.Check != nil {
				checkDefaults(c, rp+".check", r.Check)
			} else if s.Check != nil {
				ck := *s.Check // a real server's own check replaces the service's
				r.Check = &ck
			}
		}
	}
	def(c, "ipvs.reconcile_period", &c.IPVS.ReconcilePeriod, Duration(DefaultReconcile))
	if s := c.Sync; s != nil {
		def(c, "sync.enabled", &s.Enabled, DefaultSyncEnabled)
		def(c, "sync.mode", &s.Mode, DefaultSyncMode)
		def(c, "sync.group", &s.Group, DefaultSyncGroup)
		def(c, "sync.port", &s.Port, DefaultSyncPort)
		def(c, "sync.ttl", &s.TTL, DefaultSyncTTL)
		def(c, "sync.peer_port", &s.PeerPort, DefaultPeerPort)
		def(c, "sync.peer_interval", &s.PeerInterval, Duration(DefaultPeerInterval))
		def(c, "sync.catch_up", &s.CatchUp, DefaultCatchUp)
		def(c, "sync.catch_up_timeout", &s.CatchUpTimeout, Duration(DefaultCatchUpTimeout))
		if !c.isSet("sync.key_file") {
			for _, l := range c.Links {
				if l.Type == LinkUDP && l.KeyFile != "" {
					s.KeyFile = l.KeyFile
					break
				}
			}
		}
		if len(c.Instances) > 0 {
			// keepalived's default too: the sync id is the VRID, so two
			// clusters on one segment do not take each other's connections.
			def(c, "sync.sync_id", &s.SyncID, c.Instances[0].VRID)
		}
	}
}

func checkDefaults(c *Config, p string, ck *Check) {
	def(c, p+".interval", &ck.Interval, Duration(DefaultCheckInterval))
	def(c, p+".timeout", &ck.Timeout, min(Duration(DefaultCheckTimeout), ck.Interval))
	def(c, p+".rise", &ck.Rise, DefaultCheckRise)
	def(c, p+".fall", &ck.Fall, DefaultCheckFall)
	def(c, p+".initial", &ck.Initial, DefaultCheckInitial)
	if ck.Type == CheckHTTP || ck.Type == CheckHTTPS {
		def(c, p+".path", &ck.Path, DefaultHTTPPath)
		def(c, p+".expect_status", &ck.ExpectStatus, []StatusRange{{DefaultHTTPStatusLo, DefaultHTTPStatusHi}})
	}
}

// def sets *field to v unless the file set the key at path.
func def[T any](c *Config, path string, field *T, v T) {
	if !c.isSet(path) {
		*field = v
	}
}

func (f Family) bits() int {
	if f == IPv6 {
		return 128
	}
	return 32
}
