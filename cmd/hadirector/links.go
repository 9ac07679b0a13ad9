package main

import (
	"log/slog"
	"net"

	"github.com/vishvananda/netlink"
)

// watchLinks reports the link state of the named interfaces: the current
// state once (initial), then every change, until done is closed. An
// interface is up when its operational state is up (or unknown, as for
// loopback-like devices, with the administrative flag up); a deleted one is
// down.
func watchLinks(names map[string]bool, report func(name string, up bool), done <-chan struct{}, log *slog.Logger) (initialDown []string, err error) {
	updates := make(chan netlink.LinkUpdate, 64)
	if err := netlink.LinkSubscribeWithOptions(updates, done, netlink.LinkSubscribeOptions{
		ErrorCallback: func(err error) {
			select {
			case <-done: // closing the subscription makes its last Receive fail: not news
			default:
				log.Warn("link watch", "err", err)
			}
		},
	}); err != nil {
		return nil, err
	}
	for name := range names {
		l, err := netlink.LinkByName(name)
		if err != nil || !linkUp(l) {
			initialDown = append(initialDown, name)
		}
	}
	go func() {
		for u := range updates {
			name := u.Link.Attrs().Name
			if !names[name] {
				continue
			}
			report(name, u.Header.Type != 17 /* RTM_DELLINK */ && linkUp(u.Link))
		}
	}()
	return initialDown, nil
}

func linkUp(l netlink.Link) bool {
	a := l.Attrs()
	switch a.OperState {
	case netlink.OperUp:
		return true
	case netlink.OperUnknown:
		return a.Flags&net.FlagUp != 0
	}
	return false
}
