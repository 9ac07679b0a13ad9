package lab

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFindRepo(t *testing.T) {
	wd, _ := os.Getwd()
	root, err := FindRepo(wd) // integration/lab of this clone
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Dir(filepath.Dir(wd)); root != want {
		t.Errorf("FindRepo = %s, want %s", root, want)
	}
	other := t.TempDir()
	os.WriteFile(filepath.Join(other, "go.mod"), []byte("module example.com/other\n"), 0o644)
	if _, err := FindRepo(other); err == nil || !strings.Contains(err.Error(), "run the lab from the repository") {
		t.Errorf("FindRepo outside a clone: %v", err)
	}
	if !isModule([]byte("// x\nmodule "+Module+"\n\ngo 1.26\n")) || isModule([]byte("module "+Module+"/sub\n")) {
		t.Error("isModule")
	}
}

func TestIsStatic(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := IsStatic(self); err != nil {
		t.Errorf("IsStatic(test binary): %v", err)
	}
	script := filepath.Join(t.TempDir(), "x.sh")
	os.WriteFile(script, []byte("#!/bin/sh\n"), 0o755)
	if _, err := IsStatic(script); err == nil {
		t.Error("IsStatic(a script): no error")
	}
}
