// Command router routes raw telemetry to the stream of each destination.
package main

import (
	"github.com/grafana/dskit/services"

	"github.com/watershed-dev/watershed/platform/runtime"
	"github.com/watershed-dev/watershed/services/router/router"
)

func main() {
	runtime.Main("router", func(env *runtime.Env) ([][]services.Service, error) {
		r, err := router.NewFromEnv(env)
		if err != nil {
			return nil, err
		}
		return [][]services.Service{{r}}, nil
	})
}
