package lvs

import (
	"fmt"
	"net/netip"
)

// Mode is how the director forwards to the real servers, and so which
// topology the bed builds.
type Mode string

const (
	// NAT: the real servers sit on a back segment behind the director and
	// route their replies through it (ipvsadm -m).
	NAT Mode = "nat"
	// DR: direct routing; the real servers share the director's segment,
	// carry the VIP on lo and answer the client themselves (ipvsadm -g).
	DR Mode = "dr"
)

// Ports the real servers listen on.
const (
	HTTPPort = 80   // GET / answers the server's name; GET /health 200 or 503
	EchoPort = 9000 // line protocol: "N\n" is answered "<name> N\n"
)

// Options describe a bed: its topology and address plan. The zero value is
// a NAT bed with one director and three real servers. The address methods
// are pure (no lab needed), so a config can be built and checked anywhere.
type Options struct {
	Mode        Mode // NAT (default) or DR
	Directors   int  // 1 (lb1, default) or 2 (lb1, lb2)
	RealServers int  // 1-9, default 3: rs1, rs2, ...
	Sorry       bool // also a sorry server, node "sorry"
	NoServers   bool // do not start the HTTP/echo servers in rs*/sorry
}

func (o Options) withDefaults() Options {
	if o.Mode == "" {
		o.Mode = NAT
	}
	if o.Directors == 0 {
		o.Directors = 1
	}
	if o.RealServers == 0 {
		o.RealServers = 3
	}
	return o
}

func (o Options) validate() error {
	o = o.withDefaults()
	if o.Mode != NAT && o.Mode != DR {
		return fmt.Errorf("lvs: mode %q: want %q or %q", o.Mode, NAT, DR)
	}
	if o.Directors < 1 || o.Directors > 2 {
		return fmt.Errorf("lvs: %d directors: want 1 or 2", o.Directors)
	}
	if o.RealServers < 1 || o.RealServers > 9 {
		return fmt.Errorf("lvs: %d real servers: want 1-9", o.RealServers)
	}
	return nil
}

// PrefixLen is the prefix length of every segment of the bed.
const PrefixLen = 24

// frontNet and backNet are the first three octets of the segments.
func (o Options) frontNet() [3]byte {
	if o.withDefaults().Mode == DR {
		return [3]byte{10, 92, 0}
	}
	return [3]byte{10, 90, 0}
}

func (o Options) backNet() [3]byte { return [3]byte{10, 91, 0} }

func addr(n [3]byte, host byte) netip.Addr { return netip.AddrFrom4([4]byte{n[0], n[1], n[2], host}) }

// VIP is the virtual IP on the front segment (x.x.x.100).
func (o Options) VIP() netip.Addr { return addr(o.frontNet(), 100) }

// VIPPort is "VIP:port", for dialing and for configs.
func (o Options) VIPPort(port int) string {
	return netip.AddrPortFrom(o.VIP(), uint16(port)).String()
}

// ClientAddr is the client's address (front segment, .2).
func (o Options) ClientAddr() netip.Addr { return addr(o.frontNet(), 2) }

// DirectorAddr is director n's (1 or 2) front address, on its eth0 (.11,
// .12).
func (o Options) DirectorAddr(n int) netip.Addr { return addr(o.frontNet(), byte(10+n)) }

// DirectorBackAddr is director n's back address, on its eth1 (NAT only:
// .1, .2); lb1's is the real servers' default gateway. Zero in DR.
func (o Options) DirectorBackAddr(n int) netip.Addr {
	if o.withDefaults().Mode != NAT {
		return netip.Addr{}
	}
	return addr(o.backNet(), byte(n))
}

// BackVIP is the floating gateway of the real servers on the back segment
// (.254), NAT with two directors only: a second VRRP instance in a sync
// group with the front one moves it with the VIP, so replies follow the
// master. Zero otherwise.
func (o Options) BackVIP() netip.Addr {
	if o = o.withDefaults(); o.Mode != NAT || o.Directors < 2 {
		return netip.Addr{}
	}
	return addr(o.backNet(), 254)
}

// gateway is the real servers' default route in NAT.
func (o Options) gateway() netip.Addr {
	if g := o.BackVIP(); g.IsValid() {
		return g
	}
	return o.DirectorBackAddr(1)
}

// serverNet is the segment the real servers are on.
func (o Options) serverNet() [3]byte {
	if o.withDefaults().Mode == DR {
		return o.frontNet()
	}
	return o.backNet()
}

// RealAddr is real server i's address (1-based: rs1 is .21).
func (o Options) RealAddr(i int) netip.Addr { return addr(o.serverNet(), byte(20+i)) }

// SorryAddr is the sorry server's address (.50).
func (o Options) SorryAddr() netip.Addr { return addr(o.serverNet(), 50) }

// RealNames are the real servers' node (and server) names: rs1, rs2, ...
func (o Options) RealNames() []string {
	o = o.withDefaults()
	out := make([]string, o.RealServers)
	for i := range out {
		out[i] = fmt.Sprintf("rs%d", i+1)
	}
	return out
}

// ServerAddr is the address of a server node by name (rsN or sorry).
func (o Options) ServerAddr(name string) (netip.Addr, bool) {
	if name == "sorry" {
		return o.SorryAddr(), o.Sorry
	}
	for i, n := range o.RealNames() {
		if n == name {
			return o.RealAddr(i + 1), true
		}
	}
	return netip.Addr{}, false
}

func prefix(a netip.Addr) string { return netip.PrefixFrom(a, PrefixLen).String() }
