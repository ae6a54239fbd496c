package router

import (
	"github.com/watershed-dev/watershed/platform/bus"
	"github.com/watershed-dev/watershed/platform/runtime"
	"github.com/watershed-dev/watershed/services/router/logproc"
)

// NewFromEnv makes the router of a process from the Watershed configuration.
func NewFromEnv(env *runtime.Env) (*Router, error) {
	cfg := env.Config
	prom, loki, tempo := cfg.ExternalServices.Prometheus, cfg.ExternalServices.Loki, cfg.ExternalServices.Tempo
	routes := map[string]Destination{
		bus.SignalMetrics: {Name: bus.DestinationPrometheus, Tenant: prom.TenantID, Buffer: prom.Buffer},
	}
	if cfg.Logs.Enabled {
		routes[bus.SignalLogs] = Destination{Name: bus.DestinationLoki, Tenant: loki.TenantID, Buffer: loki.Buffer}
	}
	if cfg.Traces.Enabled {
		routes[bus.SignalTraces] = Destination{Name: bus.DestinationTempo, Tenant: tempo.TenantID, Buffer: tempo.Buffer}
	}
	var logs *logproc.Processor
	if lp := (logproc.Config{
		Processing: cfg.Logs.Processing, TenantFromLabel: loki.TenantFromLabel, TenantMapping: loki.TenantMapping, DefaultTenant: loki.TenantID,
	}); cfg.Logs.Enabled && lp.Needed() {
		var err error
		if logs, err = logproc.New(lp, env.Registry, env.Logger); err != nil {
			return nil, err
		}
	}
	r := New(Config{
		NATS:    cfg.NATS,
		Routes:  routes,
		Batch:   256,
		AckWait: prom.Queue.AckWait,
		Logs:    logs,
	}, env.Bus, env.PublisherMetrics, env.Registry, env.Logger)
	env.Server.Mux().Handle(BacklogPath, r.BacklogHandler())
	return r, nil
}
