package config

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"net/netip"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"
)

// validator checks what the types cannot: ranges, references between
// sections, uniqueness, and combinations that make no sense.
type validator struct {
	c     *Config
	probs Problems
}

func (v *validator) errf(path, hint, format string, args ...any) {
	v.probs = append(v.probs, Problem{File: v.c.File, Pos: v.c.posOf(path), Key: path, Msg: fmt.Sprintf(format, args...), Hint: hint})
}

// missing reports a required key that is not there (placed at its table).
func (v *validator) missing(path, hint string) {
	v.errf(path, hint, "missing (required)")
}

// intRange reports an int outside [lo, hi].
func (v *validator) intRange(path string, x, lo, hi int, hint string) bool {
	if x < lo || x > hi {
		v.errf(path, hint, "%d is out of range %d..%d", x, lo, hi)
		return false
	}
	return true
}

func (v *validator) durRange(path string, d Duration, lo, hi time.Duration) {
	if d.D() < lo || d.D() > hi {
		v.errf(path, "", "%s is out of range %s..%s", d, lo, hi)
	}
}

// onlyFor reports keys written in a section where they do not apply.
func (v *validator) onlyFor(section string, keys []string, why string) {
	for _, k := range keys {
		if v.c.isSet(section + "." + k) {
			v.errf(section+"."+k, "remove it", "does not apply %s", why)
		}
	}
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

func (v *validator) name(path, s, what string) bool {
	switch {
	case s == "":
		v.missing(path, "every "+what+" needs a name")
		return false
	case !nameRE.MatchString(s):
		v.errf(path, "use letters, digits, '_', '.' and '-', at most 64, starting with a letter or digit", "%q is not a valid name", s)
		return false
	}
	return true
}

// ifname checks a required interface name, unique within seen.
func (v *validator) ifname(path, name string, seen map[string]bool, dup string) {
	switch {
	case name == "":
		v.missing(path, "the Linux interface name, e.g. eth0")
	case !validIfname(name):
		v.errf(path, "Linux interface names have 1 to 15 characters and no '/', ':' or spaces", "%q is not a valid interface name", name)
	case seen[name]:
		v.errf(path, "", "interface %q is %s", name, dup)
	}
	seen[name] = true
}

func validIfname(s string) bool {
	return s != "" && len(s) <= 15 && s != "." && s != ".." && !strings.ContainsAny(s, "/ \t\n:")
}

func validate(c *Config) Problems {
	v := &validator{c: c}
	v.cluster()
	v.nodes()
	v.links()
	v.instances()
	v.syncGroups()
	v.services()
	v.sync()
	return v.probs
}

func (v *validator) cluster() {
	if !v.c.isSet("cluster") {
		v.errf("cluster", `add a [cluster] table with name = "..."`, "missing (required)")
		return
	}
	v.name("cluster.name", v.c.Cluster.Name, "cluster")
}

func (v *validator) nodes() {
	c := v.c
	if len(c.Nodes) == 0 {
		v.errf("node", "add a [[node]] table for each director, with its name and interfaces", "no nodes: a cluster needs at least one [[node]]")
		return
	}
	names := map[string]string{}
	addrs := map[netip.Addr]string{}
	for i, n := range c.Nodes {
		p := fmt.Sprintf("node[%d]", i)
		if v.name(p+".name", n.Name, "node") {
			if prev, dup := names[n.Name]; dup {
				v.errf(p+".name", "node names must be unique", "node %q is already defined at %s", n.Name, prev)
			}
			names[n.Name] = c.where(p)
		}
		v.intRange(p+".priority", n.Priority, 1, 255, "VRRP priorities are 1..255; 255 means the node owns the virtual addresses")
		ifnames := map[string]bool{}
		for j, ifc := range n.Interfaces {
			ip := fmt.Sprintf("%s.interface[%d]", p, j)
			v.ifname(ip+".name", ifc.Name, ifnames, fmt.Sprintf("listed twice for node %q (list each interface once, with all its addresses)", n.Name))
			for k, a := range ifc.Addresses {
				ap := fmt.Sprintf("%s.addresses[%d]", ip, k)
				if prev, dup := addrs[a.Addr()]; dup {
					v.errf(ap, "each director needs its own address; virtual addresses go in vrrp_instance.vips", "address %s is already used at %s", a.Addr(), prev)
				}
				addrs[a.Addr()] = c.where(ap)
			}
		}
	}
}

// everyNodeHas checks that every node declares interface ifname, with an
// address of family f when f is set. It returns false after reporting.
func (v *validator) everyNodeHas(path, ifname string, f Family, why string) bool {
	ok := true
	for _, n := range v.c.Nodes {
		ifc := n.Interface(ifname)
		if ifc == nil {
			v.errf(path, fmt.Sprintf("add [[node.interface]] name = %q to node %q", ifname, n.Name), "node %q has no interface %q (%s)", n.Name, ifname, why)
			ok = false
			continue
		}
		if f != 0 {
			if _, has := ifc.FirstAddr(f); !has {
				v.errf(path, fmt.Sprintf("give node %q an %s address on %s", n.Name, f, ifname), "node %q has no %s address on %q (%s)", n.Name, f, ifname, why)
				ok = false
			}
		}
	}
	return ok
}

var serialBauds = map[int]bool{9600: true, 19200: true, 38400: true, 57600: true, 115200: true, 230400: true, 460800: true, 921600: true}

func (v *validator) links() {
	names := map[string]bool{}
	for i, l := range v.c.Links {
		p := fmt.Sprintf("link[%d]", i)
		if v.name(p+".name", l.Name, "link") {
			if names[l.Name] {
				v.errf(p+".name", "link names must be unique", "link %q is defined twice", l.Name)
			}
			names[l.Name] = true
		}
		v.durRange(p+".interval", l.Interval, time.Millisecond, 10*time.Second)
		switch l.Type {
		case "":
			v.missing(p+".type", `"udp" or "serial"`)
		case LinkUDP:
			v.onlyFor(p, []string{"device", "baud"}, `to a link of type "udp"`)
			if l.Interface == "" {
				v.missing(p+".interface", "the interface whose node addresses the heartbeats travel between")
			} else {
				v.everyNodeHas(p+".interface", l.Interface, 0, "a UDP heartbeat link runs between the nodes' addresses on it")
				for _, n := range v.c.Nodes {
					if ifc := n.Interface(l.Interface); ifc != nil && len(ifc.Addresses) == 0 {
						v.errf(p+".interface", "", "node %q has no address on %q for the UDP heartbeat link", n.Name, l.Interface)
					}
				}
			}
			v.intRange(p+".port", l.Port, 1, 65535, "")
			if l.KeyFile == "" {
				v.missing(p+".key_file", "UDP heartbeats are authenticated with HMAC-SHA256; name a file holding the shared key (e.g. 32 random bytes)")
			} else if !filepath.IsAbs(l.KeyFile) {
				v.errf(p+".key_file", "the daemon's working directory is not the config's; use an absolute path", "%q is not an absolute path", l.KeyFile)
			}
		case LinkSerial:
			v.onlyFor(p, []string{"interface", "port"}, `to a link of type "serial"`)
			if l.KeyFile != "" && !filepath.IsAbs(l.KeyFile) {
				v.errf(p+".key_file", "the daemon's working directory is not the config's; use an absolute path", "%q is not an absolute path", l.KeyFile)
			}
			if l.Device == "" {
				v.missing(p+".device", "the serial device, e.g. /dev/ttyS1")
			} else if !filepath.IsAbs(l.Device) {
				v.errf(p+".device", "", "%q is not an absolute path", l.Device)
			}
			if !serialBauds[l.Baud] {
				v.errf(p+".baud", "use 9600, 19200, 38400, 57600, 115200, 230400, 460800 or 921600", "%d is not a supported speed", l.Baud)
			}
		}
	}
}

func (v *validator) instances() {
	c := v.c
	names := map[string]string{}
	type vridKey struct {
		ifname string
		family Family
		vrid   int
	}
	vrids := map[vridKey]string{}
	vipOwner := map[netip.Addr]string{}
	links := map[string]bool{}
	for _, l := range c.Links {
		links[l.Name] = true
	}
	for i := range c.Instances {
		in := &c.Instances[i]
		p := fmt.Sprintf("vrrp_instance[%d]", i)
		if v.name(p+".name", in.Name, "vrrp_instance") {
			if prev, dup := names[in.Name]; dup {
				v.errf(p+".name", "instance names must be unique", "vrrp_instance %q is already defined at %s", in.Name, prev)
			}
			names[in.Name] = c.where(p)
		}
		if !c.isSet(p + ".vrid") {
			v.missing(p+".vrid", "a virtual router ID 1..255, the same on every director")
		} else {
			v.intRange(p+".vrid", in.VRID, 1, 255, "")
		}
		if in.Interface == "" {
			v.missing(p+".interface", "the interface the VRRP adverts and the VIPs are on")
		}
		if len(in.VIPs) == 0 {
			v.errf(p+".vips", `list the virtual addresses, e.g. vips = ["192.0.2.100/24"]`, "no virtual addresses: an instance needs at least one")
		}
		fam := in.Family()
		for k, vip := range in.VIPs {
			vp := fmt.Sprintf("%s.vips[%d]", p, k)
			if familyOf(vip.Addr()) != fam {
				v.errf(vp, "VRRPv3 runs one instance per address family; put the IPv6 and IPv4 addresses in two instances", "%s is %s but the instance's first VIP is %s", vip.Addr(), familyOf(vip.Addr()), fam)
				continue
			}
			if !vip.Addr().IsGlobalUnicast() && !vip.Addr().IsLinkLocalUnicast() {
				v.errf(vp, "a VIP must be a unicast address", "%s cannot be a virtual address", vip.Addr())
			}
			if prev, dup := vipOwner[vip.Addr()]; dup {
				v.errf(vp, "an address can be owned by one instance only", "%s is already a VIP of %s", vip.Addr(), prev)
			}
			vipOwner[vip.Addr()] = fmt.Sprintf("vrrp_instance %q", in.Name)
		}
		if in.Interface != "" && fam != 0 {
			if validIfname(in.Interface) {
				// VRRP over IPv4 sends from the node's primary IPv4 address;
				// over IPv6 from the link-local one the kernel always has.
				need := Family(0)
				if fam == IPv4 {
					need = IPv4
				}
				v.everyNodeHas(p+".interface", in.Interface, need, "VRRP adverts are sent from it")
			} else {
				v.errf(p+".interface", "", "%q is not a valid interface name", in.Interface)
			}
			if in.VRID >= 1 && in.VRID <= 255 {
				k := vridKey{in.Interface, fam, in.VRID}
				if prev, dup := vrids[k]; dup {
					v.errf(p+".vrid", "VRIDs must be unique per interface and address family; pick another one", "VRID %d is already used on %s (%s) by %s", in.VRID, in.Interface, fam, prev)
				}
				vrids[k] = fmt.Sprintf("vrrp_instance %q", in.Name)
			}
		}
		iv := in.AdvertInterval.D()
		if iv < 10*time.Millisecond || iv > 40950*time.Millisecond {
			v.errf(p+".advert_interval", "VRRPv3 carries the interval in centiseconds (12 bits)", "%s is out of range 10ms..40.95s", in.AdvertInterval)
		} else if iv%(10*time.Millisecond) != 0 {
			v.errf(p+".advert_interval", "VRRPv3 carries the interval in centiseconds; use a multiple of 10ms", "%s is not a multiple of 10ms", in.AdvertInterval)
		}
		if in.PreemptDelay < 0 || in.PreemptDelay.D() > 1000*time.Second {
			v.errf(p+".preempt_delay", "", "%s is out of range 0s..1000s", in.PreemptDelay)
		}
		if !in.Preempt && c.isSet(p+".preempt_delay") {
			v.errf(p+".preempt_delay", "remove preempt_delay, or set preempt = true", "preempt_delay has no effect with preempt = false")
		}
		for _, node := range slices.Sorted(maps.Keys(in.Priority)) {
			pp := p + ".priority." + node
			if c.Node(node) == nil {
				v.errf(pp, "nodes in this file: "+strings.Join(c.NodeNames(), ", "), "node %q is not in this file", node)
				continue
			}
			v.intRange(pp, in.Priority[node], 1, 255, "")
		}
		v.addressOwner(p, in)
		v.unicast(p, in)
		v.tracking(p, in)
		v.hook(p+".notify", in.Notify, in.NotifyTimeout)
		v.intRange(p+".garp_repeat", in.GARPRepeat, 1, 100, "gratuitous ARP rounds per burst")
		if in.GARPDelay < 0 || in.GARPRefresh < 0 || (in.GARPRefresh > 0 && in.GARPRefresh.D() < 100*time.Millisecond) {
			v.errf(p+".garp_refresh", "0 turns it off; otherwise at least 100ms", "%s is not a usable refresh interval", in.GARPRefresh)
		}
		seen := map[string]bool{}
		for k, l := range in.Links {
			lp := fmt.Sprintf("%s.links[%d]", p, k)
			switch {
			case !links[l]:
				v.errf(lp, "define it in a [[link]] table, or remove it", "no link is called %q", l)
			case seen[l]:
				v.errf(lp, "", "link %q is listed twice", l)
			}
			seen[l] = true
		}
	}
}

// addressOwner applies RFC 5798 §5.2.4: priority 255 is for the node that
// owns the virtual addresses (they are its own interface addresses), and
// only for it.
func (v *validator) addressOwner(p string, in *Instance) {
	for _, n := range v.c.Nodes {
		owns, ownsAll := false, len(in.VIPs) > 0
		for _, vip := range in.VIPs {
			o := false
			if ifc := n.Interface(in.Interface); ifc != nil {
				for _, a := range ifc.Addresses {
					o = o || a.Addr() == vip.Addr()
				}
			}
			owns, ownsAll = owns || o, ownsAll && o
		}
		prio := v.c.PriorityOf(in, n.Name)
		switch {
		case prio == 255 && !ownsAll:
			v.errf(p+".priority", "priority 255 means the node owns the addresses (RFC 5798); use 1..254", "node %q has priority 255 but does not own every VIP of %q", n.Name, in.Name)
		case owns && prio != 255:
			v.errf(p+".vips", "a node whose own address is a VIP is the address owner and must have priority 255", "node %q owns a VIP of %q but its priority is %d", n.Name, in.Name, prio)
		}
	}
}

var schedFlags = map[string]string{ // flag -> the scheduler it belongs to ("" = any)
	"sh-fallback": "sh", "sh-port": "sh",
	"mh-fallback": "mh", "mh-port": "mh",
	"flag-1": "", "flag-2": "", "flag-3": "",
}

func (v *validator) services() {
	c := v.c
	keys := map[string]string{}
	for i := range c.Services {
		s := &c.Services[i]
		p := fmt.Sprintf("virtual_service[%d]", i)
		hasAddr, hasMark := c.isSet(p+".address"), c.isSet(p+".fwmark")
		switch {
		case hasAddr && hasMark:
			v.errf(p+".fwmark", "a virtual service is either address:port or a firewall mark", "fwmark and address are mutually exclusive")
			continue
		case !hasAddr && !hasMark:
			v.errf(p, `set address = "VIP:port" or fwmark = N`, "missing address (or fwmark)")
			continue
		case hasMark:
			if !v.intRange(p+".fwmark", s.FWMark, 1, 1<<32-1, "") {
				continue
			}
			v.onlyFor(p, []string{"protocol"}, "to a firewall-mark service (the mark selects the packets)")
		default:
			v.onlyFor(p, []string{"family"}, "to an address:port service (the address sets the family)")
			if s.Address.Port == 0 {
				v.errf(p+".address", `write it as "VIP:port" (IPv6: "[2001:db8::1]:443")`, "%s has no port", s.Address.Addr)
			}
		}
		if s.Name != "" && !nameRE.MatchString(s.Name) && c.isSet(p+".name") {
			v.errf(p+".name", "use letters, digits, '_', '.' and '-'", "%q is not a valid name", s.Name)
		}
		if prev, dup := keys[s.Key()]; dup {
			v.errf(p, "each IPVS service (protocol, address, port or fwmark) can be defined once", "service %s is already defined at %s", s.Key(), prev)
		}
		keys[s.Key()] = c.where(p)
		v.schedulerFlags(p, s)
		if s.Persistence != 0 {
			if s.Persistence.D()%time.Second != 0 || s.Persistence.D() < time.Second || s.Persistence.D() > (1<<31-1)*time.Second {
				v.errf(p+".persistence_timeout", "IPVS counts persistence in whole seconds", "%s must be whole seconds, at least 1s", s.Persistence)
			}
			v.intRange(p+".persistence_granularity", s.PersistenceGranularity, 1, s.Family.bits(), "the prefix length that groups client addresses")
		} else {
			v.onlyFor(p, []string{"persistence_granularity"}, "without persistence_timeout")
		}
		v.realServers(p, s)
		totalWeight := 0
		for _, r := range s.RealServers {
			totalWeight += r.Weight
		}
		if v.intRange(p+".quorum", s.Quorum, 1, 1<<31-1, "the sum of live real-server weights the service needs") && len(s.RealServers) > 0 && s.Quorum > totalWeight {
			v.errf(p+".quorum", "lower the quorum or add real servers", "quorum %d is more than the sum of all real-server weights (%d): the service could never be up", s.Quorum, totalWeight)
		}
		if s.QuorumHysteresis < 0 || s.QuorumHysteresis >= s.Quorum {
			v.errf(p+".quorum_hysteresis", "it must be 0 or more and less than the quorum", "%d is out of range 0..%d", s.QuorumHysteresis, max(s.Quorum-1, 0))
		}
		if ss := s.SorryServer; ss != nil {
			if familyOf(ss.Addr) != s.Family {
				v.errf(p+".sorry_server", "", "%s is %s but the service is %s", ss.Addr, familyOf(ss.Addr), s.Family)
			}
			for _, r := range s.RealServers {
				if r.Address.Addr == ss.Addr && r.Address.Port == ss.Port {
					v.errf(p+".sorry_server", "the sorry server takes over when the real servers fail; it must be another server", "%s is also a real server of this service", ss)
				}
			}
		}
		if s.Check != nil {
			v.check(p+".check", s.Check)
		}
		v.hook(p+".notify", s.Notify, s.NotifyTimeout)
	}
	v.durRange("ipvs.reconcile_period", v.c.IPVS.ReconcilePeriod, 100*time.Millisecond, time.Hour)
	if f := v.c.IPVS.StateFile; f != "" && !filepath.IsAbs(f) {
		v.errf("ipvs.state_file", `use an absolute path, e.g. "/run/hadirector/ipvs-owned.json"`, "%q is relative", f)
	}
}

func (v *validator) schedulerFlags(p string, s *VirtualService) {
	seen := map[string]bool{}
	for k, f := range s.SchedulerFlags {
		fp := fmt.Sprintf("%s.scheduler_flags[%d]", p, k)
		sched, ok := schedFlags[f]
		switch {
		case !ok:
			v.errf(fp, "use sh-fallback, sh-port (sh), mh-fallback, mh-port (mh) or flag-1..flag-3", "%q is not a scheduler flag", f)
		case sched != "" && Scheduler(sched) != s.Scheduler:
			v.errf(fp, fmt.Sprintf("set scheduler = %q or remove the flag", sched), "%s applies to the %s scheduler, not %s", f, sched, s.Scheduler)
		case seen[f]:
			v.errf(fp, "", "flag %q is listed twice", f)
		}
		seen[f] = true
	}
}

func (v *validator) realServers(p string, s *VirtualService) {
	seen := map[Endpoint]bool{}
	for j := range s.RealServers {
		r := &s.RealServers[j]
		rp := fmt.Sprintf("%s.real_server[%d]", p, j)
		if !v.c.isSet(rp + ".address") {
			v.missing(rp+".address", `the real server's "ip" or "ip:port"`)
			continue
		}
		if familyOf(r.Address.Addr) != s.Family {
			v.errf(rp+".address", "IPVS forwards within one family (and the kernel's connection sync refuses mixed families)", "%s is %s but the service is %s", r.Address.Addr, familyOf(r.Address.Addr), s.Family)
		}
		if seen[r.Address] {
			v.errf(rp+".address", "each real server is listed once per service", "%s is listed twice", r.Address)
		}
		seen[r.Address] = true
		if (r.Forwarding == DR || r.Forwarding == TUN) && s.FWMark == 0 && r.Address.Port != s.Address.Port {
			v.errf(rp+".address", fmt.Sprintf("use port %d (or leave the port out), or forwarding = \"nat\"", s.Address.Port), "%s forwarding cannot change the port: the packet reaches the real server unchanged, to port %d", strings.ToUpper(string(r.Forwarding)), s.Address.Port)
		}
		v.intRange(rp+".weight", r.Weight, 0, 65535, "")
		v.intRange(rp+".upper_threshold", r.UpperThreshold, 0, 65535, "")
		v.intRange(rp+".lower_threshold", r.LowerThreshold, 0, 65535, "")
		if r.LowerThreshold > 0 && (r.UpperThreshold == 0 || r.LowerThreshold > r.UpperThreshold) {
			v.errf(rp+".lower_threshold", "set upper_threshold too, above the lower one", "lower_threshold %d needs an upper_threshold at least as large", r.LowerThreshold)
		}
		if r.Check != nil && v.c.isSet(rp+".check") {
			v.check(rp+".check", r.Check)
		}
		if r.Check != nil && r.Check.Port == 0 && r.Address.Port == 0 && (r.Check.Type == CheckTCP || r.Check.Type == CheckHTTP || r.Check.Type == CheckHTTPS) {
			v.errf(rp+".address", "give the real server a port, or the check a port", "the %s check has no port to connect to", r.Check.Type)
		}
	}
}

// Keys that belong to one kind of check.
var (
	httpKeys = []string{"path", "expect_status", "host", "body_regex", "body_sha256", "keepalive"}
	tlsKeys  = []string{"tls_server_name", "verify_tls", "ca_file"}
	execKeys = []string{"command", "dynamic_weight"}
)

func (v *validator) check(p string, ck *Check) {
	switch ck.Type {
	case "":
		v.missing(p+".type", "tcp, http, https, icmp or exec")
		return
	case CheckTCP:
		v.onlyFor(p, append(httpKeys, append(tlsKeys, execKeys...)...), `to a check of type "tcp"`)
	case CheckHTTP:
		v.onlyFor(p, append(tlsKeys, execKeys...), `to a check of type "http"`)
	case CheckHTTPS:
		v.onlyFor(p, execKeys, `to a check of type "https"`)
	case CheckICMP:
		v.onlyFor(p, append([]string{"port"}, append(httpKeys, append(tlsKeys, execKeys...)...)...), `to a check of type "icmp"`)
	case CheckExec:
		v.onlyFor(p, append([]string{"port"}, append(httpKeys, tlsKeys...)...), `to a check of type "exec"`)
		if len(ck.Command) == 0 {
			v.missing(p+".command", `the program and its arguments, e.g. ["/usr/local/bin/check-app", "--quick"]`)
		} else if !filepath.IsAbs(ck.Command[0]) {
			v.errf(p+".command[0]", "checks run without a shell or PATH search", "%q is not an absolute path", ck.Command[0])
		}
	}
	if v.c.isSet(p + ".port") {
		v.intRange(p+".port", ck.Port, 1, 65535, "")
	}
	v.durRange(p+".interval", ck.Interval, 10*time.Millisecond, time.Hour)
	if ck.Timeout <= 0 || ck.Timeout > ck.Interval {
		v.errf(p+".timeout", "a probe must finish before the next one is due", "timeout %s must be more than 0 and at most the interval (%s)", ck.Timeout, ck.Interval)
	}
	v.intRange(p+".rise", ck.Rise, 1, 100, "")
	v.intRange(p+".fall", ck.Fall, 1, 100, "")
	if ck.Path != "" && !strings.HasPrefix(ck.Path, "/") {
		v.errf(p+".path", "", "%q must start with /", ck.Path)
	}
	if ck.BodySHA256 != "" {
		if b, err := hex.DecodeString(ck.BodySHA256); err != nil || len(b) != sha256.Size {
			v.errf(p+".body_sha256", "64 hex digits, as printed by sha256sum", "%q is not a SHA-256 digest", ck.BodySHA256)
		}
	}
	if ck.CAFile != "" && !filepath.IsAbs(ck.CAFile) {
		v.errf(p+".ca_file", "use an absolute path", "%q is relative", ck.CAFile)
	}
	if ck.BodyRegex != "" {
		if _, err := regexp.Compile(ck.BodyRegex); err != nil {
			v.errf(p+".body_regex", "the syntax is Go's RE2 (no backreferences or lookaround)", "does not compile: %v", err)
		}
	}
}

func (v *validator) sync() {
	s := v.c.Sync
	if s == nil || !s.Enabled {
		return
	}
	if s.Interface == "" {
		v.missing("sync.interface", "the interface the kernel sync daemons multicast on")
	} else {
		v.everyNodeHas("sync.interface", s.Interface, IPv4, "the kernel's sync daemon sends from the interface's IPv4 address")
	}
	v.intRange("sync.sync_id", s.SyncID, 0, 255, "the sync protocol carries an 8-bit id")
	if v.c.isSet("sync.maxlen") {
		v.intRange("sync.maxlen", s.MaxLen, 1, 65507, "the largest sync message payload; it must fit the peer's MTU")
	}
	if g, err := netip.ParseAddr(s.Group); err != nil || !g.IsMulticast() {
		v.errf("sync.group", `the kernel's default is "224.0.0.81"`, "%q is not a multicast address", s.Group)
	}
	v.intRange("sync.port", s.Port, 1, 65535, "")
	v.intRange("sync.ttl", s.TTL, 1, 255, "")
	if v.c.isSet("sync.sync_threshold") {
		if len(s.Threshold) != 2 {
			v.errf("sync.sync_threshold", "[threshold, period], e.g. [3, 50] (the kernel's) or [0, 0] with sync_refresh_period", "want two numbers, got %d", len(s.Threshold))
		} else if s.Threshold[1] < 0 || s.Threshold[1] > 65535 || s.Threshold[0] < 0 || (s.Threshold[1] > 0 && s.Threshold[0] >= s.Threshold[1]) {
			v.errf("sync.sync_threshold", "the kernel needs 0 <= threshold < period (or period 0)", "%v is not a valid threshold and period", s.Threshold)
		}
	}
	if v.c.isSet("sync.sync_refresh_period") {
		v.durRange("sync.sync_refresh_period", s.RefreshPeriod, 0, 24*time.Hour)
		if s.RefreshPeriod.D()%time.Second != 0 {
			v.errf("sync.sync_refresh_period", "the kernel counts it in whole seconds", "%s is not whole seconds", s.RefreshPeriod)
		}
	}
	if v.c.isSet("sync.sync_retries") {
		v.intRange("sync.sync_retries", s.Retries, 0, 3, "resends of each sync message, at a refresh period / 8")
	}
	v.intRange("sync.peer_port", s.PeerPort, 0, 65535, "0 turns the peer state channel off")
	if s.PeerPort != 0 && s.PeerPort == s.Port {
		v.errf("sync.peer_port", "the kernel's sync traffic uses sync.port; the default is 8850", "%d collides with the sync traffic on %d", s.PeerPort, s.Port)
	}
	v.durRange("sync.peer_interval", s.PeerInterval, 10*time.Millisecond, time.Minute)
	if s.KeyFile != "" && !filepath.IsAbs(s.KeyFile) {
		v.errf("sync.key_file", "the daemon's working directory is not the config's; use an absolute path", "%q is not an absolute path", s.KeyFile)
	}
	if s.CatchUp < 0 || s.CatchUp > 1 {
		v.errf("sync.catch_up", "a fraction of the master's connections, 0 (gate off) to 1", "%v is out of range", s.CatchUp)
	}
	v.durRange("sync.catch_up_timeout", s.CatchUpTimeout, 0, 24*time.Hour)
}

// unicast checks the peer list: an empty one is an error, never a silent
// fall-back to multicast (keepalived before 2.2.4 did that and left two
// masters; openshift/machine-config-operator#2576).
func (v *validator) unicast(p string, in *Instance) {
	c := v.c
	if !in.Unicast {
		v.onlyFor(p, []string{"unicast_peers"}, "without unicast = true")
		return
	}
	for k, a := range in.UnicastPeers {
		if familyOf(a) != in.Family() && in.Family() != 0 {
			v.errf(fmt.Sprintf("%s.unicast_peers[%d]", p, k), "", "%s is %s but the instance is %s", a, familyOf(a), in.Family())
		}
	}
	for _, n := range c.Nodes {
		if len(c.Peers(in, n.Name)) == 0 {
			v.errf(p+".unicast", "add another node with an address on "+in.Interface+", or list unicast_peers", "node %q would have no unicast peer: an empty peer list is refused, never a silent fall-back to multicast", n.Name)
		}
	}
}

func (v *validator) tracking(p string, in *Instance) {
	seen := map[string]bool{}
	for k, t := range in.TrackInterfaces {
		tp := fmt.Sprintf("%s.track_interface[%d]", p, k)
		v.ifname(tp+".name", t.Name, seen, "tracked twice")
		v.intRange(tp+".weight", t.Weight, -253, 253, "0 means Fault while down; otherwise the priority change while down")
	}
}

// hook checks a notify program: an absolute path (hooks run without a shell
// or PATH search) and a time limit. Whether it exists and is executable is
// checked by the daemon at start, on the host that runs it.
func (v *validator) hook(p, path string, timeout Duration) {
	if path == "" {
		return
	}
	if !filepath.IsAbs(path) {
		v.errf(p, "hooks run without a shell or PATH search", "%q is not an absolute path", path)
	}
	if timeout <= 0 || timeout.D() > time.Hour {
		v.errf(p+"_timeout", "", "%s is out of range (0s..1h]", timeout)
	}
}

func (v *validator) syncGroups() {
	c := v.c
	member := map[string]string{}
	names := map[string]bool{}
	insts := map[string]bool{}
	for _, in := range c.Instances {
		insts[in.Name] = true
	}
	for i, g := range c.SyncGroups {
		p := fmt.Sprintf("sync_group[%d]", i)
		if v.name(p+".name", g.Name, "sync_group") {
			if names[g.Name] {
				v.errf(p+".name", "", "sync_group %q is defined twice", g.Name)
			}
			names[g.Name] = true
		}
		if len(g.Instances) < 2 {
			v.errf(p+".instances", "a sync group makes two or more instances fail over together", "needs at least two instances, has %d", len(g.Instances))
		}
		for k, name := range g.Instances {
			ip := fmt.Sprintf("%s.instances[%d]", p, k)
			switch prev, dup := member[name]; {
			case !insts[name]:
				v.errf(ip, "instances here: "+strings.Join(instanceNames(c), ", "), "no vrrp_instance is called %q", name)
			case dup:
				v.errf(ip, "an instance can be in one sync group only", "vrrp_instance %q is already in sync_group %q", name, prev)
			}
			member[name] = g.Name
		}
		v.hook(p+".notify", g.Notify, g.NotifyTimeout)
	}
}

func instanceNames(c *Config) []string {
	var names []string
	for _, in := range c.Instances {
		names = append(names, in.Name)
	}
	return names
}
