package router

import (
	"github.com/watershed-dev/watershed/platform/bus"
	"github.com/watershed-dev/watershed/platform/runtime"
)

// NewFromEnv makes the router of a process from the Watershed configuration.
func NewFromEnv(env *runtime.Env) *Router {
	cfg := env.Config
	prom := cfg.ExternalServices.Prometheus
	return New(Config{
		NATS: cfg.NATS,
		Routes: map[string]Destination{
			bus.SignalMetrics: {Name: bus.DestinationPrometheus, Tenant: prom.TenantID, Buffer: prom.Buffer},
		},
		Batch:   256,
		AckWait: prom.Queue.AckWait,
	}, env.Bus, env.PublisherMetrics, env.Registry, env.Logger)
}
