package lokiwriter

import (
	"log/slog"
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/watershed-dev/watershed/platform/bus"
	"github.com/watershed-dev/watershed/platform/config"
	"github.com/watershed-dev/watershed/platform/httpwriter"
	"github.com/watershed-dev/watershed/platform/runtime"
)

// UserAgent is sent with every push request.
const UserAgent = "Watershed-writer-loki/0.1"

// Protocol is Loki's push API with a snappy-compressed protobuf body.
var Protocol = httpwriter.Protocol{
	Destination:  bus.DestinationLoki,
	Headers:      map[string]string{"Content-Type": "application/x-protobuf"},
	RejectReason: rejectReason,
}

// New makes the writer of the Loki destination.
func New(nats config.NATSConfig, loki config.LokiConfig, b *bus.Bus, reg prometheus.Registerer, logger *slog.Logger) *httpwriter.Writer {
	cfg := SenderConfig(loki)
	cfg.NATS, cfg.Buffer, cfg.Batch = nats, loki.Buffer, 512
	return httpwriter.New(cfg, b, reg, logger)
}

// SenderConfig is how requests to the Loki destination are shaped and
// sent, for the writer and for `watershed replay`.
func SenderConfig(loki config.LokiConfig) httpwriter.Config {
	q := loki.Queue
	return httpwriter.Config{
		Protocol: Protocol, URL: loki.URL(), BearerToken: loki.BearerToken.String(), BasicAuth: loki.BasicAuth,
		Queue: httpwriter.Queue{
			MaxBytesPerSend: int(q.MaxBytesPerSend), BatchSendDeadline: q.BatchSendDeadline, RemoteTimeout: q.RemoteTimeout,
			MinBackoff: q.MinBackoff, MaxBackoff: q.MaxBackoff, AckWait: q.AckWait,
		},
		UserAgent: UserAgent,
	}
}

// NewFromEnv makes the writer of a process from the Watershed configuration.
func NewFromEnv(env *runtime.Env) *httpwriter.Writer {
	cfg := env.Config
	return New(cfg.NATS, cfg.ExternalServices.Loki, env.Bus, env.Registry, env.Logger)
}

// rejectReason names why Loki refused a push, from its message; "" leaves
// http_<status>.
func rejectReason(status int, body string) string {
	b := strings.ToLower(body)
	switch {
	case strings.Contains(b, "too far behind"), strings.Contains(b, "too old"), strings.Contains(b, "greater than max"):
		return "too_old"
	case strings.Contains(b, "out of order"):
		return "out_of_order"
	case strings.Contains(b, "line too long"), strings.Contains(b, "exceeds max line"):
		return "line_too_long"
	case strings.Contains(b, "stream limit"), strings.Contains(b, "maximum active stream"):
		return "stream_limit"
	case strings.Contains(b, "label"):
		return "invalid_labels"
	case status == http.StatusRequestEntityTooLarge:
		return "too_large"
	}
	return ""
}
