package collector

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	dto "github.com/prometheus/client_model/go"
)

// Dropped-sample reasons.
const (
	reasonPublishFailed = "publish_failed"
	reasonEncodeFailed  = "encode_failed"
	reasonRolledBack    = "scrape_rolled_back"
	// reasonStopped: a scrape committed after the collector stopped its
	// scrape loops. Only end-of-run staleness markers should ever get
	// there (see sink.close); real samples would be counted here.
	reasonStopped = "collector_stopped"
)

type metrics struct {
	samplesAppended   prometheus.Counter
	staleMarkers      prometheus.Counter
	staleSkipped      prometheus.Counter
	samplesPublished  prometheus.Counter
	samplesDropped    *prometheus.CounterVec
	messages          prometheus.Counter
	scrapesPerMessage prometheus.Histogram
	publishDuration   prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg)
	m := &metrics{
		samplesAppended: f.NewCounter(prometheus.CounterOpts{
			Name: "watershed_collector_samples_scraped_total",
			Help: "Samples the scrapes produced, including up, scrape_* and staleness markers.",
		}),
		staleMarkers: f.NewCounter(prometheus.CounterOpts{
			Name: "watershed_collector_stale_markers_total",
			Help: "Staleness markers among the scraped samples.",
		}),
		staleSkipped: f.NewCounter(prometheus.CounterOpts{
			Name: "watershed_collector_stale_markers_skipped_total",
			Help: "End-of-run staleness markers not written because the collector was stopping: like Prometheus at shutdown, it leaves the series to the collector that takes its targets over.",
		}),
		samplesPublished: f.NewCounter(prometheus.CounterOpts{
			Name: "watershed_collector_samples_published_total",
			Help: "Samples JetStream acknowledged on the raw stream.",
		}),
		samplesDropped: f.NewCounterVec(prometheus.CounterOpts{
			Name: "watershed_collector_samples_dropped_total",
			Help: "Samples not published, by reason.",
		}, []string{"reason"}),
		messages: f.NewCounter(prometheus.CounterOpts{
			Name: "watershed_collector_messages_published_total",
			Help: "Bus messages published: the scrapes of a partition finished within metrics.batchLinger fill them in chunks up to nats.maxMessageBytes, so a scrape may span two; a scrape over maxSamplesPerSend goes alone, split at nats.maxMessageBytes.",
		}),
		scrapesPerMessage: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "watershed_collector_scrapes_per_message",
			Help:    "Scrapes (whole, or the part of one that spans two messages) in one published bus message.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 8),
		}),
		publishDuration: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "watershed_collector_publish_duration_seconds",
			Help:    "Time from the end of a scrape to JetStream's ack of all its messages, batchLinger included.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 8),
		}),
	}
	for _, r := range []string{reasonPublishFailed, reasonEncodeFailed, reasonRolledBack, reasonStopped} {
		m.samplesDropped.WithLabelValues(r)
	}
	return m
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return 0
	}
	return m.GetCounter().GetValue()
}

func counterVecSum(v *prometheus.CounterVec) float64 {
	ch := make(chan prometheus.Metric, 16)
	go func() { v.Collect(ch); close(ch) }()
	sum := 0.0
	for m := range ch {
		var d dto.Metric
		if err := m.Write(&d); err == nil {
			sum += d.GetCounter().GetValue()
		}
	}
	return sum
}
