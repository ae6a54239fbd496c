package mimirwriter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/grafana/dskit/backoff"
	"github.com/grafana/dskit/services"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/watershed-dev/watershed/platform/bus"
	"github.com/watershed-dev/watershed/platform/config"
	"github.com/watershed-dev/watershed/platform/remotewrite"
)

// Config is what the writer needs from the Watershed configuration.
type Config struct {
	NATS       config.NATSConfig
	Prometheus config.PrometheusConfig
	UserAgent  string
	// Batch is how many messages a partition fetches, and may hold
	// unacknowledged, at once.
	Batch int
}

// Writer is the writer-mimir service.
type Writer struct {
	services.Service

	cfg     Config
	bus     *bus.Bus
	client  *client
	metrics *metrics
	logger  *slog.Logger
	loops   []*bus.FetchLoop
}

// New makes the writer service.
func New(cfg Config, b *bus.Bus, reg prometheus.Registerer, logger *slog.Logger) *Writer {
	w := &Writer{
		cfg:     cfg,
		bus:     b,
		client:  newClient(cfg.Prometheus, cfg.UserAgent),
		metrics: newMetrics(reg, bus.DestinationPrometheus),
		logger:  logger.With("component", "writer-mimir"),
	}
	w.Service = services.NewBasicService(w.starting, w.running, nil)
	return w
}

func (w *Writer) starting(ctx context.Context) error {
	const dest = bus.DestinationPrometheus
	js := w.bus.JetStream()
	stream, err := bus.EnsureStream(ctx, js, bus.DestStreamConfig(dest, w.cfg.Prometheus.Buffer, w.cfg.NATS.DuplicateWindow))
	if err != nil {
		return err
	}
	for p := 0; p < w.cfg.NATS.Partitions; p++ {
		cc := bus.ReaderConsumerConfig(fmt.Sprintf("writer-%s-p%d", dest, p), bus.DestSubject(dest, p), w.cfg.Batch, w.cfg.Prometheus.Queue.AckWait)
		// One reader sends a partition in order, so acking the last message
		// of a request acks the request.
		cc.AckPolicy = jetstream.AckAllPolicy
		cons, err := bus.EnsureReaderConsumer(ctx, stream, cc, w.logger)
		if err != nil {
			return err
		}
		pw := &partitionWriter{w: w, partition: p}
		w.loops = append(w.loops, &bus.FetchLoop{
			Consumer: cons,
			Batch:    w.cfg.Batch,
			MaxWait:  w.cfg.Prometheus.Queue.BatchSendDeadline,
			Handle:   pw.add,
			Flush:    pw.flush,
			Logger:   w.logger.With("partition", p),
		})
	}
	return nil
}

func (w *Writer) running(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, l := range w.loops {
		wg.Go(func() { _ = l.Run(ctx) })
	}
	wg.Wait()
	return nil
}

// partitionWriter joins one partition's messages into requests and sends
// them one at a time.
type partitionWriter struct {
	w         *Writer
	partition int
	pending   []jetstream.Msg
	samples   int
	tenant    string
	joiner    remotewrite.Joiner
}

// add takes the next message of the partition, sending what is pending
// first when this message would not fit the same request.
func (p *partitionWriter) add(ctx context.Context, msg jetstream.Msg) error {
	h := msg.Headers()
	count, err := bus.Count(h)
	if err != nil {
		p.reject(msg, 0, "bad_header", err)
		return nil
	}
	tenant := h.Get(bus.HeaderTenant)
	limit := p.w.cfg.Prometheus.Queue.MaxSamplesPerSend
	if len(p.pending) > 0 && (tenant != p.tenant || p.samples+count > limit) {
		if err := p.flush(ctx); err != nil {
			return err
		}
	}
	p.pending = append(p.pending, msg)
	p.samples += count
	p.tenant = tenant
	if p.samples >= limit {
		return p.flush(ctx)
	}
	return nil
}

// flush sends what is pending and acks it. It returns an error only when
// ctx ended first; the messages then stay unacked.
func (p *partitionWriter) flush(ctx context.Context) error {
	if len(p.pending) == 0 {
		return nil
	}
	msgs, samples := p.pending, p.samples
	p.joiner.Reset()
	kept := msgs[:0:0]
	for _, m := range msgs {
		if err := p.joiner.Add(m.Data()); err != nil {
			n, _ := bus.Count(m.Headers())
			samples -= n
			p.reject(m, n, "corrupt_payload", err)
			continue
		}
		kept = append(kept, m)
	}
	if len(kept) > 0 {
		if err := p.send(ctx, kept, samples); err != nil {
			return err
		}
	}
	p.pending, p.samples = p.pending[:0], 0
	return nil
}

// send delivers one request, retrying until the backend takes it or
// refuses it for good, then acks its messages.
func (p *partitionWriter) send(ctx context.Context, msgs []jetstream.Msg, samples int) error {
	w := p.w
	body := p.joiner.Compressed()
	q := w.cfg.Prometheus.Queue
	bo := backoff.New(ctx, backoff.Config{MinBackoff: q.MinBackoff, MaxBackoff: q.MaxBackoff})
	lastProgress := time.Now()
	for {
		start := time.Now()
		err := w.client.send(ctx, p.tenant, body)
		w.metrics.requestDuration.Observe(time.Since(start).Seconds())
		var se *SendError
		switch {
		case err == nil:
			w.metrics.requests.WithLabelValues("success").Inc()
			w.metrics.samplesSent.Add(float64(samples))
			w.metrics.bytesSent.Add(float64(len(body)))
			p.ackAll(msgs)
			return nil
		case errors.As(err, &se) && se.Class == Permanent:
			w.metrics.requests.WithLabelValues(se.Class.String()).Inc()
			w.metrics.samplesRejected.WithLabelValues(se.Reason).Add(float64(samples))
			w.logRejectOnce(se)
			p.ackAll(msgs)
			return nil
		case errors.As(err, &se):
			w.metrics.requests.WithLabelValues(se.Class.String()).Inc()
			w.metrics.retries.WithLabelValues(se.Class.String(), se.Reason).Inc()
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if bo.NumRetries()%10 == 0 {
			w.logger.Warn("remote write failed, retrying", "partition", p.partition, "samples", samples, "attempt", bo.NumRetries()+1, "err", err)
		}
		if time.Since(lastProgress) > q.AckWait/3 {
			// Keep the bus from redelivering what this writer still holds.
			for _, m := range msgs {
				_ = m.InProgress()
			}
			lastProgress = time.Now()
		}
		if !waitRetry(ctx, bo, se) {
			return ctx.Err()
		}
	}
}

// waitRetry waits for the next attempt: the backend's Retry-After when it
// asked for a longer delay than the backoff. False when ctx ended.
func waitRetry(ctx context.Context, bo *backoff.Backoff, se *SendError) bool {
	if se != nil && se.RetryAfter > 0 {
		delay := max(se.RetryAfter, bo.NextDelay())
		select {
		case <-ctx.Done():
			return false
		case <-time.After(delay):
			return true
		}
	}
	bo.Wait()
	return bo.Ongoing()
}

// ackAll acks a request's messages: with AckAll, its last message.
func (p *partitionWriter) ackAll(msgs []jetstream.Msg) {
	if err := msgs[len(msgs)-1].Ack(); err != nil {
		// A lost ack means a redelivery; the backend takes the same
		// samples again as duplicates, which it tolerates.
		p.w.logger.Warn("ack failed", "err", err)
	}
	p.w.metrics.messagesAcked.Add(float64(len(msgs)))
}

// reject acks a message the writer can never send, and counts why.
func (p *partitionWriter) reject(msg jetstream.Msg, samples int, reason string, err error) {
	p.w.metrics.samplesRejected.WithLabelValues(reason).Add(float64(samples))
	p.w.metrics.messagesAcked.Inc()
	p.w.logger.Error("message rejected", "subject", msg.Subject(), "reason", reason, "err", err)
	_ = msg.Term()
}

// logRejectOnce logs the backend's message the first time a reason occurs.
func (w *Writer) logRejectOnce(se *SendError) {
	if _, seen := w.metrics.loggedReasons.LoadOrStore(se.Reason, true); !seen {
		w.logger.Error("backend refused samples; further refusals for this reason are only counted",
			"reason", se.Reason, "status", se.Status, "err", se.Err)
	}
}
