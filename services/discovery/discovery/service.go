package discovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/grafana/dskit/services"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/watershed-dev/watershed/platform/bus"
	"github.com/watershed-dev/watershed/platform/config"
	"github.com/watershed-dev/watershed/services/node-collector/collector"
)

// Config is what discovery needs.
type Config struct {
	Cluster string
	Metrics config.MetricsConfig
	Logs    config.LogsConfig
	NATS    config.NATSConfig
	// Identity names this replica (its pod name).
	Identity string
	// LeaseNamespace and LeaseName locate the leader-election Lease.
	LeaseNamespace, LeaseName string
	// Debounce is how long discovery waits after a change for more.
	Debounce time.Duration
	// CRDRecheck is how often a missing ServiceMonitor or PodMonitor CRD
	// is looked for again.
	CRDRecheck time.Duration
}

// Discovery is the discovery service.
type Discovery struct {
	services.Service

	cfg     Config
	client  kubernetes.Interface // nil in local mode
	bus     *bus.Bus
	metrics *metrics
	logger  *slog.Logger

	factory       informers.SharedInformerFactory
	assignments   jetstream.KeyValue
	heartbeats    jetstream.KeyValue
	changed       chan struct{}
	leading       atomic.Bool
	writer        *assignmentWriter
	metaWriter    *metadataWriter
	monitors      *monitorInformers // nil without a dynamic client
	events        *eventPublisher   // nil unless cluster events are on
	pubMetrics    *bus.PublisherMetrics
	eventsChanged chan struct{}

	mu       sync.Mutex
	lastPlan *plan // for the status API
}

// plan is the outcome of one computation.
type plan struct {
	at         time.Time
	targets    []Target
	problems   []Problem
	assignment Assignment
}

// Clients are the Kubernetes API clients; all nil in local mode.
type Clients struct {
	Kube kubernetes.Interface
	// Dynamic reads the Prometheus Operator's custom resources.
	Dynamic dynamic.Interface
}

// Deps are what discovery works with.
type Deps struct {
	Clients          Clients // empty in local mode
	Bus              *bus.Bus
	PublisherMetrics *bus.PublisherMetrics
}

// New makes the service.
func New(cfg Config, deps Deps, reg prometheus.Registerer, logger *slog.Logger) *Discovery {
	clients := deps.Clients
	d := &Discovery{
		cfg: cfg, client: clients.Kube, bus: deps.Bus, pubMetrics: deps.PublisherMetrics, metrics: newMetrics(reg),
		logger:        logger.With("component", "discovery"),
		changed:       make(chan struct{}, 1),
		eventsChanged: make(chan struct{}, 1),
	}
	if clients.Kube != nil && clients.Dynamic != nil {
		d.monitors = newMonitorInformers(d, clients.Dynamic)
	}
	d.Service = services.NewBasicService(d.starting, d.running, nil)
	return d
}

func (d *Discovery) starting(ctx context.Context) error {
	js := d.bus.JetStream()
	var err error
	if d.assignments, err = collector.EnsureAssignmentBucket(ctx, js, d.cfg.NATS.RawStream.Replicas); err != nil {
		return err
	}
	if d.heartbeats, err = collector.EnsureHeartbeatBucket(ctx, js, d.cfg.NATS.RawStream.Replicas); err != nil {
		return err
	}
	d.writer = &assignmentWriter{kv: d.assignments, identity: d.cfg.Identity, logger: d.logger}
	metaKV, err := bus.EnsurePodMetadataBucket(ctx, js, d.cfg.NATS.RawStream.Replicas)
	if err != nil {
		return err
	}
	d.metaWriter = &metadataWriter{kv: metaKV}
	if _, err := labels.Parse(d.cfg.Metrics.AutoDiscover.LabelSelector); err != nil {
		return fmt.Errorf("metrics.autoDiscover.labelSelector: %w", err)
	}
	if d.client == nil {
		d.logger.Info("no Kubernetes credentials: local mode, serving the status of static targets only")
		return nil
	}
	d.factory = informers.NewSharedInformerFactory(d.client, 0)
	handler := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { d.trigger() },
		UpdateFunc: func(any, any) { d.trigger() },
		DeleteFunc: func(any) { d.trigger() },
	}
	if d.cfg.Logs.Enabled && d.cfg.Logs.ClusterEvents.Enabled {
		if err := d.setUpEvents(ctx); err != nil {
			return err
		}
	}
	for _, inf := range []cache.SharedIndexInformer{
		d.factory.Core().V1().Nodes().Informer(),
		d.factory.Core().V1().Pods().Informer(),
		d.factory.Core().V1().Services().Informer(),
		d.factory.Core().V1().Namespaces().Informer(),
		d.factory.Discovery().V1().EndpointSlices().Informer(),
	} {
		if _, err := inf.AddEventHandler(handler); err != nil {
			return fmt.Errorf("informer handler: %w", err)
		}
	}
	d.factory.Start(ctx.Done())
	for typ, ok := range d.factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("informer cache of %v did not sync", typ)
		}
	}
	return nil
}

// trigger asks for a recomputation; many changes in a row make one.
func (d *Discovery) trigger() {
	select {
	case d.changed <- struct{}{}:
	default:
	}
}

func (d *Discovery) running(ctx context.Context) error {
	if d.client == nil {
		<-ctx.Done()
		return nil
	}
	go d.watchCollectors(ctx)
	if d.monitors != nil {
		go d.monitors.run(ctx)
	}
	if d.events != nil {
		go d.eventsLoop(ctx)
	}
	leaderDone := make(chan error, 1)
	go func() { leaderDone <- d.runLeaderElection(ctx) }()
	d.trigger()
	for {
		select {
		case <-ctx.Done():
			<-leaderDone
			return nil
		case err := <-leaderDone:
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("leader election: %w", err)
		case <-d.changed:
		}
		// Let a burst of changes settle, but stay well within 2 s.
		select {
		case <-ctx.Done():
			continue
		case <-time.After(d.cfg.Debounce):
		}
		if err := d.reconcile(ctx); err != nil && ctx.Err() == nil {
			d.logger.Error("reconcile failed", "err", err)
			d.metrics.reconcileErrors.Inc()
		}
	}
}

// watchCollectors recomputes whenever a collector appears or goes away.
func (d *Discovery) watchCollectors(ctx context.Context) {
	w, err := d.heartbeats.WatchAll(ctx, jetstream.MetaOnly())
	if err != nil {
		d.logger.Error("cannot watch collector heartbeats", "err", err)
		return
	}
	defer func() { _ = w.Stop() }()
	known := map[string]bool{}
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-w.Updates():
			if !ok {
				return
			}
			if e == nil {
				d.trigger()
				continue
			}
			alive := e.Operation() == jetstream.KeyValuePut
			if known[e.Key()] != alive {
				known[e.Key()] = alive
				d.trigger()
			}
		}
	}
}

// liveCollectors are the collectors with a heartbeat in the bucket (its
// TTL removes the silent ones).
func (d *Discovery) liveCollectors(ctx context.Context) ([]string, error) {
	lister, err := d.heartbeats.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("list collectors: %w", err)
	}
	var out []string
	for k := range lister.Keys() {
		out = append(out, k)
	}
	return out, nil
}

// reconcile computes targets and, as leader, writes what changed.
func (d *Discovery) reconcile(ctx context.Context) error {
	start := time.Now()
	objs, err := d.objects()
	if err != nil {
		return err
	}
	var crdProblems []Problem
	if d.monitors != nil {
		crdProblems = d.monitors.list(&objs)
	}
	targets, problems := Compute(&d.cfg.Metrics, objs)
	problems = append(problems, crdProblems...)
	live, err := d.liveCollectors(ctx)
	if err != nil && !errors.Is(err, jetstream.ErrNoKeysFound) {
		return err
	}
	p := &plan{at: time.Now(), targets: targets, problems: problems, assignment: Assign(targets, live)}
	d.mu.Lock()
	d.lastPlan = p
	d.mu.Unlock()
	d.metrics.observe(p)
	if !d.leading.Load() {
		d.metrics.reconciles.WithLabelValues("follower").Inc()
		return nil
	}
	written, err := d.writer.write(ctx, p.assignment)
	d.metrics.assignmentWrites.Add(float64(written))
	if err != nil {
		return err
	}
	written, err = d.metaWriter.write(ctx, objs.Pods)
	d.metrics.metadataWrites.Add(float64(written))
	if err != nil {
		return err
	}
	d.metrics.reconcileDuration.Observe(time.Since(start).Seconds())
	d.metrics.reconciles.WithLabelValues("leader").Inc()
	return nil
}

func (d *Discovery) objects() (Objects, error) {
	var o Objects
	var err error
	f := d.factory
	if o.Nodes, err = f.Core().V1().Nodes().Lister().List(labels.Everything()); err != nil {
		return o, err
	}
	if o.Pods, err = f.Core().V1().Pods().Lister().List(labels.Everything()); err != nil {
		return o, err
	}
	if o.Services, err = f.Core().V1().Services().Lister().List(labels.Everything()); err != nil {
		return o, err
	}
	if o.Namespaces, err = f.Core().V1().Namespaces().Lister().List(labels.Everything()); err != nil {
		return o, err
	}
	o.EndpointSlices, err = f.Discovery().V1().EndpointSlices().Lister().List(labels.Everything())
	return o, err
}

// identity is this replica's name: POD_NAME in a cluster, else the host.
func identity() string {
	if n := os.Getenv("POD_NAME"); n != "" {
		return n
	}
	h, _ := os.Hostname()
	return h
}
