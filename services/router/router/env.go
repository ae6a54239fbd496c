package router

import (
	"github.com/watershed-dev/watershed/platform/bus"
	"github.com/watershed-dev/watershed/platform/runtime"
)

// NewFromEnv makes the router of a process from the Watershed configuration.
func NewFromEnv(env *runtime.Env) *Router {
	cfg := env.Config
	prom, loki := cfg.ExternalServices.Prometheus, cfg.ExternalServices.Loki
	routes := map[string]Destination{
		bus.SignalMetrics: {Name: bus.DestinationPrometheus, Tenant: prom.TenantID, Buffer: prom.Buffer},
	}
	if cfg.Logs.Enabled {
		routes[bus.SignalLogs] = Destination{Name: bus.DestinationLoki, Tenant: loki.TenantID, Buffer: loki.Buffer}
	}
	return New(Config{
		NATS:    cfg.NATS,
		Routes:  routes,
		Batch:   256,
		AckWait: prom.Queue.AckWait,
	}, env.Bus, env.PublisherMetrics, env.Registry, env.Logger)
}
