package proto

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestGeneratedCodeIsFresh regenerates the Go code into a temporary
// directory with the pinned protoc-gen-go and compares it with what is
// committed: editing a .proto without `make proto` fails here.
func TestGeneratedCodeIsFresh(t *testing.T) {
	for _, tool := range []string{"protoc", "protoc-gen-go"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: run the tests with `make test`, which installs it: %v", tool, err)
		}
	}
	protos, err := filepath.Glob("watershed/v1/*.proto")
	if err != nil || len(protos) == 0 {
		t.Fatalf("no .proto files found: %v", err)
	}
	out := t.TempDir()
	args := append([]string{"--go_out=" + out, "--go_opt=module=github.com/watershed-dev/watershed/proto"}, protos...)
	cmd := exec.Command("protoc", args...)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("protoc: %v\n%s", err, b)
	}
	generated, err := filepath.Glob(filepath.Join(out, "watershedv1", "*.go"))
	if err != nil || len(generated) == 0 {
		t.Fatalf("protoc generated nothing: %v", err)
	}
	committed, _ := filepath.Glob("watershedv1/*.pb.go")
	if len(committed) != len(generated) {
		t.Fatalf("committed %d generated files, protoc makes %d: run `make proto`", len(committed), len(generated))
	}
	for _, g := range generated {
		name := filepath.Base(g)
		want, err := os.ReadFile(g)
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join("watershedv1", name))
		if err != nil {
			t.Fatalf("%s is not committed: run `make proto`", name)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("watershedv1/%s is stale: run `make proto` and commit the result", name)
		}
	}
}
