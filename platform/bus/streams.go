package bus

import (
	"context"
	"errors"
	"fmt"
	"slices"
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
	// Delivered messages fill the stream too, so refusing publishes when
	// it is full (DiscardNew) would block on data that is safe. The block
	// policy is kept by the router instead, which stops routing while the
	// undelivered part nears maxBytes (UndeliveredBytes); the stream itself
	// makes room by removing its oldest, delivered, messages.
	sc.Discard = jetstream.DiscardOld
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

// EnsureStream creates a stream, or updates it when its configuration
// differs; calling it again is harmless. Several services of one process
// ensure the same streams at start-up while others create consumers on
// them, so an unchanged stream is left alone: an update racing a consumer
// creation is a data race inside nats-server's file store.
func EnsureStream(ctx context.Context, js jetstream.JetStream, sc jetstream.StreamConfig) (jetstream.Stream, error) {
	s, err := js.Stream(ctx, sc.Name)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		s, err = js.CreateStream(ctx, sc)
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			s, err = js.Stream(ctx, sc.Name) // another service created it first
		}
	case err == nil && !sameStreamConfig(s.CachedInfo().Config, sc):
		s, err = js.UpdateStream(ctx, sc)
	}
	if err != nil {
		return nil, fmt.Errorf("ensure stream %s: %w", sc.Name, err)
	}
	return s, nil
}

// sameStreamConfig compares the settings Watershed chooses.
func sameStreamConfig(have, want jetstream.StreamConfig) bool {
	return slices.Equal(have.Subjects, want.Subjects) && have.Retention == want.Retention &&
		have.MaxAge == want.MaxAge && have.MaxBytes == want.MaxBytes && have.Replicas == want.Replicas &&
		have.Discard == want.Discard && have.Duplicates == want.Duplicates && have.Storage == want.Storage &&
		have.Description == want.Description
}

// EnsureKeyValue creates a key-value bucket, or updates it when its
// settings differ, leaving an unchanged one alone for the same reason as
// EnsureStream.
func EnsureKeyValue(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, cfg.Bucket)
	if err == nil {
		st, serr := kv.Status(ctx)
		if serr == nil && st.TTL() == cfg.TTL && st.History() == int64(max(cfg.History, 1)) {
			return kv, nil
		}
	}
	if err != nil && !errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, fmt.Errorf("key-value bucket %s: %w", cfg.Bucket, err)
	}
	kv, err = js.CreateOrUpdateKeyValue(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("ensure key-value bucket %s: %w", cfg.Bucket, err)
	}
	return kv, nil
}

// EnsureConsumer creates or updates a durable consumer on a stream.
func EnsureConsumer(ctx context.Context, s jetstream.Stream, cc jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	c, err := s.CreateOrUpdateConsumer(ctx, cc)
	if err != nil {
		return nil, fmt.Errorf("ensure consumer %s on %s: %w", cc.Durable, s.CachedInfo().Config.Name, err)
	}
	return c, nil
}

// EnsureBucket ensures a Watershed key-value bucket: file storage, the last
// value of each key only, optionally expiring keys after ttl.
func EnsureBucket(ctx context.Context, js jetstream.JetStream, name, description string, ttl time.Duration, replicas int) (jetstream.KeyValue, error) {
	return EnsureKeyValue(ctx, js, jetstream.KeyValueConfig{
		Bucket: name, Description: description, TTL: ttl, History: 1,
		Storage: jetstream.FileStorage, Replicas: replicas,
	})
}

// PartitionGroupsBucket holds the partition groups of the router and the
// writers (package partgroup): which replicas are alive and which holds
// each partition.
const PartitionGroupsBucket = "WS_PARTITION_GROUPS"

// PodMetadataBucket holds discovery's pod metadata (watershedv1.PodMetadata
// under "pod.<uid>", watershedv1.NodePods under "node.<name>").
const PodMetadataBucket = "WS_POD_METADATA"

// NodePodsKey is the key of a node's pod list in PodMetadataBucket.
func NodePodsKey(node string) string { return "node." + node }

// EnsurePodMetadataBucket creates the pod metadata bucket if it is missing.
func EnsurePodMetadataBucket(ctx context.Context, js jetstream.JetStream, replicas int) (jetstream.KeyValue, error) {
	return EnsureBucket(ctx, js, PodMetadataBucket, "Watershed pod metadata: pod.<uid> and node.<name>", 0, replicas)
}
