package collector

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/watershed-dev/watershed/proto/watershedv1"
)

// HeartbeatBucket is the key-value bucket of collector heartbeats, keyed by
// collector name.
const HeartbeatBucket = "WS_COLLECTORS"

// heartbeatInterval is how often a collector announces itself; an entry
// older than heartbeatTTL is gone, and so is the collector.
const (
	heartbeatInterval = 10 * time.Second
	heartbeatTTL      = 3 * heartbeatInterval
)

// Version is the collector's build version, set at link time.
var Version = "dev"

func ensureHeartbeatBucket(ctx context.Context, js jetstream.JetStream, replicas int) (jetstream.KeyValue, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      HeartbeatBucket,
		Description: "Watershed node-collector heartbeats",
		TTL:         heartbeatTTL,
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("ensure key-value bucket %s: %w", HeartbeatBucket, err)
	}
	return kv, nil
}

// heartbeat puts this collector's current state in the bucket.
func (c *Collector) heartbeat(ctx context.Context) error {
	targets := 0
	for _, ts := range c.manager.TargetsActive() {
		targets += len(ts)
	}
	hb := &watershedv1.CollectorHeartbeat{
		Name:             c.cfg.Name,
		Version:          Version,
		StartedUnixMs:    c.started.UnixMilli(),
		SentUnixMs:       time.Now().UnixMilli(),
		Targets:          uint32(targets),
		SamplesPublished: uint64(counterValue(c.metrics.samplesPublished)),
		SamplesDropped:   uint64(counterVecSum(c.metrics.samplesDropped)),
	}
	b, err := proto.Marshal(hb)
	if err != nil {
		return fmt.Errorf("encode heartbeat: %w", err)
	}
	if _, err := c.heartbeats.Put(ctx, c.cfg.Name, b); err != nil {
		return fmt.Errorf("put heartbeat: %w", err)
	}
	return nil
}
