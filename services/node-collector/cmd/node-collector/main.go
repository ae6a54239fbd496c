// Command node-collector scrapes the targets of its node and tails its log
// files, and publishes both to the bus.
package main

import (
	"github.com/grafana/dskit/services"

	"github.com/watershed-dev/watershed/platform/runtime"
	"github.com/watershed-dev/watershed/services/node-collector/collector"
)

func main() {
	runtime.Main("node-collector", func(env *runtime.Env) ([][]services.Service, error) {
		return [][]services.Service{collector.ServicesFromEnv(env)}, nil
	})
}
