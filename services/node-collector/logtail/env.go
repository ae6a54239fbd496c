package logtail

import (
	"time"

	"github.com/watershed-dev/watershed/platform/runtime"
)

// NewFromEnv makes the tailer of a process from the Watershed configuration.
func NewFromEnv(env *runtime.Env) *Tailer {
	cfg := env.Config
	return New(Config{
		Cluster:         cfg.Cluster.Name,
		Node:            env.Name,
		Logs:            cfg.Logs,
		NATS:            cfg.NATS,
		FlushTimeout:    cfg.Server.ShutdownTimeout / 2,
		UnknownPodGrace: 10 * time.Second,
	}, env.Bus, env.PublisherMetrics, env.Registry, env.Logger)
}
