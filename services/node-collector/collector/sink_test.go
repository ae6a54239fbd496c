package collector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/s2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/prompb"
	"github.com/prometheus/prometheus/storage"

	"github.com/watershed-dev/watershed/platform/bus"
)

// recordingPublisher is a fake of the sink's one-method publisher.
type recordingPublisher struct {
	mu   sync.Mutex
	msgs []*nats.Msg
	err  error
}

func (p *recordingPublisher) Publish(ctx context.Context, msg *nats.Msg) (*jetstream.PubAck, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err != nil {
		return nil, p.err
	}
	// A real client copies the payload into its connection buffer; the
	// sink reuses it once acked.
	cp := *msg
	cp.Data = append([]byte(nil), msg.Data...)
	p.msgs = append(p.msgs, &cp)
	return &jetstream.PubAck{Stream: bus.RawStream}, nil
}

func newTestSink(t *testing.T, pub publisher, maxBytes int) (*sink, *prometheus.Registry) {
	reg := prometheus.NewRegistry()
	s := newSink(context.Background(), sinkConfig{partitions: 8, maxMessageBytes: maxBytes, source: "node-a", publishTimeout: time.Second},
		pub, newMetrics(reg), slog.New(slog.DiscardHandler))
	return s, reg
}

func appendN(t *testing.T, app storage.AppenderV2, n int, stale bool) {
	t.Helper()
	for i := 0; i < n; i++ {
		v := float64(i)
		if stale && i == 0 {
			v = math.Float64frombits(value.StaleNaN)
		}
		ls := labels.FromStrings("__name__", "m", "i", fmt.Sprint(i), "job", "node")
		if _, err := app.Append(0, ls, 0, 1000, v, nil, nil, storage.AOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}

func decodeMsg(t *testing.T, m *nats.Msg) *prompb.WriteRequest {
	t.Helper()
	body, err := s2.Decode(nil, m.Data)
	if err != nil {
		t.Fatalf("payload is not snappy: %v", err)
	}
	var wr prompb.WriteRequest
	if err := wr.Unmarshal(body); err != nil {
		t.Fatalf("payload is not a WriteRequest: %v", err)
	}
	return &wr
}

func TestCommitPublishesOneMessagePerScrape(t *testing.T) {
	pub := &recordingPublisher{}
	s, reg := newTestSink(t, pub, 1<<20)
	for scrape := 0; scrape < 2; scrape++ {
		app := s.AppenderV2(context.Background())
		appendN(t, app, 100, scrape == 1)
		if err := app.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	if len(pub.msgs) != 2 {
		t.Fatalf("%d messages, want 2", len(pub.msgs))
	}
	ids := map[string]bool{}
	for _, m := range pub.msgs {
		for h, want := range map[string]string{
			bus.HeaderSignal: "metrics", bus.HeaderEncoding: bus.EncodingPRW1Snappy,
			bus.HeaderSource: "node-a", bus.HeaderCount: "100", bus.HeaderPartitionKey: "unknown",
		} {
			if got := m.Header.Get(h); got != want {
				t.Errorf("header %s=%q, want %q", h, got, want)
			}
		}
		ids[m.Header.Get(jetstream.MsgIDHeader)] = true
		if m.Subject != bus.RawSubject("metrics", bus.Partition("unknown", 8)) {
			t.Errorf("subject %s", m.Subject)
		}
		if n := len(decodeMsg(t, m).Timeseries); n != 100 {
			t.Errorf("%d series in payload, want 100", n)
		}
	}
	if len(ids) != 2 {
		t.Errorf("message ids not unique: %v", ids)
	}
	for _, c := range []struct {
		name string
		m    prometheus.Collector
		want float64
	}{
		{"scraped", s.metrics.samplesAppended, 200},
		{"published", s.metrics.samplesPublished, 200},
		{"stale markers", s.metrics.staleMarkers, 1},
		{"messages", s.metrics.messages, 2},
	} {
		if got := testutil.ToFloat64(c.m); got != c.want {
			t.Errorf("%s = %v, want %v", c.name, got, c.want)
		}
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", err, problems)
	}
}

func TestLargeScrapeIsSplit(t *testing.T) {
	pub := &recordingPublisher{}
	s, _ := newTestSink(t, pub, 64<<10)
	app := s.AppenderV2(context.Background())
	appendN(t, app, 5000, false)
	if err := app.Commit(); err != nil {
		t.Fatal(err)
	}
	if len(pub.msgs) < 2 {
		t.Fatalf("%d messages, want the scrape split", len(pub.msgs))
	}
	total := 0
	for _, m := range pub.msgs {
		total += len(decodeMsg(t, m).Timeseries)
		n, _ := bus.Count(m.Header)
		if n != len(decodeMsg(t, m).Timeseries) {
			t.Errorf("count header %d differs from payload", n)
		}
	}
	if total != 5000 {
		t.Errorf("%d series over all messages, want 5000", total)
	}
}

func TestRollbackAndPublishFailureAreCounted(t *testing.T) {
	pub := &recordingPublisher{err: errors.New("bus down")}
	s, _ := newTestSink(t, pub, 1<<20)
	app := s.AppenderV2(context.Background())
	appendN(t, app, 10, false)
	if err := app.Rollback(); err != nil {
		t.Fatal(err)
	}
	app = s.AppenderV2(context.Background())
	appendN(t, app, 7, false)
	if err := app.Commit(); err == nil {
		t.Fatal("commit succeeded with the bus down")
	}
	want := map[string]float64{reasonRolledBack: 10, reasonPublishFailed: 7, reasonEncodeFailed: 0}
	for reason, n := range want {
		if got := testutil.ToFloat64(s.metrics.samplesDropped.WithLabelValues(reason)); got != n {
			t.Errorf("dropped{reason=%q} = %v, want %v", reason, got, n)
		}
	}
}

func BenchmarkSinkScrape(b *testing.B) {
	pub := &recordingPublisher{}
	reg := prometheus.NewRegistry()
	s := newSink(context.Background(), sinkConfig{partitions: 8, maxMessageBytes: 1 << 20, source: "n", publishTimeout: time.Second},
		pub, newMetrics(reg), slog.New(slog.DiscardHandler))
	series := make([]labels.Labels, 1000)
	for i := range series {
		series[i] = labels.FromStrings("__name__", "http_requests_total", "cluster", "prod", "code", "200",
			"handler", fmt.Sprintf("/api/%d", i%50), "instance", "10.0.0.1:8080", "job", "app", "pod", fmt.Sprintf("app-%d", i/50))
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		app := s.AppenderV2(context.Background())
		for j, ls := range series {
			if _, err := app.Append(storage.SeriesRef(j+1), ls, 0, 1700000000000, float64(j), nil, nil, storage.AOptions{}); err != nil {
				b.Fatal(err)
			}
		}
		if err := app.Commit(); err != nil {
			b.Fatal(err)
		}
		pub.msgs = pub.msgs[:0]
	}
	b.ReportMetric(float64(b.N*len(series))/b.Elapsed().Seconds(), "samples/s")
}
