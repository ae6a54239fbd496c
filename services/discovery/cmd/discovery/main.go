// Command discovery watches Kubernetes and pushes each node collector its
// scrape targets.
package main

import (
	"github.com/grafana/dskit/services"

	"github.com/watershed-dev/watershed/platform/runtime"
	"github.com/watershed-dev/watershed/services/discovery/discovery"
)

func main() {
	runtime.Main("discovery", func(env *runtime.Env) ([][]services.Service, error) {
		d, err := discovery.NewFromEnv(env)
		if err != nil {
			return nil, err
		}
		return [][]services.Service{{d}}, nil
	})
}
