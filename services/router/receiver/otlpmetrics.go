package receiver

import (
	"context"
	"fmt"

	"github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/storage/remote/otlptranslator/prometheusremotewrite"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"

	"github.com/watershed-dev/watershed/platform/bus"
	"github.com/watershed-dev/watershed/platform/remotewrite"
)

// promotedAttributes become labels of every series of a resource (the
// rest stays in target_info), so that OTLP metrics can be filtered by the
// same Kubernetes facts as scraped ones.
var promotedAttributes = []string{
	"k8s.cluster.name", "k8s.namespace.name", "k8s.pod.name", "k8s.node.name", "k8s.container.name",
	"k8s.deployment.name", "k8s.statefulset.name", "k8s.daemonset.name", "k8s.job.name", "k8s.cronjob.name",
}

// metricSettings is how OTLP metrics become Prometheus series: Prometheus's
// defaults for its own OTLP endpoint (suffixes added, names escaped to the
// legacy character set, target_info kept), plus the cluster label that
// every scraped series carries.
func metricSettings(cluster string) prometheusremotewrite.Settings {
	return prometheusremotewrite.Settings{
		AddMetricSuffixes:         true,
		ExternalLabels:            map[string]string{"cluster": cluster},
		PromoteResourceAttributes: prometheusremotewrite.NewPromoteResourceAttributes(config.OTLPConfig{PromoteResourceAttributes: promotedAttributes}),
	}
}

// Metrics translates a request's data points into remote-write 1.0 with
// Prometheus's own OTLP translator (the code behind Prometheus's and
// Mimir's /otlp/v1/metrics), and publishes them on the raw stream: the
// Prometheus destination then carries one encoding only, joins without
// decoding, keeps series in order and replays the same way for scraped
// and pushed metrics, and works with any remote-write backend.
func (p *Pipeline) Metrics(ctx context.Context, src Source, md pmetric.Metrics) error {
	points := md.DataPointCount()
	err := p.otlpMetrics(ctx, src, md)
	p.metrics.observe(src.Protocol, signalMetrics, points, err)
	return err
}

func (p *Pipeline) otlpMetrics(ctx context.Context, src Source, md pmetric.Metrics) error {
	if err := p.admit(); err != nil {
		return err
	}
	if err := checkMetricAttributes(md, p.cfg.MaxAttributes); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, p.cfg.PublishTimeout)
	defer cancel()
	rms := md.ResourceMetrics()
	for i := 0; i < rms.Len(); i++ {
		attrs := rms.At(i).Resource().Attributes()
		p.k8s.Enrich(attrs, src.PeerIP)
		// One resource at a time: its series share job and instance,
		// hence a partition, which keeps each series in order.
		one := pmetric.NewMetrics()
		rms.At(i).CopyTo(one.ResourceMetrics().AppendEmpty())
		app := &rwAppender{max: p.cfg.MaxMessageBytes}
		conv := prometheusremotewrite.NewPrometheusConverter(app)
		if _, err := conv.FromMetrics(ctx, one, p.metricSettings); err != nil {
			return invalidf("cannot translate the metrics of resource %d: %v", i, err)
		}
		app.cut()
		g := group{partition: bus.Partition(resourceKey(attrs), p.cfg.Partitions)}
		for _, c := range app.chunks {
			if err := p.publish(ctx, bus.SignalMetrics, bus.EncodingPRW1Snappy, g, c.samples, c.raw); err != nil {
				return err
			}
		}
	}
	return nil
}

// rwAppender is the translator's storage: series go straight into
// remote-write wire format, cut into bus-sized chunks.
type rwAppender struct {
	b      remotewrite.Builder
	max    int
	chunks []rwChunk
}

type rwChunk struct {
	raw     []byte
	samples int
}

func (a *rwAppender) Append(ref storage.SeriesRef, ls labels.Labels, _, t int64, v float64, h *histogram.Histogram, fh *histogram.FloatHistogram, opts storage.AppendV2Options) (storage.SeriesRef, error) {
	if h != nil || fh != nil {
		if err := a.b.AppendHistogram(ls, t, h, fh); err != nil {
			return 0, fmt.Errorf("encode histogram %s: %w", ls.Get(labels.MetricName), err)
		}
	} else {
		a.b.AppendSample(ls, t, v, opts.Exemplars)
	}
	if a.b.Len() >= a.max {
		a.cut()
	}
	if ref == 0 {
		ref = storage.SeriesRef(ls.Hash() | 1)
	}
	return ref, nil
}

func (a *rwAppender) cut() {
	if a.b.Series() == 0 {
		return
	}
	a.chunks = append(a.chunks, rwChunk{raw: append([]byte(nil), a.b.Bytes()...), samples: a.b.Samples()})
	a.b.Reset()
}

// Commit and Rollback complete storage.AppenderV2; the pipeline publishes
// the chunks itself.
func (a *rwAppender) Commit() error   { return nil }
func (a *rwAppender) Rollback() error { a.chunks = nil; return nil }

// checkMetricAttributes refuses a request with a resource or data point
// that carries more than limit attributes.
func checkMetricAttributes(md pmetric.Metrics, limit int) error {
	rms := md.ResourceMetrics()
	for i := 0; i < rms.Len(); i++ {
		if err := checkAttrs(rms.At(i).Resource().Attributes(), limit, "resource", i, -1); err != nil {
			return err
		}
		sms := rms.At(i).ScopeMetrics()
		for j := 0; j < sms.Len(); j++ {
			ms := sms.At(j).Metrics()
			for k := 0; k < ms.Len(); k++ {
				if n := maxPointAttributes(ms.At(k)); n > limit {
					return invalidf("a data point of metric %q has %d attributes, more than receivers.limits.maxAttributes (%d)", ms.At(k).Name(), n, limit)
				}
			}
		}
	}
	return nil
}

func maxPointAttributes(m pmetric.Metric) int {
	n := 0
	each := func(a pcommon.Map) { n = max(n, a.Len()) }
	switch m.Type() {
	case pmetric.MetricTypeGauge:
		for i := 0; i < m.Gauge().DataPoints().Len(); i++ {
			each(m.Gauge().DataPoints().At(i).Attributes())
		}
	case pmetric.MetricTypeSum:
		for i := 0; i < m.Sum().DataPoints().Len(); i++ {
			each(m.Sum().DataPoints().At(i).Attributes())
		}
	case pmetric.MetricTypeHistogram:
		for i := 0; i < m.Histogram().DataPoints().Len(); i++ {
			each(m.Histogram().DataPoints().At(i).Attributes())
		}
	case pmetric.MetricTypeExponentialHistogram:
		for i := 0; i < m.ExponentialHistogram().DataPoints().Len(); i++ {
			each(m.ExponentialHistogram().DataPoints().At(i).Attributes())
		}
	case pmetric.MetricTypeSummary:
		for i := 0; i < m.Summary().DataPoints().Len(); i++ {
			each(m.Summary().DataPoints().At(i).Attributes())
		}
	}
	return n
}
