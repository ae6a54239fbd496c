package receiver

import (
	"time"

	"github.com/watershed-dev/watershed/platform/runtime"
)

// Enabled reports whether a process should run the receivers: traces are
// on and at least one receiver is.
func Enabled(env *runtime.Env) bool {
	cfg := env.Config
	return cfg.Traces.Enabled && len(cfg.Receivers.Enabled()) > 0
}

// NewFromEnv makes the receivers of a process from the Watershed configuration.
func NewFromEnv(env *runtime.Env) *Receivers {
	cfg := env.Config
	tempo := cfg.ExternalServices.Tempo
	return New(Config{
		Receivers: cfg.Receivers,
		Pipeline: PipelineConfig{
			Partitions:      cfg.NATS.Partitions,
			MaxMessageBytes: int(cfg.NATS.MaxMessageBytes),
			MaxAttributes:   cfg.Receivers.Limits.MaxAttributes,
			Source:          env.Name,
			PublishTimeout:  10 * time.Second,
			TraceTenant:     TenantRule{Attribute: tempo.TenantFromAttribute, Mapping: tempo.TenantMapping},
		},
		Cluster:         cfg.Cluster.Name,
		NATS:            cfg.NATS,
		ShutdownTimeout: cfg.Server.ShutdownTimeout / 2,
	}, env.Bus, env.PublisherMetrics, env.Registry, env.Logger)
}
