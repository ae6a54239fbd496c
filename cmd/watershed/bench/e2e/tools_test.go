package main

import (
	"os"
	"path/filepath"
	"testing"
)

// A peer given by name is found on PATH, else in the tools cache that
// make installs it into; a path, or a name found nowhere, stays as given.
func TestFindToolLooksInTheToolsCache(t *testing.T) {
	onPath, tools := t.TempDir(), t.TempDir()
	write := func(path string, mode os.FileMode) {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte("#!/bin/sh\n"), mode); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(onPath, "on-path"), 0o755)
	write(filepath.Join(tools, "bin", "cached"), 0o755)
	write(filepath.Join(tools, "bin", "not-executable"), 0o644)
	t.Setenv("PATH", onPath)
	t.Setenv("TOOLS_DIR", tools)
	for _, tc := range []struct{ name, give, want string }{
		{name: "on PATH", give: "on-path", want: "on-path"},
		{name: "in the tools cache", give: "cached", want: filepath.Join(tools, "bin", "cached")},
		{name: "not executable", give: "not-executable", want: "not-executable"},
		{name: "nowhere", give: "missing", want: "missing"},
		{name: "a path", give: "/opt/vmagent", want: "/opt/vmagent"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := findTool(tc.give); got != tc.want {
				t.Errorf("findTool(%q) = %q, want %q", tc.give, got, tc.want)
			}
		})
	}
}
