package receiver

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"

	"github.com/watershed-dev/watershed/platform/bus"
	"github.com/watershed-dev/watershed/platform/lokipush"
)

// lokiIndexAttributes are the resource attributes that become stream
// labels (dots turned into underscores), as Loki's own OTLP endpoint does
// by default; every other attribute goes into structured metadata.
var lokiIndexAttributes = []string{
	"cloud.availability_zone", "cloud.region", "container.name", "deployment.environment", "deployment.environment.name",
	"k8s.cluster.name", "k8s.container.name", "k8s.cronjob.name", "k8s.daemonset.name", "k8s.deployment.name",
	"k8s.job.name", "k8s.namespace.name", "k8s.pod.name", "k8s.replicaset.name", "k8s.statefulset.name",
	"service.instance.id", "service.name", "service.namespace",
}

// Logs translates a request's log records into a Loki PushRequest, as
// Loki's native OTLP ingestion maps them (index labels from the resource,
// the rest as structured metadata, the body as the line), and publishes
// it on the raw stream, where the router's log processing and tenant
// rules apply to it like to tailed pod logs.
func (p *Pipeline) Logs(ctx context.Context, src Source, ld plog.Logs) error {
	records := ld.LogRecordCount()
	err := p.otlpLogs(ctx, src, ld)
	p.metrics.observe(src.Protocol, signalLogs, records, err)
	return err
}

func (p *Pipeline) otlpLogs(ctx context.Context, src Source, ld plog.Logs) error {
	if err := p.admit(); err != nil {
		return err
	}
	if err := checkLogAttributes(ld, p.cfg.MaxAttributes); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, p.cfg.PublishTimeout)
	defer cancel()
	rls := ld.ResourceLogs()
	for i := 0; i < rls.Len(); i++ {
		rl := rls.At(i)
		p.k8s.Enrich(rl.Resource().Attributes(), src.PeerIP)
		labels, resMeta := lokiLabels(rl.Resource().Attributes())
		// One stream per resource: the partition follows its labels, so a
		// stream's lines stay in order, as for tailed files.
		g := group{partition: bus.Partition(labels, p.cfg.Partitions)}
		var (
			stream lokiStreamBuilder
			count  int
		)
		flush := func() error {
			if stream.s.Len() == 0 {
				return nil
			}
			raw := lokipush.AppendStream(nil, labels, &stream.s)
			n := stream.s.Len()
			stream.s.Reset()
			count += n
			return p.publish(ctx, bus.SignalLogs, bus.EncodingLokiPushSnappy, g, n, raw)
		}
		sls := rl.ScopeLogs()
		for j := 0; j < sls.Len(); j++ {
			recs := sls.At(j).LogRecords()
			for k := 0; k < recs.Len(); k++ {
				stream.append(recs.At(k), resMeta)
				if stream.s.Size() >= p.cfg.MaxMessageBytes {
					if err := flush(); err != nil {
						return err
					}
				}
			}
		}
		if err := flush(); err != nil {
			return err
		}
	}
	return nil
}

// lokiLabels is the stream label set of a resource, in Loki's
// `{name="value", ...}` form, and the resource attributes left for
// structured metadata.
func lokiLabels(attrs pcommon.Map) (string, []lokipush.Pair) {
	var names []string
	values := map[string]string{}
	var meta []lokipush.Pair
	attrs.Range(func(k string, v pcommon.Value) bool {
		name := strings.ReplaceAll(k, ".", "_")
		if slices.Contains(lokiIndexAttributes, k) {
			names = append(names, name)
			values[name] = v.AsString()
		} else {
			meta = append(meta, lokipush.Pair{Name: name, Value: v.AsString()})
		}
		return true
	})
	if len(names) == 0 {
		// Loki refuses a stream without labels.
		names, values["service_name"] = append(names, "service_name"), "unknown_service"
	}
	slices.Sort(names)
	var b strings.Builder
	b.WriteByte('{')
	for i, n := range names {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(n)
		b.WriteByte('=')
		b.WriteString(strconv.Quote(values[n]))
	}
	b.WriteByte('}')
	return b.String(), meta
}

// lokiStreamBuilder turns log records into entries of one stream.
type lokiStreamBuilder struct {
	s    lokipush.Stream
	meta []lokipush.Pair
}

func (l *lokiStreamBuilder) append(r plog.LogRecord, resMeta []lokipush.Pair) {
	ts := r.Timestamp().AsTime()
	if r.Timestamp() == 0 {
		ts = r.ObservedTimestamp().AsTime()
	}
	if ts.UnixNano() <= 0 {
		ts = time.Now()
	}
	l.meta = append(l.meta[:0], resMeta...)
	r.Attributes().Range(func(k string, v pcommon.Value) bool {
		l.meta = append(l.meta, lokipush.Pair{Name: strings.ReplaceAll(k, ".", "_"), Value: v.AsString()})
		return true
	})
	if !r.TraceID().IsEmpty() {
		l.meta = append(l.meta, lokipush.Pair{Name: "trace_id", Value: r.TraceID().String()})
	}
	if !r.SpanID().IsEmpty() {
		l.meta = append(l.meta, lokipush.Pair{Name: "span_id", Value: r.SpanID().String()})
	}
	if sev := r.SeverityText(); sev != "" {
		l.meta = append(l.meta, lokipush.Pair{Name: "severity_text", Value: sev})
	} else if r.SeverityNumber() != plog.SeverityNumberUnspecified {
		l.meta = append(l.meta, lokipush.Pair{Name: "severity_text", Value: r.SeverityNumber().String()})
	}
	l.s.Append(ts, []byte(r.Body().AsString()), l.meta)
}

// checkLogAttributes refuses a request with a resource or record that
// carries more than limit attributes.
func checkLogAttributes(ld plog.Logs, limit int) error {
	rls := ld.ResourceLogs()
	for i := 0; i < rls.Len(); i++ {
		if err := checkAttrs(rls.At(i).Resource().Attributes(), limit, "resource", i, -1); err != nil {
			return err
		}
		sls := rls.At(i).ScopeLogs()
		for j := 0; j < sls.Len(); j++ {
			recs := sls.At(j).LogRecords()
			for k := 0; k < recs.Len(); k++ {
				if n := recs.At(k).Attributes().Len(); n > limit {
					return invalidf("log record %d of resource %d has %d attributes, more than receivers.limits.maxAttributes (%d)", k, i, n, limit)
				}
			}
		}
	}
	return nil
}
