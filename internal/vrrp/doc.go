// Package vrrp owns the VRRPv3 protocol (RFC 5798): the advertisement codec and the state machine, both pure: no sockets, clock injected.
package vrrp
