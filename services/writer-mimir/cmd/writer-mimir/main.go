// Command writer-mimir delivers the Prometheus destination's stream to a
// remote-write backend.
package main

import (
	"github.com/grafana/dskit/services"

	"github.com/watershed-dev/watershed/platform/runtime"
	"github.com/watershed-dev/watershed/services/writer-mimir/mimirwriter"
)

func main() {
	runtime.Main("writer-mimir", func(env *runtime.Env) ([][]services.Service, error) {
		return [][]services.Service{{mimirwriter.NewFromEnv(env)}}, nil
	})
}
