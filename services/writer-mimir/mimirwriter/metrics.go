package mimirwriter

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

type metrics struct {
	samplesSent     prometheus.Counter
	bytesSent       prometheus.Counter
	messagesAcked   prometheus.Counter
	samplesRejected *prometheus.CounterVec
	requests        *prometheus.CounterVec
	retries         *prometheus.CounterVec
	requestDuration prometheus.Observer
	loggedReasons   sync.Map
}

func newMetrics(reg prometheus.Registerer, dest string) *metrics {
	f := promauto.With(reg)
	cl := prometheus.Labels{"destination": dest}
	return &metrics{
		samplesSent: f.NewCounter(prometheus.CounterOpts{
			Name: "watershed_writer_samples_sent_total", ConstLabels: cl,
			Help: "Samples the backend accepted (2xx).",
		}),
		bytesSent: f.NewCounter(prometheus.CounterOpts{
			Name: "watershed_writer_sent_bytes_total", ConstLabels: cl,
			Help: "Compressed request bytes the backend accepted.",
		}),
		messagesAcked: f.NewCounter(prometheus.CounterOpts{
			Name: "watershed_writer_messages_acked_total", ConstLabels: cl,
			Help: "Bus messages acked: sent, or refused for good.",
		}),
		samplesRejected: f.NewCounterVec(prometheus.CounterOpts{
			Name: "watershed_writer_samples_rejected_total", ConstLabels: cl,
			Help: "Samples refused for good (by the backend or as unreadable) and acked, by reason.",
		}, []string{"reason"}),
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
