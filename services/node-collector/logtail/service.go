package logtail

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/grafana/dskit/services"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/watershed-dev/watershed/platform/bus"
	"github.com/watershed-dev/watershed/platform/config"
	"github.com/watershed-dev/watershed/proto/watershedv1"
)

// Config is what the log tailer needs from the Watershed configuration.
type Config struct {
	Cluster string
	// Node is the node name: the node label, and which pods are ours.
	Node string
	Logs config.LogsConfig
	NATS config.NATSConfig
	// FlushTimeout bounds how long shutdown waits for publishes in flight;
	// what they carried is read again at the next start.
	FlushTimeout time.Duration
	// UnknownPodGrace is how long a pod log file waits for discovery's
	// metadata of its pod (for the job annotation) before it is tailed with
	// what its path says.
	UnknownPodGrace time.Duration
}

// Tailer is the log tailing service of a node collector.
type Tailer struct {
	services.Service

	cfg     Config
	bus     *bus.Bus
	sh      *shared
	logger  *slog.Logger
	nodePod atomic.Pointer[map[string]*watershedv1.PodMetadata]
	// firstSeen is when a pod file without metadata was first seen.
	firstSeen map[string]time.Time
	running   map[string]context.CancelFunc
	finished  chan tailEnd
	// failed holds files that could not be opened, until when they are
	// not tried again (and not logged again).
	failed map[string]time.Time
	wg     sync.WaitGroup
}

// tailEnd is a file tailer that stopped, with the error that stopped it.
type tailEnd struct {
	path string
	err  error
}

// ackFlushDelay bounds how long an acknowledged position may wait in
// memory; well inside nats.duplicateWindow.
const ackFlushDelay = time.Second

// retryFailedAfter is how long a file that could not be opened waits.
const retryFailedAfter = time.Minute

// shared is what every file tailer uses.
type shared struct {
	cfg        tailSettings
	node       string
	partitions int
	positions  *positions
	pub        *bus.Publisher
	metrics    *metrics
	logger     *slog.Logger
	bufs       sync.Pool
	flushCtx   context.Context
}

type tailSettings struct {
	PollInterval    time.Duration
	MaxLineSize     int
	MaxPartialLines int
	MaxBatchBytes   int
}

func (sh *shared) limits() limits {
	return limits{maxLineSize: sh.cfg.MaxLineSize, maxPartialLines: sh.cfg.MaxPartialLines}
}

// getBuf returns a pooled buffer of at least n bytes (length n).
func (sh *shared) getBuf(n int) []byte {
	if b, ok := sh.bufs.Get().(*[]byte); ok && cap(*b) >= n {
		return (*b)[:n]
	}
	return make([]byte, n, max(n, sh.cfg.MaxBatchBytes))
}

func (sh *shared) putBuf(b []byte) {
	if cap(b) <= 4*sh.cfg.MaxBatchBytes {
		sh.bufs.Put(&b)
	}
}

// New makes the tailer service.
func New(cfg Config, b *bus.Bus, pubMetrics *bus.PublisherMetrics, reg prometheus.Registerer, logger *slog.Logger) *Tailer {
	logger = logger.With("component", "logtail")
	m := newMetrics(reg)
	t := &Tailer{
		cfg: cfg, bus: b, logger: logger,
		firstSeen: map[string]time.Time{},
		running:   map[string]context.CancelFunc{},
		finished:  make(chan tailEnd, 16),
		failed:    map[string]time.Time{},
		sh: &shared{
			cfg: tailSettings{
				PollInterval:    cfg.Logs.Tail.PollInterval,
				MaxLineSize:     int(cfg.Logs.Tail.MaxLineSize),
				MaxPartialLines: cfg.Logs.Tail.MaxPartialLines,
				MaxBatchBytes:   int(cfg.Logs.Tail.MaxBatchBytes),
			},
			node:       cfg.Node,
			partitions: cfg.NATS.Partitions,
			pub:        bus.NewPublisher(b.JetStream(), "logtail", pubMetrics, logger),
			metrics:    m,
			logger:     logger,
		},
	}
	empty := map[string]*watershedv1.PodMetadata{}
	t.nodePod.Store(&empty)
	t.Service = services.NewBasicService(t.starting, t.run, nil)
	return t
}

func (t *Tailer) starting(ctx context.Context) error {
	pos, err := openPositions(t.cfg.Logs.Tail.PositionsDirectory, t.sh.metrics.positionWrites.Inc)
	if err != nil {
		return err
	}
	t.sh.positions = pos
	if _, err := bus.EnsureStream(ctx, t.bus.JetStream(), bus.RawStreamConfig(t.cfg.NATS)); err != nil {
		return err
	}
	t.logger.Info("tailing logs", "podLogs", t.cfg.Logs.PodLogs.Enabled, "podLogDirectory", t.cfg.Logs.PodLogs.Directory,
		"files", len(t.cfg.Logs.Files), "positions", pos.dir, "knownPositions", len(pos.paths()))
	return nil
}

// run scans for files every poll interval and runs one goroutine per file.
// At stop, no new read starts; publishes in flight may finish within the
// flush timeout, and their lines are read again next time if they do not.
func (t *Tailer) run(ctx context.Context) error {
	flushCtx, cancelFlush := context.WithCancel(context.Background())
	defer cancelFlush()
	t.sh.flushCtx = flushCtx
	if t.cfg.Logs.PodLogs.Enabled {
		kv, err := bus.EnsurePodMetadataBucket(ctx, t.bus.JetStream(), t.cfg.NATS.RawStream.Replicas)
		if err != nil {
			return err
		}
		go t.watchNodePods(ctx, kv)
	}
	tailCtx, cancelTails := context.WithCancel(ctx)
	defer cancelTails()
	if t.cfg.Logs.Journal.Enabled {
		t.wg.Go(func() { newJournalReader(t.sh, t.cfg.Logs.Journal, t.cfg.Cluster).run(tailCtx) })
	}
	t.scan(tailCtx, true)
	tick := time.NewTicker(t.cfg.Logs.Tail.PollInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			timer := time.AfterFunc(t.cfg.FlushTimeout, cancelFlush)
			defer timer.Stop()
			t.wg.Wait()
			return t.sh.positions.close()
		case end := <-t.finished:
			delete(t.running, end.path)
			if end.err != nil {
				if _, known := t.failed[end.path]; !known {
					t.logger.Warn("cannot tail file; trying again every minute", "path", end.path, "err", end.err)
				}
				t.failed[end.path] = time.Now().Add(retryFailedAfter)
			} else {
				delete(t.failed, end.path)
			}
		case <-tick.C:
			t.scan(tailCtx, false)
			// Acknowledged positions reach the disk with the next batch's
			// intent, or at the latest after ackFlushDelay: a crash before
			// that sends the last batches again under their ids, which the
			// duplicate window (minutes) still drops.
			if since := t.sh.positions.dirtySince(); !since.IsZero() && time.Since(since) >= ackFlushDelay {
				if err := t.sh.positions.sync(); err != nil {
					t.logger.Warn("positions not written", "err", err)
				}
			}
		}
	}
}

// scan starts a tailer for each wanted file that has none, and stops those
// of files no longer wanted (their positions stay). At the first scan,
// files with a position that are gone are resumed too, to drain the file
// they were renamed to or to release the position.
func (t *Tailer) scan(ctx context.Context, first bool) {
	want := t.sources()
	if first {
		for _, path := range t.sh.positions.paths() {
			if _, ok := want[path]; !ok {
				if src := t.sourceOf(path); src != nil {
					want[path] = src
				}
			}
		}
	}
	for path, cancel := range t.running {
		if _, ok := want[path]; ok {
			continue
		}
		// A file that is gone is drained and released by its tailer; one
		// that is there but no longer wanted stops (its position stays).
		if _, err := os.Stat(path); err == nil {
			cancel()
		}
	}
	now := time.Now()
	for path, src := range want {
		if _, ok := t.running[path]; ok || now.Before(t.failed[path]) {
			continue
		}
		tctx, cancel := context.WithCancel(ctx)
		t.running[path] = cancel
		t.wg.Add(1)
		t.sh.metrics.filesTailed.WithLabelValues(src.kind).Inc()
		go func() {
			defer t.wg.Done()
			defer cancel()
			err := newFileTailer(t.sh, src).run(tctx)
			t.sh.metrics.filesTailed.WithLabelValues(src.kind).Dec()
			if err != nil {
				t.sh.metrics.readErrors.WithLabelValues(src.kind).Inc()
			}
			select {
			case t.finished <- tailEnd{path, err}:
			case <-ctx.Done():
			}
		}()
	}
}

func (t *Tailer) sources() map[string]*source {
	out := fileSources(t.cfg.Logs.Files, t.cfg.Cluster)
	if t.cfg.Logs.PodLogs.Enabled {
		pods := *t.nodePod.Load()
		now := time.Now()
		asked := map[string]bool{}
		unknownOK := func(path string) bool {
			asked[path] = true
			first, ok := t.firstSeen[path]
			if !ok {
				t.firstSeen[path] = now
				return false
			}
			return now.Sub(first) >= t.cfg.UnknownPodGrace
		}
		for path, src := range podSources(t.cfg.Logs.PodLogs, t.cfg.Cluster, t.cfg.Node, pods, unknownOK) {
			out[path] = src
		}
		for path := range t.firstSeen {
			if !asked[path] {
				delete(t.firstSeen, path) // gone, or its pod is known now
			}
		}
	}
	return out
}

// sourceOf labels a path that has a position but is not wanted now (it is
// gone), from what its path says.
func (t *Tailer) sourceOf(path string) *source {
	for _, lf := range t.cfg.Logs.Files {
		if ok, _ := filepath.Match(lf.Path, path); ok {
			return fileSource(path, lf, t.cfg.Cluster)
		}
	}
	if pp, ok := parsePodPath(t.cfg.Logs.PodLogs.Directory, path); ok {
		return podSource(path, pp, (*t.nodePod.Load())[pp.uid], t.cfg.Cluster, t.cfg.Node)
	}
	return nil
}

// watchNodePods keeps discovery's list of this node's pods.
func (t *Tailer) watchNodePods(ctx context.Context, kv jetstream.KeyValue) {
	w, err := kv.Watch(ctx, bus.NodePodsKey(t.cfg.Node))
	if err != nil {
		t.logger.Error("cannot watch pod metadata; pod log files are labelled from their paths", "err", err)
		return
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-w.Updates():
			if !ok {
				return
			}
			if e == nil {
				continue // initial values done
			}
			pods := map[string]*watershedv1.PodMetadata{}
			if e.Operation() == jetstream.KeyValuePut {
				var np watershedv1.NodePods
				if err := proto.Unmarshal(e.Value(), &np); err != nil {
					t.logger.Warn("bad pod metadata", "key", e.Key(), "err", err)
					continue
				}
				for _, p := range np.Pods {
					pods[p.Uid] = p
				}
			}
			t.nodePod.Store(&pods)
		}
	}
}
