package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/grafana/dskit/backoff"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// ErrNoMsgID is returned for a message without Nats-Msg-Id: without it a
// retried publish could be stored twice.
var ErrNoMsgID = errors.New("message has no " + jetstream.MsgIDHeader + " header")

// PublisherMetrics counts what a publisher did, by component.
type PublisherMetrics struct {
	messages *prometheus.CounterVec
	bytes    *prometheus.CounterVec
	retries  *prometheus.CounterVec
	failures *prometheus.CounterVec
	dupes    *prometheus.CounterVec
}

// NewPublisherMetrics registers the publisher metrics.
func NewPublisherMetrics(reg prometheus.Registerer) *PublisherMetrics {
	f := promauto.With(reg)
	return &PublisherMetrics{
		messages: f.NewCounterVec(prometheus.CounterOpts{
			Name: "watershed_bus_published_messages_total",
			Help: "Messages JetStream acknowledged, by component and stream.",
		}, []string{"component", "stream"}),
		bytes: f.NewCounterVec(prometheus.CounterOpts{
			Name: "watershed_bus_published_bytes_total",
			Help: "Payload bytes JetStream acknowledged, by component and stream.",
		}, []string{"component", "stream"}),
		retries: f.NewCounterVec(prometheus.CounterOpts{
			Name: "watershed_bus_publish_retries_total",
			Help: "Publishes sent again after a failure, by component and reason.",
		}, []string{"component", "reason"}),
		failures: f.NewCounterVec(prometheus.CounterOpts{
			Name: "watershed_bus_publish_failures_total",
			Help: "Publishes given up (context ended before an ack), by component.",
		}, []string{"component"}),
		dupes: f.NewCounterVec(prometheus.CounterOpts{
			Name: "watershed_bus_publish_duplicates_total",
			Help: "Publishes JetStream recognised by Nats-Msg-Id as already stored, by component.",
		}, []string{"component"}),
	}
}

// Publisher publishes asynchronously with a bounded number in flight (the
// connection's nats.maxPending) and retries until acknowledged.
type Publisher struct {
	js        jetstream.JetStream
	component string
	backoff   backoff.Config
	metrics   *PublisherMetrics
	logger    *slog.Logger
}

// NewPublisher makes a publisher for one component.
func NewPublisher(js jetstream.JetStream, component string, m *PublisherMetrics, logger *slog.Logger) *Publisher {
	return &Publisher{
		js:        js,
		component: component,
		backoff:   backoff.Config{MinBackoff: 50 * time.Millisecond, MaxBackoff: 2 * time.Second},
		metrics:   m,
		logger:    logger,
	}
}

// Publish stores msg in its stream and returns the ack. Failures are retried
// with backoff and the same Nats-Msg-Id, so a publish that was stored but
// whose ack was lost is stored once. A full stream with the block policy
// keeps refusing, which makes Publish wait: that is the backpressure. It
// gives up only when ctx ends.
func (p *Publisher) Publish(ctx context.Context, msg *nats.Msg) (*jetstream.PubAck, error) {
	if msg.Header.Get(jetstream.MsgIDHeader) == "" {
		return nil, ErrNoMsgID
	}
	bo := backoff.New(ctx, p.backoff)
	for {
		ack, err := p.publishOnce(ctx, msg)
		if err == nil {
			if ack.Duplicate {
				p.metrics.dupes.WithLabelValues(p.component).Inc()
			}
			p.metrics.messages.WithLabelValues(p.component, ack.Stream).Inc()
			p.metrics.bytes.WithLabelValues(p.component, ack.Stream).Add(float64(len(msg.Data)))
			return ack, nil
		}
		if ctx.Err() != nil {
			p.metrics.failures.WithLabelValues(p.component).Inc()
			return nil, fmt.Errorf("publish %s: %w (last error: %v)", msg.Subject, ctx.Err(), err)
		}
		reason := publishFailureReason(err)
		p.metrics.retries.WithLabelValues(p.component, reason).Inc()
		if bo.NumRetries() == 0 || bo.NumRetries()%20 == 0 {
			p.logger.Warn("publish failed, retrying", "subject", msg.Subject, "reason", reason, "err", err)
		}
		bo.Wait()
	}
}

func (p *Publisher) publishOnce(ctx context.Context, msg *nats.Msg) (*jetstream.PubAck, error) {
	msg.Reply = "" // set by a previous attempt
	fut, err := p.js.PublishMsgAsync(msg, jetstream.WithStallWait(time.Second))
	if err != nil {
		return nil, err
	}
	select {
	case ack := <-fut.Ok():
		return ack, nil
	case err := <-fut.Err():
		return nil, err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// publishFailureReason is a bounded label value for a publish error.
func publishFailureReason(err error) string {
	var apiErr *jetstream.APIError
	switch {
	case errors.Is(err, jetstream.ErrTooManyStalledMsgs):
		return "too_many_in_flight"
	case errors.Is(err, jetstream.ErrAsyncPublishTimeout), errors.Is(err, nats.ErrTimeout):
		return "ack_timeout"
	case errors.Is(err, nats.ErrNoResponders), errors.Is(err, jetstream.ErrNoStreamResponse):
		return "no_stream"
	case errors.As(err, &apiErr):
		msg := strings.ToLower(apiErr.Description)
		if strings.Contains(msg, "maximum") {
			return "stream_full"
		}
		return "api_error"
	case errors.Is(err, nats.ErrConnectionClosed), errors.Is(err, nats.ErrDisconnected), errors.Is(err, nats.ErrConnectionReconnecting):
		return "disconnected"
	}
	return "other"
}
