package vip

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// Defaults, as keepalived's (keepalived/include/vrrp.h).
const (
	// DefaultRepeat is the number of rounds in a burst
	// (vrrp_garp_master_repeat).
	DefaultRepeat = 5
	// DefaultSecondBurstDelay is the delay of the second burst after Take
	// (vrrp_garp_master_delay).
	DefaultSecondBurstDelay = 5 * time.Second
	// DefaultCheckInterval is how often a held Announcer retries putting
	// its VIPs in place while that is failing (see Config.CheckInterval).
	DefaultCheckInterval = time.Second
)

// Disabled, given as SecondBurstDelay or CheckInterval, turns that feature
// off (their zero value means the default).
const Disabled time.Duration = -1

// maxIfname is IFNAMSIZ - 1.
const maxIfname = 15

// Config describes the virtual addresses of one Announcer: one interface,
// and the VIPs it owns on that interface (typically one VRRP instance).
type Config struct {
	// Interface is the name of the interface the VIPs go on. New resolves
	// it once; a deleted and recreated interface needs a new Announcer.
	Interface string
	// VIPs are the virtual addresses with their prefix length (a bare
	// address is /32 or /128). IPv4 and IPv6 may be mixed. They must be
	// unique.
	VIPs []netip.Prefix
	// Label is an optional IPv4 address label (`ip addr add ... label`),
	// Interface or Interface + ":" + something, at most 15 characters.
	// Empty means none (the kernel then shows the interface name).
	Label string

	// Repeat is the number of announcement rounds in a burst; a round
	// sends, for every VIP, both gratuitous ARP forms (IPv4) or one
	// unsolicited neighbour advertisement (IPv6). 0 means DefaultRepeat.
	Repeat int
	// Interval is the pause between the rounds of a burst. 0 (the default,
	// like keepalived's vrrp_garp_interval) sends the rounds back to back;
	// then a whole burst is sent before Take or Announce returns.
	Interval time.Duration
	// SecondBurstDelay is when, after Take, a second burst goes out (for
	// switches and hosts that missed the first). 0 means
	// DefaultSecondBurstDelay; Disabled means no second burst.
	SecondBurstDelay time.Duration
	// Refresh, if positive, re-announces (one round) every Refresh while
	// held (keepalived's vrrp_garp_master_refresh). 0 means off.
	Refresh time.Duration
	// CheckInterval is how often a held Announcer lists the interface's
	// addresses and puts back any VIP that is missing, while it is
	// degraded: a VIP could not be added (at Take or when putting it back)
	// or the addresses could not be listed. Otherwise it does not poll: the
	// netlink event watch reports every deletion, and a watch that fails
	// (a netlink buffer overrun is reported as ENOBUFS) is reopened and
	// followed by a check. 0 means DefaultCheckInterval; Disabled turns the
	// retries off.
	CheckInterval time.Duration
}

// normalize checks c and returns a copy with defaults filled in.
func (c Config) normalize() (Config, error) {
	var errs []error
	if c.Interface == "" {
		errs = append(errs, errors.New("interface name is empty"))
	} else if len(c.Interface) > maxIfname || strings.ContainsAny(c.Interface, "/: \t\n") {
		errs = append(errs, fmt.Errorf("interface name %q is not a valid Linux interface name", c.Interface))
	}
	if len(c.VIPs) == 0 {
		errs = append(errs, errors.New("no VIPs"))
	}
	seen := map[netip.Addr]bool{}
	vips := make([]netip.Prefix, 0, len(c.VIPs))
	hasV4 := false
	for _, p := range c.VIPs {
		a := p.Addr()
		switch {
		case !p.IsValid():
			errs = append(errs, fmt.Errorf("VIP %v is not a valid prefix", p))
			continue
		case a.Zone() != "":
			errs = append(errs, fmt.Errorf("VIP %s: zones are not allowed", p))
			continue
		case a.Is4In6():
			errs = append(errs, fmt.Errorf("VIP %s: IPv4-mapped IPv6 address; give the IPv4 address", p))
			continue
		case a.IsUnspecified() || a.IsMulticast() || a.IsLoopback() || a.IsLinkLocalUnicast() ||
			(a.Is4() && a == netip.AddrFrom4([4]byte{255, 255, 255, 255})):
			errs = append(errs, fmt.Errorf("VIP %s: not a unicast address usable as a VIP", p))
			continue
		case seen[a]:
			errs = append(errs, fmt.Errorf("VIP %s: address listed twice", p))
			continue
		}
		seen[a] = true
		hasV4 = hasV4 || a.Is4()
		vips = append(vips, p)
	}
	c.VIPs = vips
	if c.Label != "" {
		if len(c.Label) > maxIfname || (c.Label != c.Interface && !strings.HasPrefix(c.Label, c.Interface+":")) {
			errs = append(errs, fmt.Errorf("label %q: want %q or %q followed by up to %d characters in all", c.Label, c.Interface, c.Interface+":", maxIfname))
		}
		if !hasV4 {
			errs = append(errs, fmt.Errorf("label %q: labels apply to IPv4 VIPs only, and there are none", c.Label))
		}
	}
	switch {
	case c.Repeat == 0:
		c.Repeat = DefaultRepeat
	case c.Repeat < 0 || c.Repeat > 1000:
		errs = append(errs, fmt.Errorf("repeat %d: want 1-1000 (0 for the default %d)", c.Repeat, DefaultRepeat))
	}
	if c.Interval < 0 || c.Interval > time.Minute {
		errs = append(errs, fmt.Errorf("interval %v: want 0-1m", c.Interval))
	}
	switch {
	case c.SecondBurstDelay == 0:
		c.SecondBurstDelay = DefaultSecondBurstDelay
	case c.SecondBurstDelay < 0 && c.SecondBurstDelay != Disabled:
		errs = append(errs, fmt.Errorf("second burst delay %v: want a positive duration, 0 (default) or Disabled", c.SecondBurstDelay))
	}
	if c.Refresh < 0 {
		errs = append(errs, fmt.Errorf("refresh %v: want a positive duration or 0 (off)", c.Refresh))
	} else if c.Refresh > 0 && c.Refresh < 10*time.Millisecond {
		errs = append(errs, fmt.Errorf("refresh %v: want at least 10ms", c.Refresh))
	}
	switch {
	case c.CheckInterval == 0:
		c.CheckInterval = DefaultCheckInterval
	case c.CheckInterval < 0 && c.CheckInterval != Disabled:
		errs = append(errs, fmt.Errorf("check interval %v: want a positive duration, 0 (default) or Disabled", c.CheckInterval))
	case c.CheckInterval > 0 && c.CheckInterval < 10*time.Millisecond:
		errs = append(errs, fmt.Errorf("check interval %v: want at least 10ms", c.CheckInterval))
	}
	if len(errs) > 0 {
		return c, fmt.Errorf("%w: %w", ErrInvalidConfig, errors.Join(errs...))
	}
	return c, nil
}

func (c Config) hasFamily(v4 bool) bool {
	for _, p := range c.VIPs {
		if p.Addr().Is4() == v4 {
			return true
		}
	}
	return false
}
