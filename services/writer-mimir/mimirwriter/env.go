package mimirwriter

import (
	"github.com/watershed-dev/watershed/platform/httpwriter"
	"github.com/watershed-dev/watershed/platform/runtime"
)

// UserAgent is sent with every remote-write request.
const UserAgent = "Watershed-writer-mimir/0.1"

// NewFromEnv makes the writer of a process from the Watershed configuration.
func NewFromEnv(env *runtime.Env) *httpwriter.Writer {
	cfg := env.Config
	return New(cfg.NATS, cfg.ExternalServices.Prometheus, UserAgent, env.Bus, env.Registry, env.Logger)
}
