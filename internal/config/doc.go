// Package config owns hadirector's cluster configuration: the TOML schema
// that describes the whole cluster in one file (deployed unchanged on every
// director), its defaults, strict validation whose every problem names the
// file, line, column and key, and Diff, which tells a reload exactly what
// changed.
//
// Loading is four passes over one file:
//
//  1. TOML syntax, by github.com/pelletier/go-toml/v2 (its position-aware
//     errors are kept);
//  2. a tree that remembers where every key and value was written;
//  3. a strict decoder into the typed schema that reports every unknown key
//     and wrong type, not only the first;
//  4. defaults (defaults.go, the one place they live), then semantic
//     validation across sections (validate.go).
//
// The package knows nothing of sockets or the kernel: whether an interface
// exists on this host is checked by the daemon at start, not here.
package config
