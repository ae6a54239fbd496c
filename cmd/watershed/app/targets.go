package app

import (
	"fmt"
	"slices"
	"strings"

	"github.com/grafana/dskit/services"

	"github.com/watershed-dev/watershed/platform/runtime"
	"github.com/watershed-dev/watershed/services/discovery/discovery"
	"github.com/watershed-dev/watershed/services/node-collector/collector"
	"github.com/watershed-dev/watershed/services/router/receiver"
	"github.com/watershed-dev/watershed/services/router/router"
	"github.com/watershed-dev/watershed/services/writer-loki/lokiwriter"
	"github.com/watershed-dev/watershed/services/writer-mimir/mimirwriter"
	"github.com/watershed-dev/watershed/services/writer-tempo/tempowriter"
)

// Targets in stop order: intake first, so that at shutdown nothing new
// comes in while the rest flushes. Discovery without Kubernetes
// credentials serves only the status endpoints.
var Targets = []string{"node-collector", "router", "writer-mimir", "writer-loki", "writer-tempo", "discovery"}

// ParseTargets reads -target: "all" or a comma-separated list.
func ParseTargets(s string) ([]string, error) {
	if s == "" || s == "all" {
		return Targets, nil
	}
	var out []string
	for _, t := range strings.Split(s, ",") {
		t = strings.TrimSpace(t)
		if !slices.Contains(Targets, t) {
			return nil, fmt.Errorf("-target: %q is not one of all, %s", t, strings.Join(Targets, ", "))
		}
		if !slices.Contains(out, t) {
			out = append(out, t)
		}
	}
	slices.SortFunc(out, func(a, b string) int { return slices.Index(Targets, a) - slices.Index(Targets, b) })
	return out, nil
}

// Build returns the BuildFunc of a set of targets.
func Build(targets []string) runtime.BuildFunc {
	return func(env *runtime.Env) ([][]services.Service, error) {
		var groups [][]services.Service
		for _, t := range targets {
			switch t {
			case "node-collector":
				if svcs := collector.ServicesFromEnv(env); len(svcs) > 0 {
					groups = append(groups, svcs)
				}
			case "router":
				r, err := router.NewFromEnv(env)
				if err != nil {
					return nil, err
				}
				// The receivers are intake: they stop before the router.
				if receiver.Enabled(env) {
					groups = append(groups, []services.Service{receiver.NewFromEnv(env, r)})
				}
				groups = append(groups, []services.Service{r})
			case "writer-mimir":
				// With metrics off nothing reaches WS_DEST_MIMIR (what an
				// earlier run left there waits), and the writer's 16 idle
				// pulls a second would be all it did.
				if env.Config.Metrics.Enabled {
					groups = append(groups, []services.Service{mimirwriter.NewFromEnv(env)})
				}
			case "writer-loki":
				// Logs need a Loki to go to; without one they wait in
				// WS_DEST_LOKI (when logs are on at all).
				if env.Config.Logs.Enabled && env.Config.ExternalServices.Loki.Host != "" {
					groups = append(groups, []services.Service{lokiwriter.NewFromEnv(env)})
				}
			case "writer-tempo":
				if env.Config.Traces.Enabled && env.Config.ExternalServices.Tempo.Host != "" {
					w, err := tempowriter.NewFromEnv(env)
					if err != nil {
						return nil, err
					}
					groups = append(groups, []services.Service{w})
				}
			case "discovery":
				d, err := discovery.NewFromEnv(env)
				if err != nil {
					return nil, err
				}
				groups = append(groups, []services.Service{d})
			default:
				return nil, fmt.Errorf("unknown target %q", t)
			}
		}
		return groups, nil
	}
}
