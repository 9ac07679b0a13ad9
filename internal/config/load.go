package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/pelletier/go-toml/v2"
)

// Load reads, decodes, defaults and validates the cluster config at path.
// On any problem it returns a nil Config and a Problems error listing every
// problem found; a Config is returned only when it is entirely valid.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, Problems{{File: path, Msg: "cannot read the config: " + describeReadError(err)}}
	}
	return Parse(path, data)
}

func describeReadError(err error) string {
	var pe *os.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	msg := err.Error()
	switch {
	case errors.Is(err, os.ErrNotExist):
		msg += " (check the --config path)"
	case errors.Is(err, os.ErrPermission):
		msg += " (the daemon runs as root; check the file's owner and mode)"
	case strings.Contains(msg, "is a directory"):
		msg += " (--config takes a file)"
	}
	return msg
}

// Parse is Load for a config already in memory; file names it in problems.
func Parse(file string, data []byte) (*Config, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, Problems{{File: file, Msg: "the file is empty", Hint: "a cluster config needs a [cluster] table and a [[node]] per director; see etc/hadirector.toml"}}
	}
	// Pass 1: TOML itself. go-toml's full decoder also catches what its
	// parser alone does not (a key or table defined twice).
	var any map[string]any
	if err := toml.Unmarshal(data, &any); err != nil {
		return nil, Problems{tomlProblem(file, err)}
	}
	// Pass 2: the positioned tree.
	root, err := buildTree(data)
	if err != nil {
		return nil, Problems{{File: file, Msg: "TOML: " + err.Error()}}
	}
	// Pass 3: strict decoding into the schema.
	c := &Config{File: file}
	d := &decoder{file: file, pos: map[string]Pos{}}
	d.decodeTable("", root, reflectValue(c))
	c.pos = d.pos
	if len(d.probs) > 0 {
		return nil, d.probs.sorted()
	}
	// Pass 4: defaults, then the rules across keys and sections.
	applyDefaults(c)
	if probs := validate(c); len(probs) > 0 {
		return nil, probs.sorted()
	}
	return c, nil
}

func tomlProblem(file string, err error) Problem {
	var de *toml.DecodeError
	if errors.As(err, &de) {
		line, col := de.Position()
		return Problem{File: file, Pos: Pos{line, col}, Key: strings.Join(de.Key(), "."), Msg: "not valid TOML: " + strings.TrimPrefix(de.Error(), "toml: "),
			Hint: "see https://toml.io for the syntax"}
	}
	return Problem{File: file, Msg: "not valid TOML: " + err.Error()}
}

// posOf is where path was written, or where its nearest written parent was
// (a missing key is reported at its table). Zero when nothing matches.
func (c *Config) posOf(path string) Pos {
	for p := path; p != ""; p = parentPath(p) {
		if pos, ok := c.pos[p]; ok {
			return pos
		}
	}
	return Pos{}
}

// isSet says whether the file wrote the key at path.
func (c *Config) isSet(path string) bool {
	_, ok := c.pos[path]
	return ok
}

// where describes a path's position for messages about a second place.
func (c *Config) where(path string) string {
	if p := c.posOf(path); p.Line > 0 {
		return fmt.Sprintf("line %d", p.Line)
	}
	return path
}

// parentPath strips the last component: a[1].b -> a[1] -> a -> "".
func parentPath(p string) string {
	if strings.HasSuffix(p, "]") {
		if i := strings.LastIndexByte(p, '['); i >= 0 {
			return p[:i]
		}
	}
	if i := strings.LastIndexByte(p, '.'); i >= 0 {
		return p[:i]
	}
	return ""
}
