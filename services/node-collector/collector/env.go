package collector

import (
	"github.com/grafana/dskit/services"

	"github.com/watershed-dev/watershed/platform/runtime"
	"github.com/watershed-dev/watershed/services/node-collector/logtail"
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
		JoinSamples:    cfg.ExternalServices.Prometheus.Queue.MaxSamplesPerSend,
		ServiceAccount: DefaultServiceAccount,
	}, env.Bus, env.PublisherMetrics, env.Registry, env.Logger)
}

// ServicesFromEnv is a node collector's services: the scraper when metrics
// are on, the log tailer when logs are.
func ServicesFromEnv(env *runtime.Env) []services.Service {
	var out []services.Service
	if env.Config.Metrics.Enabled {
		out = append(out, NewFromEnv(env))
	}
	if env.Config.Logs.Enabled {
		out = append(out, logtail.NewFromEnv(env))
	}
	return out
}
