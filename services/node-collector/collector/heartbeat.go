package collector

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/prometheus/model/labels"
	"google.golang.org/protobuf/proto"

	"github.com/watershed-dev/watershed/platform/bus"
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

// EnsureHeartbeatBucket creates the heartbeat bucket if it is missing.
func EnsureHeartbeatBucket(ctx context.Context, js jetstream.JetStream, replicas int) (jetstream.KeyValue, error) {
	return bus.EnsureBucket(ctx, js, HeartbeatBucket, "Watershed node-collector heartbeats", heartbeatTTL, replicas)
}

// heartbeat puts this collector's current state in the bucket.
func (c *Collector) heartbeat(ctx context.Context) error {
	var health []*watershedv1.TargetHealth
	lb := labels.NewBuilder(labels.EmptyLabels())
	for pool, ts := range c.manager.TargetsActive() {
		for _, t := range ts {
			th := &watershedv1.TargetHealth{
				Id:                   t.DiscoveredLabels(lb).Get(targetIDLabel),
				Job:                  t.GetValue("job"),
				Url:                  t.String(),
				Health:               string(t.Health()),
				LastScrapeUnixMs:     t.LastScrape().UnixMilli(),
				LastScrapeDurationMs: t.LastScrapeDuration().Milliseconds(),
			}
			if th.Id == "" {
				th.Id = pool + "|" + th.Url
			}
			if err := t.LastError(); err != nil {
				th.LastError = err.Error()
			}
			health = append(health, th)
		}
	}
	hb := &watershedv1.CollectorHeartbeat{
		Name:             c.cfg.Name,
		Version:          Version,
		StartedUnixMs:    c.started.UnixMilli(),
		SentUnixMs:       time.Now().UnixMilli(),
		Targets:          uint32(len(health)),
		AssignmentEpoch:  c.epoch.Load(),
		TargetsHealth:    health,
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
