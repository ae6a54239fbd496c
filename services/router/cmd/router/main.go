// Command router routes raw telemetry to the stream of each destination,
// and runs the receivers (OTLP, Zipkin, Jaeger) when traces are on.
package main

import (
	"github.com/grafana/dskit/services"

	"github.com/watershed-dev/watershed/platform/runtime"
	"github.com/watershed-dev/watershed/services/router/receiver"
	"github.com/watershed-dev/watershed/services/router/router"
)

func main() {
	runtime.Main("router", func(env *runtime.Env) ([][]services.Service, error) {
		r, err := router.NewFromEnv(env)
		if err != nil {
			return nil, err
		}
		if receiver.Enabled(env) {
			// The receivers are intake: they stop before the router.
			return [][]services.Service{{receiver.NewFromEnv(env, r)}, {r}}, nil
		}
		return [][]services.Service{{r}}, nil
	})
}
