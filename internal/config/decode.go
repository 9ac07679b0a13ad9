package config

import (
	"encoding"
	"fmt"
	"reflect"
	"regexp"
	"sort"
	"strings"
)

// decoder fills the schema from the tree. It does not stop at the first
// problem: a wrong key or type is recorded and the walk goes on, so `check`
// can print everything at once.
type decoder struct {
	file  string
	probs Problems
	pos   map[string]Pos // TOML path -> where it was written
}

var textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()

func (d *decoder) problem(p Pos, key, hint, format string, args ...any) {
	d.probs = append(d.probs, Problem{File: d.file, Pos: p, Key: key, Msg: fmt.Sprintf(format, args...), Hint: hint})
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// fields maps a struct type's toml keys to field indexes.
func fields(t reflect.Type) (map[string]int, []string) {
	m := map[string]int{}
	var names []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("toml")
		if tag == "" || tag == "-" || !f.IsExported() {
			continue
		}
		m[tag] = i
		names = append(names, tag)
	}
	return m, names
}

func (d *decoder) decodeTable(path string, t *table, rv reflect.Value) {
	idx, names := fields(rv.Type())
	for _, key := range t.keys {
		e := t.entries[key]
		kp := join(path, key)
		i, ok := idx[key]
		if !ok {
			d.problem(e.keyPos, kp, unknownKeyHint(key, names), "unknown key")
			continue
		}
		d.pos[kp] = e.keyPos
		d.decodeValue(kp, e.val, rv.Field(i))
	}
}

func (d *decoder) decodeValue(path string, v *value, rv reflect.Value) {
	if rv.Kind() == reflect.Pointer {
		if rv.IsNil() {
			rv.Set(reflect.New(rv.Type().Elem()))
		}
		rv = rv.Elem()
	}
	if reflect.PointerTo(rv.Type()).Implements(textUnmarshalerType) {
		if v.kind != kindString {
			d.typeProblem(path, v, "a string", rv)
			return
		}
		if err := rv.Addr().Interface().(encoding.TextUnmarshaler).UnmarshalText([]byte(v.str)); err != nil {
			d.problem(v.pos, path, "", "%v", err)
		}
		return
	}
	switch rv.Kind() {
	case reflect.String:
		if v.kind != kindString {
			d.typeProblem(path, v, "a string", rv)
			return
		}
		rv.SetString(v.str)
	case reflect.Bool:
		if v.kind != kindBool {
			d.typeProblem(path, v, "true or false", rv)
			return
		}
		rv.SetBool(v.bool)
	case reflect.Int:
		if v.kind != kindInteger {
			d.typeProblem(path, v, "an integer", rv)
			return
		}
		rv.SetInt(v.num)
	case reflect.Float64:
		switch v.kind {
		case kindFloat:
			rv.SetFloat(v.flt)
		case kindInteger: // catch_up = 1 means 1.0
			rv.SetFloat(float64(v.num))
		default:
			d.typeProblem(path, v, "a number", rv)
		}
	case reflect.Struct:
		if v.kind != kindTable {
			d.typeProblem(path, v, "a table", rv)
			return
		}
		d.decodeTable(path, v.tbl, rv)
	case reflect.Slice:
		if v.kind != kindArray {
			d.typeProblem(path, v, "an array", rv)
			return
		}
		s := reflect.MakeSlice(rv.Type(), len(v.arr), len(v.arr))
		for i, elem := range v.arr {
			ep := fmt.Sprintf("%s[%d]", path, i)
			d.pos[ep] = elem.pos
			d.decodeValue(ep, elem, s.Index(i))
		}
		rv.Set(s)
	case reflect.Map:
		if v.kind != kindTable {
			d.typeProblem(path, v, "a table", rv)
			return
		}
		m := reflect.MakeMap(rv.Type())
		for _, key := range v.tbl.keys {
			e := v.tbl.entries[key]
			kp := join(path, key)
			d.pos[kp] = e.keyPos
			ev := reflect.New(rv.Type().Elem()).Elem()
			d.decodeValue(kp, e.val, ev)
			m.SetMapIndex(reflect.ValueOf(key), ev)
		}
		rv.Set(m)
	default:
		// A schema field of a kind the decoder does not know is a
		// programming error; report it instead of panicking.
		d.problem(v.pos, path, "", "internal: cannot decode into %s", rv.Type())
	}
}

func (d *decoder) typeProblem(path string, v *value, want string, rv reflect.Value) {
	hint := ""
	switch {
	case rv.Type() == reflect.TypeFor[Duration]() && (v.kind == kindInteger || v.kind == kindFloat):
		hint = `durations are strings with a unit, e.g. "1s" or "250ms"`
	case rv.Kind() == reflect.Slice && v.kind == kindTable && rv.Type().Elem().Kind() == reflect.Struct:
		hint = "this key holds a list of tables; write [[" + indexRE.ReplaceAllString(path, "") + "]] for each entry"
	case rv.Kind() == reflect.Slice:
		hint = "write a list in brackets, e.g. [ ... ]"
	}
	d.problem(v.pos, path, hint, "expected %s, got %s", want, v.kind)
}

var indexRE = regexp.MustCompile(`\[\d+\]`)

// unknownKeyHint suggests the nearest valid key, or lists the valid ones.
func unknownKeyHint(key string, valid []string) string {
	best, bestDist := "", 1<<30
	for _, v := range valid {
		if dist := editDistance(key, v); dist < bestDist {
			best, bestDist = v, dist
		}
	}
	if best != "" && bestDist <= max(2, len(key)/3) {
		return fmt.Sprintf("did you mean %q?", best)
	}
	sorted := append([]string(nil), valid...)
	sort.Strings(sorted)
	return "valid keys here: " + strings.Join(sorted, ", ")
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func reflectValue(c *Config) reflect.Value { return reflect.ValueOf(c).Elem() }
