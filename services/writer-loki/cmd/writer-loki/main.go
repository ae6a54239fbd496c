// Command writer-loki delivers the Loki destination's stream to a Loki push
// endpoint.
package main

import (
	"github.com/grafana/dskit/services"

	"github.com/watershed-dev/watershed/platform/runtime"
	"github.com/watershed-dev/watershed/services/writer-loki/lokiwriter"
)

func main() {
	runtime.Main("writer-loki", func(env *runtime.Env) ([][]services.Service, error) {
		return [][]services.Service{{lokiwriter.NewFromEnv(env)}}, nil
	})
}
