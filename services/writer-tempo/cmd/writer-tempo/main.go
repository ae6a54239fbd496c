// Command writer-tempo delivers the Tempo destination's stream to Tempo's
// OTLP receiver.
package main

import (
	"github.com/grafana/dskit/services"

	"github.com/watershed-dev/watershed/platform/runtime"
	"github.com/watershed-dev/watershed/services/writer-tempo/tempowriter"
)

func main() {
	runtime.Main("writer-tempo", func(env *runtime.Env) ([][]services.Service, error) {
		w, err := tempowriter.NewFromEnv(env)
		if err != nil {
			return nil, err
		}
		return [][]services.Service{{w}}, nil
	})
}
