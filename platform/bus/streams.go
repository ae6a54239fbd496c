package bus

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/watershed-dev/watershed/platform/config"
)

// RawStreamConfig is the JetStream configuration of the raw work queue.
func RawStreamConfig(cfg config.NATSConfig) jetstream.StreamConfig {
	sc := streamConfig(RawStream, RawSubjects(), cfg.RawStream, cfg.DuplicateWindow)
	// A work queue: a message the router has acked is gone, so the raw
	// stream only ever holds what is still to be routed.
	sc.Retention = jetstream.WorkQueuePolicy
	sc.Description = "Watershed raw telemetry from collectors and receivers, routed by the router"
	return sc
}

// DestStreamConfig is the JetStream configuration of a destination's stream.
func DestStreamConfig(dest string, retention config.StreamConfig, dupWindow time.Duration) jetstream.StreamConfig {
	sc := streamConfig(DestStream(dest), DestSubjects(dest), retention, dupWindow)
	// Limits retention: acked messages stay until maxAge or maxBytes, so a
	// window can be replayed.
	sc.Retention = jetstream.LimitsPolicy
	sc.Description = "Watershed buffer of destination " + dest
	return sc
}

func streamConfig(name, subjects string, r config.StreamConfig, dupWindow time.Duration) jetstream.StreamConfig {
	discard := jetstream.DiscardOld
	if r.Discard == config.DiscardBlock {
		discard = jetstream.DiscardNew
	}
	return jetstream.StreamConfig{
		Name:       name,
		Subjects:   []string{subjects},
		Storage:    jetstream.FileStorage,
		MaxAge:     r.MaxAge,
		MaxBytes:   int64(r.MaxBytes),
		Replicas:   r.Replicas,
		Discard:    discard,
		Duplicates: dupWindow,
	}
}

// EnsureStream creates or updates a stream; calling it again is harmless.
func EnsureStream(ctx context.Context, js jetstream.JetStream, sc jetstream.StreamConfig) (jetstream.Stream, error) {
	s, err := js.CreateOrUpdateStream(ctx, sc)
	if err != nil {
		return nil, fmt.Errorf("ensure stream %s: %w", sc.Name, err)
	}
	return s, nil
}

// EnsureConsumer creates or updates a durable consumer on a stream.
func EnsureConsumer(ctx context.Context, s jetstream.Stream, cc jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	c, err := s.CreateOrUpdateConsumer(ctx, cc)
	if err != nil {
		return nil, fmt.Errorf("ensure consumer %s on %s: %w", cc.Durable, s.CachedInfo().Config.Name, err)
	}
	return c, nil
}
