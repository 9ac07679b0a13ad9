package config

import (
	"reflect"
	"slices"
	"strings"
)

// Op is the kind of a Change.
type Op string

// Change operations.
const (
	Added   Op = "added"
	Removed Op = "removed"
	Changed Op = "changed"
)

// Change is one difference between two configs, at the granularity a reload
// applies: one node, link, VRRP instance, virtual service or real server.
type Change struct {
	Op      Op
	Section string // cluster, node, link, vrrp_instance, sync_group, virtual_service, real_server, ipvs, sync
	// ID names the item: a node, link or instance name; a service key
	// (tcp/192.0.2.100:80, fwmark/1/inet); "SERVICE-KEY ADDRESS" for a real
	// server. Items are matched by ID, so renaming an instance is a removal
	// and an addition, while renaming a service is a change of its name.
	ID string
	// Fields are the keys whose values differ (Changed only), in schema
	// order. Real servers are diffed as items of their own, never as a
	// field of their service.
	Fields []string
}

func (c Change) String() string {
	s := string(c.Op) + " " + c.Section
	if c.ID != "" {
		s += " " + c.ID
	}
	if len(c.Fields) > 0 {
		s += ": " + strings.Join(c.Fields, ", ")
	}
	return s
}

// Diff tells exactly what changed from old to new, for a reload that applies
// only the difference. Both configs are the validated, defaulted form, so a
// key written out with its default value is no change. Nil means identical.
func Diff(old, new *Config) []Change {
	var out []Change
	if f := changedFields(old.Cluster, new.Cluster); len(f) > 0 {
		out = append(out, Change{Op: Changed, Section: "cluster", ID: new.Cluster.Name, Fields: f})
	}
	out = append(out, diffItems("node", old.Nodes, new.Nodes, func(n *Node) string { return n.Name })...)
	out = append(out, diffItems("link", old.Links, new.Links, func(l *Link) string { return l.Name })...)
	out = append(out, diffItems("vrrp_instance", old.Instances, new.Instances, func(i *Instance) string { return i.Name })...)
	out = append(out, diffItems("sync_group", old.SyncGroups, new.SyncGroups, func(g *SyncGroup) string { return g.Name })...)
	if f := changedFields(old.IPVS, new.IPVS); len(f) > 0 {
		out = append(out, Change{Op: Changed, Section: "ipvs", Fields: f})
	}
	out = append(out, diffItems("virtual_service", old.Services, new.Services, (*VirtualService).Key, "real_server")...)
	oldSvc := index(old.Services, (*VirtualService).Key)
	for i := range new.Services {
		s := &new.Services[i]
		var before []RealServer
		if o, ok := oldSvc[s.Key()]; ok {
			before = o.RealServers
		}
		out = append(out, diffItems("real_server", before, s.RealServers, realID(s))...)
	}
	newSvc := index(new.Services, (*VirtualService).Key)
	for i := range old.Services {
		if s := &old.Services[i]; newSvc[s.Key()] == nil {
			out = append(out, diffItems("real_server", s.RealServers, nil, realID(s))...)
		}
	}
	switch {
	case old.Sync == nil && new.Sync != nil:
		out = append(out, Change{Op: Added, Section: "sync"})
	case old.Sync != nil && new.Sync == nil:
		out = append(out, Change{Op: Removed, Section: "sync"})
	case old.Sync != nil:
		if f := changedFields(*old.Sync, *new.Sync); len(f) > 0 {
			out = append(out, Change{Op: Changed, Section: "sync", Fields: f})
		}
	}
	return out
}

func realID(s *VirtualService) func(*RealServer) string {
	return func(r *RealServer) string { return s.Key() + " " + r.Address.String() }
}

func index[T any](items []T, id func(*T) string) map[string]*T {
	m := make(map[string]*T, len(items))
	for i := range items {
		m[id(&items[i])] = &items[i]
	}
	return m
}

// diffItems matches items by id: removed ones in old order, then changed and
// added ones in new order.
func diffItems[T any](section string, old, new []T, id func(*T) string, skip ...string) []Change {
	var out []Change
	newByID := index(new, id)
	for i := range old {
		if k := id(&old[i]); newByID[k] == nil {
			out = append(out, Change{Op: Removed, Section: section, ID: k})
		}
	}
	oldByID := index(old, id)
	for i := range new {
		k := id(&new[i])
		o, ok := oldByID[k]
		if !ok {
			out = append(out, Change{Op: Added, Section: section, ID: k})
			continue
		}
		if f := changedFields(*o, new[i], skip...); len(f) > 0 {
			out = append(out, Change{Op: Changed, Section: section, ID: k, Fields: f})
		}
	}
	return out
}

// changedFields lists the toml keys of struct fields that differ. Nil and
// empty slices and maps count as equal: both mean "none".
func changedFields[T any](a, b T, skip ...string) []string {
	va, vb := reflect.ValueOf(a), reflect.ValueOf(b)
	var out []string
	for i := 0; i < va.NumField(); i++ {
		tag := va.Type().Field(i).Tag.Get("toml")
		if tag == "" || tag == "-" || slices.Contains(skip, tag) {
			continue
		}
		fa, fb := va.Field(i), vb.Field(i)
		if (fa.Kind() == reflect.Slice || fa.Kind() == reflect.Map) && fa.Len() == 0 && fb.Len() == 0 {
			continue
		}
		if !reflect.DeepEqual(fa.Interface(), fb.Interface()) {
			out = append(out, tag)
		}
	}
	return out
}
