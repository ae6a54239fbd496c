package receiver

import (
	"time"

	"github.com/watershed-dev/watershed/platform/runtime"
)

// Enabled reports whether a process should run the receivers: at least
// one receiver is on, and a signal it can take.
func Enabled(env *runtime.Env) bool {
	s := signals(env)
	return len(env.Config.Receivers.Enabled()) > 0 && (s.Traces || s.Metrics || s.Logs)
}

func signals(env *runtime.Env) Signals {
	cfg := env.Config
	return Signals{Traces: cfg.Traces.Enabled, Metrics: cfg.Metrics.Enabled, Logs: cfg.Logs.Enabled}
}

// NewFromEnv makes the receivers of a process from the Watershed
// configuration; direct is the router of the process (nil: none).
func NewFromEnv(env *runtime.Env, direct DirectRouter) *Receivers {
	cfg := env.Config
	tempo := cfg.ExternalServices.Tempo
	return New(Config{
		Receivers: cfg.Receivers,
		Signals:   signals(env),
		Pipeline: PipelineConfig{
			Partitions:      cfg.NATS.Partitions,
			MaxMessageBytes: int(cfg.NATS.MaxMessageBytes),
			MaxAttributes:   cfg.Receivers.Limits.MaxAttributes,
			Source:          env.Name,
			PublishTimeout:  10 * time.Second,
			TraceTenant:     TenantRule{Attribute: tempo.TenantFromAttribute, Mapping: tempo.TenantMapping},
			Cluster:         cfg.Cluster.Name,
			Direct:          direct,
		},
		Cluster:         cfg.Cluster.Name,
		NATS:            cfg.NATS,
		ShutdownTimeout: cfg.Server.ShutdownTimeout / 2,
	}, env.Bus, env.PublisherMetrics, env.Registry, env.Logger)
}
