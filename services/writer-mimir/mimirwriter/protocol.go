package mimirwriter

import (
	"log/slog"
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/watershed-dev/watershed/platform/bus"
	"github.com/watershed-dev/watershed/platform/config"
	"github.com/watershed-dev/watershed/platform/httpwriter"
)

// Protocol is Prometheus remote write 1.0: a snappy-compressed WriteRequest.
var Protocol = httpwriter.Protocol{
	Destination: bus.DestinationPrometheus,
	Headers: map[string]string{
		"Content-Encoding":                  "snappy",
		"Content-Type":                      "application/x-protobuf",
		"X-Prometheus-Remote-Write-Version": "0.1.0",
	},
	RejectReason: rejectReason,
}

// New makes the writer of the Prometheus destination.
func New(nats config.NATSConfig, prom config.PrometheusConfig, userAgent string, b *bus.Bus, reg prometheus.Registerer, logger *slog.Logger) *httpwriter.Writer {
	cfg := SenderConfig(prom, userAgent)
	cfg.NATS, cfg.Buffer, cfg.Batch = nats, prom.Buffer, 512
	return httpwriter.New(cfg, b, reg, logger)
}

// SenderConfig is how requests to the Prometheus destination are shaped
// and sent, for the writer and for `watershed replay`.
func SenderConfig(prom config.PrometheusConfig, userAgent string) httpwriter.Config {
	q := prom.Queue
	return httpwriter.Config{
		Protocol: Protocol, URL: prom.URL(), BearerToken: prom.BearerToken.String(), BasicAuth: prom.BasicAuth,
		Queue: httpwriter.Queue{
			MaxItemsPerSend: q.MaxSamplesPerSend, BatchSendDeadline: q.BatchSendDeadline, RemoteTimeout: q.RemoteTimeout,
			MinBackoff: q.MinBackoff, MaxBackoff: q.MaxBackoff, AckWait: q.AckWait,
		},
		UserAgent: userAgent,
	}
}

// rejectReason names why Mimir or Prometheus refused samples, from its
// message; "" leaves http_<status>.
func rejectReason(status int, body string) string {
	b := strings.ToLower(body)
	switch {
	case strings.Contains(b, "out of order"):
		return "out_of_order"
	case strings.Contains(b, "out of bounds"), strings.Contains(b, "too old"), strings.Contains(b, "too far in the past"):
		return "too_old"
	case strings.Contains(b, "too far in the future"):
		return "too_new"
	case strings.Contains(b, "duplicate sample"):
		return "duplicate_timestamp"
	case strings.Contains(b, "label"):
		return "invalid_labels"
	case strings.Contains(b, "limit"):
		return "limits"
	case status == http.StatusRequestEntityTooLarge:
		return "too_large"
	}
	return ""
}
