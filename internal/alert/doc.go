// Package alert owns hadirector's hooks: programs run on VRRP and (later)
// real-server transitions, with keepalived-compatible arguments, a time
// limit, and a queue that never blocks the engine.
//
// # Arguments
//
// A hook is exec'd directly, with no shell, exactly like keepalived's generic
// `notify` script:
//
//	PATH [ARGS...] TYPE NAME STATE PRIORITY
//
// TYPE is INSTANCE or GROUP, STATE is MASTER, BACKUP, FAULT or STOP, and
// PRIORITY is decimal (0 for a group, as keepalived passes). This is the
// order keepalived builds in notify_script_exec() in
// keepalived/vrrp/vrrp_notify.c ("script {GROUP|INSTANCE} NAME
// {MASTER|BACKUP|FAULT|STOP} PRIO"; the priority is 0 for a group), so an
// existing keepalived notify script runs unchanged. Each value is one argv
// element: a name with spaces or quotes arrives intact, with no shell
// quoting to get wrong (keepalived #600).
//
// # Environment
//
// The hook gets the same facts as variables (HADIRECTOR_TYPE, _NAME, _STATE,
// _PRIORITY, _CLUSTER, _NODE, _REASON, _TIME in RFC 3339 with nanoseconds,
// UTC), one HADIRECTOR_<KEY> per Event.Extra entry, and PATH set to a fixed
// minimal value. Nothing else of the daemon's environment is passed on: the
// daemon may hold credentials in its environment (a systemd
// Environment=/EnvironmentFile= for a future mail or pager sink, proxy
// settings with passwords, NOTIFY_SOCKET and the like), and a hook is a
// program someone else wrote that often logs its whole environment or
// forwards it to other commands. A hook that needs a secret reads it from a
// file it owns. The working directory is /, standard input is /dev/null.
//
// # Ordering, queueing and drops
//
// Notify never blocks: it takes a short mutex and either hands the event to
// a worker or appends it to a bounded queue. Events of one (Kind, Name) form
// a lane: they run one at a time, in the order Notify was called, each after
// the previous run (and every process it left in its group) has ended. This
// is what keepalived lacks: its notify scripts are fire-and-forget and may
// run concurrently and finish out of order (keepalived #1991, a BACKUP run
// after MASTER; #1213, where the maintainer explains that only the FIFO
// keeps order). Different lanes run concurrently, up to MaxConcurrent; a
// worker that finishes takes the oldest waiting event whose lane is free.
//
// Nothing is coalesced: MASTER then BACKUP queued for one name run both, in
// order. The queue is bounded (QueueLen events waiting, all lanes together);
// when it is full the oldest waiting event is dropped, counted in
// Stats.Dropped, and a warning is logged once per burst (with a summary when
// the queue next empties). Dropping the oldest keeps the newest event of
// every name, so a hook always learns the state a name ended in.
//
// # Time limit and process groups
//
// Each run gets its own process group. At its timeout the group gets
// SIGTERM, and SIGKILL KillGrace (1 s) later, so a hook that forked children
// leaves none behind. A run ends when the hook's program exits; any process
// still in its group then is killed too, so the next event of the lane never
// overlaps an earlier one. A hook that means to start a long-lived process
// must hand it to systemd (systemctl, systemd-run). Processes that left the
// group on purpose (setsid) are not tracked; systemd's control-group kill
// catches them when the daemon stops.
//
// The hook's last OutputLimit bytes of stdout and of stderr are kept and
// logged: at debug on success, stderr at warn on failure or timeout. Every
// run is logged at info or above with its outcome, so "was my notify script
// run?" (keepalived #1918, #2527, #1091) is answered by the log.
//
// CheckHook applies keepalived's script-security rules at start-up.
//
// E-mail and pager webhooks will be further sinks: they get their own lanes
// (a slow SMTP server must not hold back a failover script) in the same
// bounded queue.
package alert
