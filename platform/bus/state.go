package bus

import (
	"context"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// StateCollector exports what the bus holds: per Watershed stream its
// messages and bytes, and per consumer what is not yet delivered or not yet
// acknowledged. With the publish and delivery counters these make
// received = delivered + dropped + buffered checkable from /metrics.
type StateCollector struct {
	js jetstream.JetStream

	messages, bytes, limitBytes, firstSeqAge *prometheus.Desc
	pending, ackPending, redelivered         *prometheus.Desc
	oldestUnacked                            *prometheus.Desc
	up                                       *prometheus.Desc
}

// NewStateCollector makes the collector; register it on a registry.
func NewStateCollector(js jetstream.JetStream) *StateCollector {
	s := []string{"stream"}
	sc := []string{"stream", "consumer"}
	return &StateCollector{
		js:          js,
		messages:    prometheus.NewDesc("watershed_bus_stream_messages", "Messages held in the stream.", s, nil),
		bytes:       prometheus.NewDesc("watershed_bus_stream_bytes", "Bytes held in the stream.", s, nil),
		limitBytes:  prometheus.NewDesc("watershed_bus_stream_limit_bytes", "The stream's maxBytes.", s, nil),
		firstSeqAge: prometheus.NewDesc("watershed_bus_stream_oldest_message_age_seconds", "Age of the oldest message held in the stream.", s, nil),
		pending:     prometheus.NewDesc("watershed_bus_consumer_pending_messages", "Messages the consumer has not been delivered yet.", sc, nil),
		ackPending:  prometheus.NewDesc("watershed_bus_consumer_ack_pending_messages", "Messages delivered to the consumer and not yet acknowledged.", sc, nil),
		redelivered: prometheus.NewDesc("watershed_bus_consumer_redelivered_messages", "Messages delivered more than once and still unacknowledged.", sc, nil),
		oldestUnacked: prometheus.NewDesc("watershed_bus_consumer_oldest_unacked_age_seconds",
			"Age of the oldest message the consumer has not acknowledged (delivered or not); 0 when it is caught up.", sc, nil),
		up: prometheus.NewDesc("watershed_bus_state_up", "1 when the last read of the bus state succeeded.", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *StateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.messages, c.bytes, c.limitBytes, c.firstSeqAge, c.pending, c.ackPending, c.redelivered, c.oldestUnacked, c.up} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *StateCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ok := 1.0
	streams := c.js.ListStreams(ctx)
	for info := range streams.Info() {
		name := info.Config.Name
		if !strings.HasPrefix(name, "WS_") {
			continue
		}
		ch <- prometheus.MustNewConstMetric(c.messages, prometheus.GaugeValue, float64(info.State.Msgs), name)
		ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.GaugeValue, float64(info.State.Bytes), name)
		ch <- prometheus.MustNewConstMetric(c.limitBytes, prometheus.GaugeValue, float64(info.Config.MaxBytes), name)
		age := 0.0
		if info.State.Msgs > 0 && !info.State.FirstTime.IsZero() {
			age = time.Since(info.State.FirstTime).Seconds()
		}
		ch <- prometheus.MustNewConstMetric(c.firstSeqAge, prometheus.GaugeValue, age, name)
		if !c.collectConsumers(ctx, ch, name) {
			ok = 0
		}
	}
	if streams.Err() != nil {
		ok = 0
	}
	ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, ok)
}

func (c *StateCollector) collectConsumers(ctx context.Context, ch chan<- prometheus.Metric, stream string) bool {
	s, err := c.js.Stream(ctx, stream)
	if err != nil {
		return false
	}
	consumers := s.ListConsumers(ctx)
	for ci := range consumers.Info() {
		ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue, float64(ci.NumPending), stream, ci.Name)
		ch <- prometheus.MustNewConstMetric(c.ackPending, prometheus.GaugeValue, float64(ci.NumAckPending), stream, ci.Name)
		ch <- prometheus.MustNewConstMetric(c.redelivered, prometheus.GaugeValue, float64(ci.NumRedelivered), stream, ci.Name)
		ch <- prometheus.MustNewConstMetric(c.oldestUnacked, prometheus.GaugeValue, OldestUnackedAge(ctx, s, ci, time.Now()).Seconds(), stream, ci.Name)
	}
	return consumers.Err() == nil
}

// OldestUnackedAge is how long the oldest message a consumer has not
// acknowledged has been in the stream: the first message after its ack
// floor on its filter. 0 when it is caught up, or the message is gone.
func OldestUnackedAge(ctx context.Context, s jetstream.Stream, ci *jetstream.ConsumerInfo, now time.Time) time.Duration {
	if ci.NumPending == 0 && ci.NumAckPending == 0 {
		return 0
	}
	var opts []jetstream.GetMsgOpt
	filter := ci.Config.FilterSubject
	if filter == "" && len(ci.Config.FilterSubjects) == 1 {
		filter = ci.Config.FilterSubjects[0]
	}
	if filter != "" {
		opts = append(opts, jetstream.WithGetMsgSubject(filter))
	}
	m, err := s.GetMsg(ctx, ci.AckFloor.Stream+1, opts...)
	if err != nil {
		return 0
	}
	return max(now.Sub(m.Time), 0)
}
