package collector

import (
	"github.com/watershed-dev/watershed/platform/runtime"
)

// NewFromEnv makes the collector of a process from the Watershed configuration.
func NewFromEnv(env *runtime.Env) *Collector {
	cfg := env.Config
	return New(Config{
		Cluster:        cfg.Cluster.Name,
		Name:           env.Name,
		Metrics:        cfg.Metrics,
		NATS:           cfg.NATS,
		PublishTimeout: max(cfg.Metrics.ScrapeInterval, cfg.Server.ShutdownTimeout/2),
		FlushTimeout:   cfg.Server.ShutdownTimeout / 2,
		ServiceAccount: DefaultServiceAccount,
	}, env.Bus, env.PublisherMetrics, env.Registry, env.Logger)
}
