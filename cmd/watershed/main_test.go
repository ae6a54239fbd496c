package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// captureStderr runs f with os.Stderr redirected and returns what it wrote.
func captureStderr(t *testing.T, f func()) string {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	old := os.Stderr
	os.Stderr = w
	defer func() { os.Stderr = old }()
	f()
	_ = w.Close()
	b, _ := io.ReadAll(r)
	return string(b)
}

// TestRunRefusesBrokenConfig: a broken file stops start-up with exit code 2
// and a message naming the key and its line.
func TestRunRefusesBrokenConfig(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		name, yaml, args, want string
	}{
		{name: "unknown key", yaml: "cluster:\n  name: x\nmetrics:\n  scrapeEvery: 5s\n", want: "line 4: metrics.scrapeEvery: field scrapeEvery not found"},
		{name: "wrong type", yaml: "cluster:\n  name: x\nnats:\n  partitions: [1]\n", want: "line 4: nats.partitions: cannot unmarshal"},
		{name: "invalid value", yaml: "cluster:\n  name: x\nexternalServices:\n  prometheus:\n    host: ftp://x\n", want: "line 5: externalServices.prometheus.host"},
		{name: "unknown target", yaml: "cluster:\n  name: x\nexternalServices:\n  prometheus:\n    host: http://x\n", args: "-target=ingester", want: `-target: "ingester" is not one of`},
		{name: "bad flag value", yaml: "cluster:\n  name: x\nexternalServices:\n  prometheus:\n    host: http://x\n", args: "-metrics.scrapeInterval=often", want: "invalid value"},
	} {
		t.Run(c.name, func(t *testing.T) {
			file := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "-")+".yaml")
			if err := os.WriteFile(file, []byte(c.yaml), 0o644); err != nil {
				t.Fatal(err)
			}
			args := []string{"-config.file=" + file}
			if c.args != "" {
				args = append(args, c.args)
			}
			var code int
			out := captureStderr(t, func() { code = run(args) })
			if code != 2 {
				t.Errorf("exit code %d, want 2", code)
			}
			if !strings.Contains(out, c.want) {
				t.Errorf("stderr %q does not contain %q", out, c.want)
			}
		})
	}
}
