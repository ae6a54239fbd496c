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

// NewSender is the OTLP exporter of the configured protocol.
func NewSender(t config.TempoConfig) (httpwriter.Sender, error) {
	if t.Protocol == config.TempoProtocolOTLPHTTP {
		return newHTTPSender(t)
	}
	return newGRPCSender(t)
}

// New makes the writer of the Tempo destination.
func New(cfg Config, b *bus.Bus, reg prometheus.Registerer, logger *slog.Logger) (*httpwriter.Writer, error) {
	t := cfg.Tempo
	sender, err := NewSender(t)
	if err != nil {
		return nil, fmt.Errorf("writer-tempo: %w", err)
	}
	return httpwriter.New(httpwriter.Config{
		NATS:     cfg.NATS,
		Protocol: httpwriter.Protocol{Destination: bus.DestinationTempo},
		URL:      t.Host,
		Queue:    Queue(t, cfg.Batch),
		Buffer:   t.Buffer, UserAgent: UserAgent, Batch: 512, Sender: sender,
		// An export gathers the receivers' requests of a pull (a batch of
		// processors.batch) and goes at its end, so spacing pulls at their
		// wait (min(batch.timeout, lease/4)) costs no latency.
		PacedPulls: true,
	}, b, reg, logger), nil
}

// Queue shapes exports: batches of receivers.processors.batch, the retries
// of externalServices.tempo.queue.
func Queue(t config.TempoConfig, batch config.BatchConfig) httpwriter.Queue {
	q := t.Queue
	maxItems := batch.MaxSize
	if maxItems == 0 {
		maxItems = batch.Size
	}
	return httpwriter.Queue{
		MaxItemsPerSend: maxItems, BatchSendDeadline: batch.Timeout, RemoteTimeout: q.RemoteTimeout,
		MinBackoff: q.MinBackoff, MaxBackoff: q.MaxBackoff, AckWait: q.AckWait,
	}
}

// NewFromEnv makes the writer of a process from the Watershed configuration.
func NewFromEnv(env *runtime.Env) (*httpwriter.Writer, error) {
	cfg := env.Config
	return New(Config{NATS: cfg.NATS, Tempo: cfg.ExternalServices.Tempo, Batch: cfg.Receivers.Processors.Batch}, env.Bus, env.Registry, env.Logger)
}
