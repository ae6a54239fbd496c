package deploy_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Every component has a multi-stage Dockerfile whose images are pinned and
// whose final stage runs as a non-root user.
func TestDockerfiles(t *testing.T) {
	for _, comp := range watershedComponents {
		t.Run(comp, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("..", "build", "Dockerfile."+comp))
			if err != nil {
				t.Fatal(err)
			}
			var froms []string
			user := ""
			for _, line := range strings.Split(string(data), "\n") {
				fields := strings.Fields(line)
				if len(fields) < 2 {
					continue
				}
				switch strings.ToUpper(fields[0]) {
				case "FROM":
					froms = append(froms, fields[1])
					user = ""
				case "USER":
					user = fields[1]
				}
			}
			if len(froms) < 2 {
				t.Errorf("%d stages, want a build stage and a runtime stage", len(froms))
			}
			for _, f := range froms {
				if !pinned(f) {
					t.Errorf("base image %s is not pinned", f)
				}
			}
			if user == "" || strings.HasPrefix(user, "0") || strings.HasPrefix(user, "root") {
				t.Errorf("final stage runs as %q, want a non-root user", user)
			}
			if !strings.Contains(string(data), "./services/"+comp+"/cmd/"+comp) {
				t.Errorf("does not build ./services/%s/cmd/%s", comp, comp)
			}
		})
	}
}
