package lvs

import (
	"fmt"
	"strings"
)

// DefaultCheck is the body of [virtual_service.check] that Config writes
// unless told otherwise: an HTTP probe of /health, fast enough for tests.
const DefaultCheck = `type = "http"
path = "/health"
interval = "200ms"
timeout = "100ms"
rise = 1
fall = 2`

// EchoCheck is the check of the echo service (ConfigOptions.EchoService).
const EchoCheck = `type = "tcp"
interval = "200ms"
timeout = "100ms"
rise = 1
fall = 2`

// Instance and VRID of the bed's VRRP instance.
const (
	InstanceName     = "front"
	BackInstanceName = "back" // NAT with two directors: the real servers' gateway
	VRID             = 90
)

// ConfigOptions shape the cluster file Config writes. The zero value is:
// cluster "lvs", both directors declared (lb1 priority 150, lb2 100), one
// VRRP instance "front" on eth0 owning the VIP with 100ms adverts, and one
// virtual service VIP:80, rr, forwarding by the bed's mode, DefaultCheck,
// every real server with weight 1.
type ConfigOptions struct {
	Cluster        string         // [cluster] name; default "lvs"
	AdvertInterval string         // default "100ms"
	NoService      bool           // no virtual service at all (VRRP only)
	Scheduler      string         // default "rr"
	Forwarding     string         // default: the bed's Mode ("nat" or "dr")
	Check          string         // body of [virtual_service.check]; default DefaultCheck; "-" for none
	Weights        map[string]int // real server name -> weight (omitted: the default 1)
	SorryServer    bool           // sorry_server = the sorry node (needs Options.Sorry)
	Quorum         int            // 0: not written
	ServiceExtra   string         // extra key = value lines for the HTTP service's table
	EchoService    bool           // also VIP:EchoPort with EchoCheck, same servers
	EchoCheck      string         // body of the echo service's check; default EchoCheck
	Extra          string         // appended verbatim at the end of the file
}

// Config returns the cluster file for this bed's plan: the daemon runs
// from it as lb1 (and lb2) unchanged.
func (o Options) Config(c ConfigOptions) string {
	o = o.withDefaults()
	if c.Cluster == "" {
		c.Cluster = "lvs"
	}
	if c.AdvertInterval == "" {
		c.AdvertInterval = "100ms"
	}
	if c.Scheduler == "" {
		c.Scheduler = "rr"
	}
	if c.Forwarding == "" {
		c.Forwarding = string(o.Mode)
	}
	if c.Check == "" {
		c.Check = DefaultCheck
	}
	var w strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&w, format+"\n", args...) }
	p("# hadirector cluster for the integration/lvs %s bed (generated).", o.Mode)
	p("[cluster]")
	p("name = %q", c.Cluster)
	for n := 1; n <= 2; n++ { // both directors, whether or not the bed runs lb2
		p("")
		p("[[node]]")
		p("name = \"lb%d\"", n)
		p("priority = %d", 150-50*(n-1))
		p("[[node.interface]]")
		p("name = \"eth0\"")
		p("addresses = [%q]", prefix(o.DirectorAddr(n)))
		if o.Mode == NAT {
			p("[[node.interface]]")
			p("name = \"eth1\"")
			p("addresses = [%q]", prefix(o.DirectorBackAddr(n)))
		}
	}
	p("")
	p("[[vrrp_instance]]")
	p("name = %q", InstanceName)
	p("vrid = %d", VRID)
	p("interface = \"eth0\"")
	p("vips = [%q]", prefix(o.VIP()))
	p("advert_interval = %q", c.AdvertInterval)
	if g := o.BackVIP(); g.IsValid() {
		// NAT with two directors: the real servers' gateway moves with the
		// VIP (keepalived's vrrp_sync_group for LVS-NAT).
		p("")
		p("[[vrrp_instance]]")
		p("name = %q", BackInstanceName)
		p("vrid = %d", VRID+1)
		p("interface = \"eth1\"")
		p("vips = [%q]", prefix(g))
		p("advert_interval = %q", c.AdvertInterval)
		p("")
		p("[[sync_group]]")
		p("name = \"lvs\"")
		p("instances = [%q, %q]", InstanceName, BackInstanceName)
	}
	if !c.NoService {
		o.writeService(p, c, "http", HTTPPort, c.Check, true)
		if c.EchoService {
			check := c.EchoCheck
			if check == "" {
				check = EchoCheck
			}
			o.writeService(p, c, "echo", EchoPort, check, false)
		}
	}
	if c.Extra != "" {
		p("")
		p("%s", strings.TrimSpace(c.Extra))
	}
	return w.String()
}

func (o Options) writeService(p func(string, ...any), c ConfigOptions, name string, port int, check string, main bool) {
	p("")
	p("[[virtual_service]]")
	p("name = %q", name)
	p("address = %q", o.VIPPort(port))
	p("scheduler = %q", c.Scheduler)
	p("forwarding = %q", c.Forwarding)
	if main {
		if c.SorryServer {
			p("sorry_server = %q", fmt.Sprintf("%s:%d", o.SorryAddr(), port))
		}
		if c.Quorum > 0 {
			p("quorum = %d", c.Quorum)
		}
		if c.ServiceExtra != "" {
			p("%s", strings.TrimSpace(c.ServiceExtra))
		}
	}
	if check != "-" {
		p("[virtual_service.check]")
		p("%s", strings.TrimSpace(check))
	}
	for i, rs := range o.RealNames() {
		p("[[virtual_service.real_server]]")
		p("address = %q", fmt.Sprintf("%s:%d", o.RealAddr(i+1), port))
		if wt, ok := c.Weights[rs]; ok {
			p("weight = %d", wt)
		}
	}
}
