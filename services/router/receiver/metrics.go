package receiver

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Signal label values.
const (
	signalTraces  = "traces"
	signalMetrics = "metrics"
	signalLogs    = "logs"
)

// Protocol label values.
const (
	protoOTLPGRPC     = "otlp_grpc"
	protoOTLPHTTP     = "otlp_http"
	protoZipkin       = "zipkin"
	protoJaegerGRPC   = "jaeger_grpc"
	protoJaegerThrift = "jaeger_thrift"
)

type metrics struct {
	requests    *prometheus.CounterVec
	accepted    *prometheus.CounterVec
	refused     *prometheus.CounterVec
	lookups     *prometheus.CounterVec
	memoryLimit prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg)
	return &metrics{
		requests: f.NewCounterVec(prometheus.CounterOpts{
			Name: "watershed_receiver_requests_total",
			Help: "Requests received, by protocol, signal and result (success, or the refusal's reason).",
		}, []string{"protocol", "signal", "result"}),
		accepted: f.NewCounterVec(prometheus.CounterOpts{
			Name: "watershed_receiver_items_accepted_total",
			Help: "Spans, data points and log records stored on the bus and acknowledged to the sender.",
		}, []string{"protocol", "signal"}),
		refused: f.NewCounterVec(prometheus.CounterOpts{
			Name: "watershed_receiver_items_refused_total",
			Help: "Items refused to the sender, by reason: invalid, too_large, memory_limit (retryable), bus_unavailable (retryable). Undecodable requests count as requests only.",
		}, []string{"protocol", "signal", "reason"}),
		lookups: f.NewCounterVec(prometheus.CounterOpts{
			Name: "watershed_receiver_k8s_lookups_total",
			Help: "Resources looked up for Kubernetes attributes, by how the pod was found (pod_uid, pod_ip, pod_name, connection) or not_found.",
		}, []string{"result"}),
		memoryLimit: f.NewGauge(prometheus.GaugeOpts{
			Name: "watershed_receiver_memory_limited",
			Help: "1 while the memory limiter refuses received data.",
		}),
	}
}

// observe counts one decoded request and its items.
func (m *metrics) observe(protocol, signal string, items int, err error) {
	if err == nil {
		m.requests.WithLabelValues(protocol, signal, "success").Inc()
		m.accepted.WithLabelValues(protocol, signal).Add(float64(items))
		return
	}
	reason := reasonOf(err)
	m.requests.WithLabelValues(protocol, signal, reason).Inc()
	m.refused.WithLabelValues(protocol, signal, reason).Add(float64(items))
}

// undecodable counts a request that could not be read at all.
func (m *metrics) undecodable(protocol, signal string, err error) {
	m.requests.WithLabelValues(protocol, signal, reasonOf(err)).Inc()
}
