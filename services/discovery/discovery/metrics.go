package discovery

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

type metrics struct {
	targets           *prometheus.GaugeVec
	unassigned        prometheus.Gauge
	problems          prometheus.Gauge
	collectors        prometheus.Gauge
	leader            prometheus.Gauge
	assignmentWrites  prometheus.Counter
	metadataWrites    prometheus.Counter
	eventsPublished   prometheus.Counter
	eventsDropped     *prometheus.CounterVec
	reconcileErrors   prometheus.Counter
	reconciles        *prometheus.CounterVec
	reconcileDuration prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg)
	return &metrics{
		targets: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "watershed_discovery_targets", Help: "Targets discovered, by job.",
		}, []string{"job"}),
		unassigned: f.NewGauge(prometheus.GaugeOpts{
			Name: "watershed_discovery_unassigned_targets", Help: "Targets no live collector can take (see /api/v0/web/targets).",
		}),
		problems: f.NewGauge(prometheus.GaugeOpts{
			Name: "watershed_discovery_skipped_objects", Help: "Objects skipped for a wrong annotation or a missing port (see /api/v0/web/targets).",
		}),
		collectors: f.NewGauge(prometheus.GaugeOpts{
			Name: "watershed_discovery_live_collectors", Help: "Collectors with a fresh heartbeat.",
		}),
		leader: f.NewGauge(prometheus.GaugeOpts{
			Name: "watershed_discovery_leader", Help: "1 while this replica leads and writes assignments.",
		}),
		assignmentWrites: f.NewCounter(prometheus.CounterOpts{
			Name: "watershed_discovery_assignment_writes_total", Help: "Collector assignments written because they changed.",
		}),
		metadataWrites: f.NewCounter(prometheus.CounterOpts{
			Name: "watershed_discovery_metadata_writes_total", Help: "Pod metadata keys written or deleted because they changed.",
		}),
		eventsPublished: f.NewCounter(prometheus.CounterOpts{
			Name: "watershed_discovery_events_published_total", Help: "Kubernetes Events published as log lines.",
		}),
		eventsDropped: f.NewCounterVec(prometheus.CounterOpts{
			Name: "watershed_discovery_events_dropped_total", Help: "Kubernetes Events not published, by reason.",
		}, []string{"reason"}),
		reconciles: f.NewCounterVec(prometheus.CounterOpts{
			Name: "watershed_discovery_reconciles_total", Help: "Reconciliations completed, as leader (computed and written) or follower (computed).",
		}, []string{"role"}),
		reconcileErrors: f.NewCounter(prometheus.CounterOpts{
			Name: "watershed_discovery_reconcile_errors_total", Help: "Reconciliations that failed.",
		}),
		reconcileDuration: f.NewHistogram(prometheus.HistogramOpts{
			Name: "watershed_discovery_reconcile_duration_seconds", Help: "Time to compute and write assignments.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 8),
		}),
	}
}

// observe exports the figures of a plan; jobs that vanished are deleted.
func (m *metrics) observe(p *plan) {
	counts := map[string]int{}
	for _, t := range p.targets {
		counts[t.Job]++
	}
	m.targets.Reset()
	for job, n := range counts {
		m.targets.WithLabelValues(job).Set(float64(n))
	}
	m.unassigned.Set(float64(len(p.assignment.Unassigned)))
	m.problems.Set(float64(len(p.problems)))
	m.collectors.Set(float64(len(p.assignment.ByCollector)))
}
