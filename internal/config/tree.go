package config

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/pelletier/go-toml/v2/unstable"
)

// The tree is the parsed file with the position of every key and value, which
// go-toml's decoder does not expose. The decoder walks it to fill the schema.

type valueKind int

const (
	kindString valueKind = iota
	kindInteger
	kindFloat
	kindBool
	kindDatetime
	kindArray
	kindTable
)

func (k valueKind) String() string {
	return [...]string{"a string", "an integer", "a float", "a boolean", "a date-time", "an array", "a table"}[k]
}

type value struct {
	kind valueKind
	pos  Pos
	str  string // string, datetime (raw text)
	num  int64
	flt  float64
	bool bool
	arr  []*value
	tbl  *table
}

type entry struct {
	keyPos Pos
	val    *value
}

// table keeps keys in the order they were written so that problems come out
// in file order.
type table struct {
	keys    []string
	entries map[string]*entry
}

func newTable() *table { return &table{entries: map[string]*entry{}} }

func (t *table) set(key string, e *entry) {
	if _, ok := t.entries[key]; !ok {
		t.keys = append(t.keys, key)
	}
	t.entries[key] = e
}

type treeBuilder struct {
	p *unstable.Parser
}

// buildTree parses data into a positioned tree. The caller has already run a
// full TOML decoder over data, so structural conflicts here are unexpected;
// they are still reported as errors, never panics.
func buildTree(data []byte) (*table, error) {
	var p unstable.Parser
	p.Reset(data)
	b := treeBuilder{p: &p}
	root := newTable()
	cur := root
	for p.NextExpression() {
		e := p.Expression()
		var err error
		switch e.Kind {
		case unstable.KeyValue:
			err = b.keyValue(cur, e)
		case unstable.Table, unstable.ArrayTable:
			cur, err = b.header(root, e)
		}
		if err != nil {
			return nil, err
		}
	}
	return root, p.Error()
}

func (b treeBuilder) pos(n *unstable.Node) Pos {
	s := b.p.Shape(n.Raw)
	return Pos{Line: s.Start.Line, Col: s.Start.Column}
}

type keyPart struct {
	name string
	pos  Pos
}

func (b treeBuilder) keyParts(n *unstable.Node) []keyPart {
	var parts []keyPart
	it := n.Key()
	for it.Next() {
		k := it.Node()
		parts = append(parts, keyPart{name: string(k.Data), pos: b.pos(k)})
	}
	return parts
}

// descend returns the table that key part names inside t, creating an
// implicit table when it does not exist yet. For an array of tables it is the
// last element, as TOML specifies for [[a]] followed by [a.b].
func descend(t *table, part keyPart) (*table, error) {
	e, ok := t.entries[part.name]
	if !ok {
		e = &entry{keyPos: part.pos, val: &value{kind: kindTable, pos: part.pos, tbl: newTable()}}
		t.set(part.name, e)
	}
	switch v := e.val; {
	case v.kind == kindTable:
		return v.tbl, nil
	case v.kind == kindArray && len(v.arr) > 0 && v.arr[len(v.arr)-1].kind == kindTable:
		return v.arr[len(v.arr)-1].tbl, nil
	default:
		return nil, fmt.Errorf("%d:%d: key %q is %s, not a table", part.pos.Line, part.pos.Col, part.name, v.kind)
	}
}

func (b treeBuilder) header(root *table, n *unstable.Node) (*table, error) {
	parts := b.keyParts(n)
	if len(parts) == 0 {
		return nil, fmt.Errorf("empty table header")
	}
	t := root
	for _, part := range parts[:len(parts)-1] {
		var err error
		if t, err = descend(t, part); err != nil {
			return nil, err
		}
	}
	last := parts[len(parts)-1]
	if n.Kind == unstable.Table {
		tbl, err := descend(t, last)
		if err != nil {
			return nil, err
		}
		e := t.entries[last.name]
		e.keyPos, e.val.pos = last.pos, last.pos // an explicit header beats an implicit one
		return tbl, nil
	}
	elem := &value{kind: kindTable, pos: last.pos, tbl: newTable()}
	e, ok := t.entries[last.name]
	switch {
	case !ok:
		t.set(last.name, &entry{keyPos: last.pos, val: &value{kind: kindArray, pos: last.pos, arr: []*value{elem}}})
	case e.val.kind == kindArray:
		e.val.arr = append(e.val.arr, elem)
	default:
		return nil, fmt.Errorf("%d:%d: key %q is %s, not an array of tables", last.pos.Line, last.pos.Col, last.name, e.val.kind)
	}
	return elem.tbl, nil
}

func (b treeBuilder) keyValue(t *table, n *unstable.Node) error {
	parts := b.keyParts(n)
	if len(parts) == 0 {
		return fmt.Errorf("key/value without a key")
	}
	for _, part := range parts[:len(parts)-1] {
		var err error
		if t, err = descend(t, part); err != nil {
			return err
		}
	}
	last := parts[len(parts)-1]
	v, err := b.value(n.Value(), last.pos)
	if err != nil {
		return err
	}
	if _, dup := t.entries[last.name]; dup {
		return fmt.Errorf("%d:%d: key %q is defined twice", last.pos.Line, last.pos.Col, last.name)
	}
	t.set(last.name, &entry{keyPos: last.pos, val: v})
	return nil
}

// value converts one value node. fallback is used where go-toml leaves the
// node's range empty (arrays): the position of the key.
func (b treeBuilder) value(n *unstable.Node, fallback Pos) (*value, error) {
	p := fallback
	if n.Raw.Length > 0 {
		p = b.pos(n)
	}
	v := &value{pos: p}
	data := string(n.Data)
	switch n.Kind {
	case unstable.String:
		v.kind, v.str = kindString, data
	case unstable.Bool:
		v.kind, v.bool = kindBool, data == "true"
	case unstable.Integer:
		i, err := parseTOMLInt(data)
		if err != nil {
			return nil, fmt.Errorf("%d:%d: %v", p.Line, p.Col, err)
		}
		v.kind, v.num = kindInteger, i
	case unstable.Float:
		f, err := strconv.ParseFloat(strings.ReplaceAll(data, "_", ""), 64)
		if err != nil && !strings.Contains(data, "inf") && !strings.Contains(data, "nan") {
			return nil, fmt.Errorf("%d:%d: bad float %q", p.Line, p.Col, data)
		}
		v.kind, v.flt = kindFloat, f
	case unstable.DateTime, unstable.LocalDateTime, unstable.LocalDate, unstable.LocalTime:
		v.kind, v.str = kindDatetime, data
	case unstable.Array:
		v.kind = kindArray
		it := n.Children()
		for it.Next() {
			elem, err := b.value(it.Node(), p)
			if err != nil {
				return nil, err
			}
			v.arr = append(v.arr, elem)
		}
	case unstable.InlineTable:
		v.kind, v.tbl = kindTable, newTable()
		it := n.Children()
		for it.Next() {
			if err := b.keyValue(v.tbl, it.Node()); err != nil {
				return nil, err
			}
		}
	default:
		return nil, fmt.Errorf("%d:%d: unsupported TOML value %v", p.Line, p.Col, n.Kind)
	}
	return v, nil
}

// parseTOMLInt reads a TOML integer: decimal with optional sign and
// underscores, or 0x / 0o / 0b prefixed.
func parseTOMLInt(s string) (int64, error) {
	clean := strings.ReplaceAll(s, "_", "")
	base := 10
	if len(clean) > 2 && clean[0] == '0' {
		switch clean[1] {
		case 'x':
			base = 16
		case 'o':
			base = 8
		case 'b':
			base = 2
		}
		if base != 10 {
			clean = clean[2:]
		}
	}
	i, err := strconv.ParseInt(clean, base, 64)
	if err != nil {
		return 0, fmt.Errorf("integer %s does not fit in 64 bits", s)
	}
	return i, nil
}
