package config

import (
	"fmt"
	"sort"
	"strings"
)

// Pos is a position in a config file; lines and columns start at 1.
// The zero Pos means "no position" (the file as a whole).
type Pos struct {
	Line, Col int
}

// Problem is one thing wrong with a config file.
type Problem struct {
	File string
	Pos  Pos
	Key  string // the TOML path, e.g. vrrp_instance[1].vrid; "" for file-level problems
	Msg  string
	Hint string // how to fix it, when there is something useful to say
}

// String renders the problem as FILE:LINE:COL: key: message (hint: ...).
func (p Problem) String() string {
	var b strings.Builder
	b.WriteString(p.File)
	if p.Pos.Line > 0 {
		fmt.Fprintf(&b, ":%d:%d", p.Pos.Line, p.Pos.Col)
	}
	b.WriteString(": ")
	if p.Key != "" {
		b.WriteString(p.Key)
		b.WriteString(": ")
	}
	b.WriteString(p.Msg)
	if p.Hint != "" {
		b.WriteString(" (hint: ")
		b.WriteString(p.Hint)
		b.WriteString(")")
	}
	return b.String()
}

// Problems is every problem found in one file. It is the error type
// returned by Load and Parse.
type Problems []Problem

func (ps Problems) Error() string {
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

func (ps Problems) sorted() Problems {
	sort.SliceStable(ps, func(i, j int) bool {
		if ps[i].Pos.Line != ps[j].Pos.Line {
			return ps[i].Pos.Line < ps[j].Pos.Line
		}
		return ps[i].Pos.Col < ps[j].Pos.Col
	})
	return ps
}
