package healthcheck

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// Checker probes one server once.
//
// Check must return by ctx's deadline (or promptly once ctx is canceled),
// having released every socket, goroutine and process it used. All checkers
// of this package do; the Manager relies on it.
type Checker interface {
	Check(ctx context.Context) Result
}

// Result is the outcome of one check.
type Result struct {
	OK bool
	// Detail says why a check failed ("connection refused", "status 503
	// not in 200-299", "timeout after 1s reading the response"), or briefly
	// what succeeded.
	Detail string
	// Duration is how long the check took (in a Manager: from the start
	// of its round, the base of its timeout).
	Duration time.Duration
	// Weight is the dynamic weight reported by an exec check with Dynamic
	// set (exit status − 2); valid only if HasWeight.
	Weight    int
	HasWeight bool
}

// State is a target's health as seen through rise and fall.
type State uint8

// Target states.
const (
	// StateUnknown: not enough results yet (neither rise successes nor fall
	// failures in a row since the target was added).
	StateUnknown State = iota
	// StateDown: fall consecutive failures.
	StateDown
	// StateUp: rise consecutive successes.
	StateUp
)

func (s State) String() string {
	switch s {
	case StateUnknown:
		return "unknown"
	case StateDown:
		return "down"
	case StateUp:
		return "up"
	}
	return "State(" + strconv.Itoa(int(s)) + ")"
}

// TargetID names a target: typically the engine's "service → real server →
// check" key. It is opaque to this package.
type TargetID string

// Transition reports that a target's state changed.
//
// From == To happens in two cases: the dynamic weight of an Up exec target
// changed (WeightChanged), or the consumer fell behind and a change and its
// reversal were coalesced (Coalesced > 0).
type Transition struct {
	Target TargetID
	From   State
	To     State
	// Detail is the detail of the result that caused the transition.
	Detail string
	// At is when that result was obtained.
	At time.Time
	// ConsecutiveCount is the number of identical results in a row (all
	// successes or all failures) that led to To.
	ConsecutiveCount int
	// Weight is the dynamic weight of the latest result, if HasWeight.
	Weight    int
	HasWeight bool
	// WeightChanged: the dynamic weight changed (To is StateUp).
	WeightChanged bool
	// Coalesced counts earlier transitions of this target that were merged
	// into this one because the consumer had not taken them yet.
	Coalesced int
}

// CheckSpec describes a checker by value.
//
// Key is the checker's canonical identity: two specs with equal keys probe
// the same thing in the same way, and targets using them share one probe.
// It must cover every field that changes what the checker does.
type CheckSpec interface {
	Key() string
	// NewChecker builds the checker. It validates the spec; env supplies
	// shared resources (the ICMP socket).
	NewChecker(env *Env) (Checker, error)
}

// Env holds what checkers share across the process.
type Env struct {
	// Pinger is the shared ICMP socket pair used by ICMPSpec checkers.
	Pinger *Pinger
}

// Spec is everything about one target: what to probe, how often, and how
// to count.
type Spec struct {
	Check CheckSpec
	// Interval between the starts of two probes (> 0).
	Interval time.Duration
	// Timeout of one probe: 0 < Timeout ≤ Interval.
	Timeout time.Duration
	// Rise and Fall: consecutive successes (failures) needed to go Up
	// (Down). At least 1.
	Rise, Fall int
	// Initial is the state before enough results are in. keepalived's
	// "alpha" mode is StateDown; StateUp trusts a server until fall failures.
	Initial State
}

// Errors returned by the Manager.
var (
	ErrDuplicateTarget = errors.New("healthcheck: target already added")
	ErrUnknownTarget   = errors.New("healthcheck: no such target")
	ErrClosed          = errors.New("healthcheck: manager closed")
)

// Validate reports what is wrong with the spec, without building the
// checker.
func (s Spec) Validate() error {
	switch {
	case s.Check == nil:
		return errors.New("healthcheck: spec has no check")
	case s.Interval <= 0:
		return fmt.Errorf("healthcheck: interval %v: must be positive", s.Interval)
	case s.Timeout <= 0:
		return fmt.Errorf("healthcheck: timeout %v: must be positive", s.Timeout)
	case s.Timeout > s.Interval:
		return fmt.Errorf("healthcheck: timeout %v is longer than the interval %v", s.Timeout, s.Interval)
	case s.Rise < 1:
		return fmt.Errorf("healthcheck: rise %d: must be at least 1", s.Rise)
	case s.Fall < 1:
		return fmt.Errorf("healthcheck: fall %d: must be at least 1", s.Fall)
	case s.Initial > StateUp:
		return fmt.Errorf("healthcheck: initial state %v: unknown", s.Initial)
	}
	return nil
}

// probeKey identifies a probe: the checker and its timing. Rise, fall and
// the initial state are per target and do not split probes.
func (s Spec) probeKey() string {
	return s.Check.Key() + "|every=" + s.Interval.String() + "|timeout=" + s.Timeout.String()
}
