package httpwriter

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

type metrics struct {
	itemsSent       prometheus.Counter
	bytesSent       prometheus.Counter
	messagesAcked   prometheus.Counter
	itemsRejected   *prometheus.CounterVec
	itemsResentHeld prometheus.Counter
	itemsResent     prometheus.Counter
	messagesDropped *prometheus.CounterVec
	lostDeliveries  prometheus.Counter
	requests        *prometheus.CounterVec
	retries         *prometheus.CounterVec
	requestDuration prometheus.Observer
	loggedReasons   sync.Map
}

func newMetrics(reg prometheus.Registerer, dest string) *metrics {
	f := promauto.With(reg)
	cl := prometheus.Labels{"destination": dest}
	return &metrics{
		itemsSent: f.NewCounter(prometheus.CounterOpts{
			Name: "watershed_writer_items_sent_total", ConstLabels: cl,
			Help: "Items (samples, log lines, spans) the backend accepted (2xx).",
		}),
		bytesSent: f.NewCounter(prometheus.CounterOpts{
			Name: "watershed_writer_sent_bytes_total", ConstLabels: cl,
			Help: "Compressed request bytes the backend accepted.",
		}),
		messagesAcked: f.NewCounter(prometheus.CounterOpts{
			Name: "watershed_writer_messages_acked_total", ConstLabels: cl,
			Help: "Bus messages acked: sent, or refused for good.",
		}),
		itemsResent: f.NewCounter(prometheus.CounterOpts{
			Name: "watershed_writer_items_resent_total", ConstLabels: cl,
			Help: "Items sent again because a previous owner of their partition stopped without acknowledging them: each may be a duplicate at the backend (at least once).",
		}),
		itemsResentHeld: f.NewCounter(prometheus.CounterOpts{
			Name: "watershed_writer_items_resent_already_held_total", ConstLabels: cl,
			Help: "Items sent again after a previous owner of their partition stopped mid-request, which the backend already held (it refused them as out of order or duplicate): at-least-once duplicates, not losses.",
		}),
		itemsRejected: f.NewCounterVec(prometheus.CounterOpts{
			Name: "watershed_writer_items_rejected_total", ConstLabels: cl,
			Help: "Items refused for good (by the backend or as unreadable) and acked, by reason.",
		}, []string{"reason"}),
		messagesDropped: f.NewCounterVec(prometheus.CounterOpts{
			Name: "watershed_writer_messages_dropped_total", ConstLabels: cl,
			Help: "Messages the buffer removed before this writer delivered them, found by gaps in Ws-Partition-Seq: max_bytes (the stream was full and dropOldest made room) or max_age (older than the buffer's maxAge).",
		}, []string{"reason"}),
		lostDeliveries: f.NewCounter(prometheus.CounterOpts{
			Name: "watershed_writer_lost_deliveries_total", ConstLabels: cl,
			Help: "Messages the bus delivered that never reached this writer (lost with a broken connection), found by gaps in the consumer's delivery sequence; each time the partition was read again from its last acknowledged message, so none was skipped.",
		}),
		requests: f.NewCounterVec(prometheus.CounterOpts{
			Name: "watershed_writer_requests_total", ConstLabels: cl,
			Help: "Remote-write requests, by result: success, retryable, throttled, permanent.",
		}, []string{"result"}),
		retries: f.NewCounterVec(prometheus.CounterOpts{
			Name: "watershed_writer_retries_total", ConstLabels: cl,
			Help: "Requests sent again, by error class and reason.",
		}, []string{"class", "reason"}),
		requestDuration: f.NewHistogram(prometheus.HistogramOpts{
			Name: "watershed_writer_request_duration_seconds", ConstLabels: cl,
			Help:    "Duration of remote-write requests.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 8),
		}),
	}
}
