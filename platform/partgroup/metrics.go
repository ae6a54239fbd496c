package partgroup

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

type metrics struct {
	members  prometheus.Gauge
	owned    prometheus.Gauge
	acquired prometheus.Counter
	released *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, group string) *metrics {
	f := promauto.With(prometheus.WrapRegistererWith(prometheus.Labels{"group": group}, reg))
	m := &metrics{
		members: f.NewGauge(prometheus.GaugeOpts{
			Name: "watershed_partition_group_members",
			Help: "Live replicas of the group, as this replica sees them.",
		}),
		owned: f.NewGauge(prometheus.GaugeOpts{
			Name: "watershed_partition_group_partitions_owned",
			Help: "Partitions this replica holds.",
		}),
		acquired: f.NewCounter(prometheus.CounterOpts{
			Name: "watershed_partition_group_acquisitions_total",
			Help: "Partitions this replica took.",
		}),
		released: f.NewCounterVec(prometheus.CounterOpts{
			Name: "watershed_partition_group_releases_total",
			Help: "Partitions this replica gave up, by reason: rebalance, shutdown, lease_lost, work_failed.",
		}, []string{"reason"}),
	}
	for _, r := range []string{reasonRebalance, reasonShutdown, reasonLeaseLost, reasonWorkFailed} {
		m.released.WithLabelValues(r)
	}
	return m
}
