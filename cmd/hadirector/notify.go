package main

import (
	"context"
	"log/slog"
	"time"

	sd "github.com/coreos/go-systemd/v22/daemon"
)

// notifier speaks systemd's sd_notify protocol (a datagram to
// $NOTIFY_SOCKET). Outside systemd every call is a no-op.
type notifier struct {
	log *slog.Logger
}

func newNotifier(log *slog.Logger) *notifier { return &notifier{log: log} }

func (n *notifier) send(state string) {
	if _, err := sd.SdNotify(false, state); err != nil {
		n.log.Warn("sd_notify failed", "state", state, "err", err)
	}
}

// watchdog feeds systemd's watchdog (WatchdogSec=) at half its interval,
// but only while alive answers: a wedged engine loop stops the pings, and
// systemd restarts the daemon instead of leaving a headless director.
func (n *notifier) watchdog(ctx context.Context, alive func(context.Context) error) {
	interval, err := sd.SdWatchdogEnabled(false)
	if err != nil {
		n.log.Warn("systemd watchdog settings are invalid; not feeding it", "err", err)
		return
	}
	if interval == 0 {
		return
	}
	t := time.NewTicker(interval / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			actx, cancel := context.WithTimeout(ctx, interval/2)
			err := alive(actx)
			cancel()
			if err != nil {
				n.log.Error("engine loop is not answering; withholding the watchdog ping", "err", err)
				continue
			}
			n.send("WATCHDOG=1")
		}
	}
}
