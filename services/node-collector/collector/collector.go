package collector

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/grafana/dskit/services"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/discovery/targetgroup"
	"github.com/prometheus/prometheus/scrape"

	"github.com/watershed-dev/watershed/platform/bus"
	"github.com/watershed-dev/watershed/platform/config"
	"github.com/watershed-dev/watershed/proto/watershedv1"
)

// Config is what the collector needs from the Watershed configuration.
type Config struct {
	Cluster string
	// Name identifies this collector on the bus (the node name in a cluster).
	Name    string
	Metrics config.MetricsConfig
	NATS    config.NATSConfig
	// PublishTimeout bounds how long one scrape may wait for the bus before
	// its samples are counted as dropped.
	PublishTimeout time.Duration
	// JoinSamples is the writer's maxSamplesPerSend: scrapes are cut in
	// chunks of an eighth of it, where the writer may cut a message into
	// requests, and a scrape of more goes alone.
	JoinSamples int
	// FlushTimeout bounds how long shutdown waits for scrapes in flight.
	FlushTimeout time.Duration
	// ServiceAccount is presented to assigned targets that ask for it.
	ServiceAccount ServiceAccountCredentials
}

// Collector scrapes targets and publishes each scrape to the bus.
type Collector struct {
	services.Service

	cfg     Config
	bus     *bus.Bus
	reg     prometheus.Registerer
	metrics *metrics
	pubm    *bus.PublisherMetrics
	logger  *slog.Logger

	manager     *scrape.Manager
	sink        *sink
	cancelSink  context.CancelFunc
	tsets       chan map[string][]*targetgroup.Group
	runDone     chan error
	heartbeats  jetstream.KeyValue
	assignments jetstream.KeyValue
	started     time.Time
	static      scrapePlan // metrics.staticTargets
	applyMu     sync.Mutex // one plan change at a time
	pools       map[string]*assignedPool
	latest      *watershedv1.CollectorAssignment // applied last
	heldSince   map[string]time.Time             // moved targets waiting for their previous owner
	epoch       atomic.Uint64                    // of the assignment applied last
}

// New makes the collector service.
func New(cfg Config, b *bus.Bus, pubMetrics *bus.PublisherMetrics, reg prometheus.Registerer, logger *slog.Logger) *Collector {
	c := &Collector{
		cfg:     cfg,
		bus:     b,
		reg:     reg,
		metrics: newMetrics(reg),
		pubm:    pubMetrics,
		logger:  logger.With("component", "node-collector"),
		tsets:   make(chan map[string][]*targetgroup.Group, 1),
		runDone: make(chan error, 1),
	}
	c.Service = services.NewBasicService(c.starting, c.running, c.stopping)
	return c
}

func (c *Collector) starting(ctx context.Context) error {
	c.started = time.Now()
	if _, err := bus.EnsureStream(ctx, c.bus.JetStream(), bus.RawStreamConfig(c.cfg.NATS)); err != nil {
		return err
	}
	kv, err := EnsureHeartbeatBucket(ctx, c.bus.JetStream(), c.cfg.NATS.RawStream.Replicas)
	if err != nil {
		return err
	}
	c.heartbeats = kv
	if c.assignments, err = EnsureAssignmentBucket(ctx, c.bus.JetStream(), c.cfg.NATS.RawStream.Replicas); err != nil {
		return err
	}
	c.static = staticPlan(c.cfg.Metrics, c.cfg.Cluster)
	promCfg, err := c.static.render(c.cfg.Metrics)
	if err != nil {
		return err
	}
	sinkCtx, cancel := context.WithCancel(context.Background())
	c.cancelSink = cancel
	c.sink = newSink(sinkCtx, sinkConfig{
		partitions:      c.cfg.NATS.Partitions,
		maxMessageBytes: int(c.cfg.NATS.MaxMessageBytes),
		source:          c.cfg.Name,
		publishTimeout:  c.cfg.PublishTimeout,
		linger:          c.cfg.Metrics.BatchLinger,
		joinSamples:     c.cfg.JoinSamples,
	}, bus.NewPublisher(c.bus.JetStream(), "node-collector", c.pubm, c.logger), c.metrics, c.logger)

	mgr, err := scrape.NewManager(&scrape.Options{
		PassMetadataInContext:    true, // puts the target in the appender's context
		DiscoveryReloadInterval:  model.Duration(250 * time.Millisecond),
		DiscoveryReloadOnStartup: true,
	}, c.logger, nil, nil, c.sink, c.reg)
	if err != nil {
		return fmt.Errorf("scrape manager: %w", err)
	}
	if err := mgr.ApplyConfig(promCfg); err != nil {
		return fmt.Errorf("scrape config: %w", err)
	}
	c.manager = mgr
	go func() { c.runDone <- mgr.Run(c.tsets) }()
	c.tsets <- c.static.groups
	c.logger.Info("scraping", "staticJobs", len(c.static.groups))
	return nil
}

func (c *Collector) running(ctx context.Context) error {
	beat := time.NewTicker(heartbeatInterval)
	defer beat.Stop()
	check := time.NewTicker(healthCheckInterval)
	defer check.Stop()
	health := newTargetHealth()
	c.sendHeartbeat(ctx)
	watchErr := make(chan error, 1)
	go func() { watchErr <- c.watchAssignment(ctx) }()
	for {
		select {
		case <-ctx.Done():
			<-watchErr
			return nil
		case err := <-watchErr:
			return err
		case err := <-c.runDone:
			return fmt.Errorf("scrape manager stopped: %w", err)
		case <-beat.C:
			c.sendHeartbeat(ctx)
		case <-check.C:
			if health.check(c) {
				c.sendHeartbeat(ctx)
			}
		}
	}
}

func (c *Collector) sendHeartbeat(ctx context.Context) {
	if err := c.heartbeat(ctx); err != nil && ctx.Err() == nil {
		c.logger.Warn("heartbeat failed", "err", err)
	}
}

// stopping stops the scrape loops and closes the sink; a scrape being
// published may finish within the flush timeout, after which its publish
// is cancelled and its samples are counted as dropped. Once it returns,
// the collector's counters are final: nothing is published after it.
func (c *Collector) stopping(error) error {
	if c.manager == nil {
		return nil
	}
	timer := time.AfterFunc(c.cfg.FlushTimeout, c.cancelSink)
	defer timer.Stop()
	c.manager.Stop()
	c.sink.close()
	c.cancelSink()
	return nil
}
