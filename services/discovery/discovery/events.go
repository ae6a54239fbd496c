package discovery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/go-logfmt/logfmt"
	"github.com/grafana/loki/pkg/push"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	listersv1 "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/watershed-dev/watershed/platform/bus"
	"github.com/watershed-dev/watershed/platform/config"
	"github.com/watershed-dev/watershed/platform/remotewrite"
)

// JobEvents is the job label of cluster event log lines.
const JobEvents = "integrations/kubernetes/eventhandler"

// StateBucket holds discovery's own state; eventsKey is the highest event
// resourceVersion published, so that a restarted or new leader publishes
// each event once.
const (
	StateBucket = "WS_DISCOVERY"
	eventsKey   = "events.resourceVersion"
)

// eventPublisher turns Kubernetes Events into Loki log lines on the bus.
type eventPublisher struct {
	cfg     config.ClusterEventsConfig
	cluster string
	lister  listersv1.EventLister
	state   jetstream.KeyValue
	pub     *bus.Publisher
	parts   int
	lastRV  uint64
	loaded  bool
	metrics *metrics
}

// publishNew publishes, in resourceVersion order, the events newer than the
// last one published, and records how far it got.
func (e *eventPublisher) publishNew(ctx context.Context) error {
	if !e.loaded {
		entry, err := e.state.Get(ctx, eventsKey)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
		case err != nil:
			return fmt.Errorf("read %s: %w", eventsKey, err)
		default:
			e.lastRV, _ = strconv.ParseUint(string(entry.Value()), 10, 64)
		}
		e.loaded = true
	}
	all, err := e.lister.List(labels.Everything())
	if err != nil {
		return err
	}
	type pending struct {
		rv uint64
		ev *corev1.Event
	}
	var todo []pending
	for _, ev := range all {
		rv, err := strconv.ParseUint(ev.ResourceVersion, 10, 64)
		if err != nil || rv <= e.lastRV || !e.wanted(ev) {
			continue
		}
		todo = append(todo, pending{rv, ev})
	}
	sort.Slice(todo, func(i, j int) bool { return todo[i].rv < todo[j].rv })
	for _, p := range todo {
		msg, err := e.message(p.ev)
		if err != nil {
			e.metrics.eventsDropped.WithLabelValues("encode_failed").Inc()
			continue
		}
		if _, err := e.pub.Publish(ctx, msg); err != nil {
			return err
		}
		e.metrics.eventsPublished.Inc()
		e.lastRV = p.rv
		if _, err := e.state.Put(ctx, eventsKey, []byte(strconv.FormatUint(p.rv, 10))); err != nil {
			return fmt.Errorf("record %s: %w", eventsKey, err)
		}
	}
	return nil
}

func (e *eventPublisher) wanted(ev *corev1.Event) bool {
	if len(e.cfg.Namespaces) > 0 && !slices.Contains(e.cfg.Namespaces, ev.Namespace) {
		return false
	}
	return len(e.cfg.Reasons) == 0 || slices.Contains(e.cfg.Reasons, ev.Reason)
}

// message is one event as a Loki PushRequest on the raw stream.
func (e *eventPublisher) message(ev *corev1.Event) (*nats.Msg, error) {
	line, err := eventLine(ev, e.cfg.LogFormat)
	if err != nil {
		return nil, err
	}
	stream := fmt.Sprintf(`{cluster=%q, job=%q, namespace=%q}`, e.cluster, JobEvents, ev.Namespace)
	req := push.PushRequest{Streams: []push.Stream{{Labels: stream, Entries: []push.Entry{{Timestamp: eventTime(ev), Line: line}}}}}
	body, err := req.Marshal()
	if err != nil {
		return nil, err
	}
	msg := nats.NewMsg(bus.RawSubject(bus.SignalLogs, bus.Partition(stream, e.parts)))
	msg.Data = remotewrite.Compress(nil, body)
	msg.Header.Set(bus.HeaderSignal, bus.SignalLogs)
	msg.Header.Set(bus.HeaderEncoding, bus.EncodingLokiPushSnappy)
	msg.Header.Set(bus.HeaderSource, "discovery")
	msg.Header.Set(bus.HeaderPartitionKey, stream)
	msg.Header.Set(bus.HeaderCount, "1")
	msg.Header.Set(bus.HeaderTime, strconv.FormatInt(time.Now().UnixMilli(), 10))
	// The same event version is stored once, whichever leader sends it.
	msg.Header.Set(jetstream.MsgIDHeader, "k8s-event-"+string(ev.UID)+"-"+ev.ResourceVersion)
	return msg, nil
}

func eventTime(ev *corev1.Event) time.Time {
	switch {
	case !ev.LastTimestamp.IsZero():
		return ev.LastTimestamp.Time
	case !ev.EventTime.IsZero():
		return ev.EventTime.Time
	case !ev.FirstTimestamp.IsZero():
		return ev.FirstTimestamp.Time
	}
	return ev.CreationTimestamp.Time
}

// eventLine renders an event as Grafana's Kubernetes event handler does.
func eventLine(ev *corev1.Event, format string) (string, error) {
	fields := []struct{ k, v string }{
		{"type", ev.Type}, {"reason", ev.Reason}, {"kind", ev.InvolvedObject.Kind}, {"name", ev.InvolvedObject.Name},
		{"objectAPIversion", ev.InvolvedObject.APIVersion}, {"objectRV", ev.InvolvedObject.ResourceVersion},
		{"eventRV", ev.ResourceVersion}, {"reportingcontroller", ev.ReportingController},
		{"sourcecomponent", ev.Source.Component}, {"sourcehost", ev.Source.Host}, {"count", countOf(ev)},
		{"msg", strings.TrimSpace(ev.Message)},
	}
	if format == "json" {
		m := make(map[string]string, len(fields))
		for _, f := range fields {
			if f.v != "" {
				m[f.k] = f.v
			}
		}
		b, err := json.Marshal(m)
		return string(b), err
	}
	var sb strings.Builder
	enc := logfmt.NewEncoder(&sb)
	for _, f := range fields {
		if f.v != "" {
			if err := enc.EncodeKeyval(f.k, f.v); err != nil {
				return "", err
			}
		}
	}
	return sb.String(), nil
}

func countOf(ev *corev1.Event) string {
	if ev.Count > 1 {
		return strconv.Itoa(int(ev.Count))
	}
	return ""
}

// setUpEvents watches Events and prepares their publisher.
func (d *Discovery) setUpEvents(ctx context.Context) error {
	state, err := bus.EnsureBucket(ctx, d.bus.JetStream(), StateBucket, "Watershed discovery state", 0, d.cfg.NATS.RawStream.Replicas)
	if err != nil {
		return err
	}
	if _, err := bus.EnsureStream(ctx, d.bus.JetStream(), bus.RawStreamConfig(d.cfg.NATS)); err != nil {
		return err
	}
	inf := d.factory.Core().V1().Events()
	if _, err := inf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { d.triggerEvents() }, UpdateFunc: func(any, any) { d.triggerEvents() },
	}); err != nil {
		return fmt.Errorf("events informer: %w", err)
	}
	d.events = &eventPublisher{
		cfg: d.cfg.Logs.ClusterEvents, cluster: d.cfg.Cluster, lister: inf.Lister(), state: state,
		pub: bus.NewPublisher(d.bus.JetStream(), "discovery", d.pubMetrics, d.logger), parts: d.cfg.NATS.Partitions,
		metrics: d.metrics,
	}
	return nil
}

func (d *Discovery) triggerEvents() {
	select {
	case d.eventsChanged <- struct{}{}:
	default:
	}
}

// eventsLoop publishes new events while this replica leads.
func (d *Discovery) eventsLoop(ctx context.Context) {
	tick := time.NewTicker(5 * time.Second) // also picks up a new leadership
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.eventsChanged:
		case <-tick.C:
		}
		if !d.leading.Load() {
			d.events.loaded = false // read the position again when leading
			continue
		}
		if err := d.events.publishNew(ctx); err != nil && ctx.Err() == nil {
			d.logger.Error("publishing cluster events failed; retrying", "err", err)
		}
	}
}
