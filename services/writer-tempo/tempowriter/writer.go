package tempowriter

import (
	"fmt"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/watershed-dev/watershed/platform/bus"
	"github.com/watershed-dev/watershed/platform/config"
	"github.com/watershed-dev/watershed/platform/httpwriter"
	"github.com/watershed-dev/watershed/platform/runtime"
)

// UserAgent is sent with every export.
const UserAgent = "Watershed-writer-tempo/0.1"

// Config is what writer-tempo needs from the Watershed configuration.
type Config struct {
	NATS  config.NATSConfig
	Tempo config.TempoConfig
	Batch config.BatchConfig
}

// New makes the writer of the Tempo destination.
func New(cfg Config, b *bus.Bus, reg prometheus.Registerer, logger *slog.Logger) (*httpwriter.Writer, error) {
	t := cfg.Tempo
	var (
		sender httpwriter.Sender
		err    error
	)
	switch t.Protocol {
	case config.TempoProtocolOTLPHTTP:
		sender, err = newHTTPSender(t)
	default:
		sender, err = newGRPCSender(t)
	}
	if err != nil {
		return nil, fmt.Errorf("writer-tempo: %w", err)
	}
	q := t.Queue
	maxItems := cfg.Batch.MaxSize
	if maxItems == 0 {
		maxItems = cfg.Batch.Size
	}
	return httpwriter.New(httpwriter.Config{
		NATS:     cfg.NATS,
		Protocol: httpwriter.Protocol{Destination: bus.DestinationTempo},
		URL:      t.Host,
		Queue: httpwriter.Queue{
			MaxItemsPerSend: maxItems, BatchSendDeadline: cfg.Batch.Timeout, RemoteTimeout: q.RemoteTimeout,
			MinBackoff: q.MinBackoff, MaxBackoff: q.MaxBackoff, AckWait: q.AckWait,
		},
		Buffer: t.Buffer, UserAgent: UserAgent, Batch: 512, Sender: sender,
	}, b, reg, logger), nil
}

// NewFromEnv makes the writer of a process from the Watershed configuration.
func NewFromEnv(env *runtime.Env) (*httpwriter.Writer, error) {
	cfg := env.Config
	return New(Config{NATS: cfg.NATS, Tempo: cfg.ExternalServices.Tempo, Batch: cfg.Receivers.Processors.Batch}, env.Bus, env.Registry, env.Logger)
}
