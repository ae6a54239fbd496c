package collector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
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
	"github.com/watershed-dev/watershed/platform/remotewrite"
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
	seriesSize := 2 * scrapeSize(t, 1) // the longest series of appendN, with room to spare
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
		// A chunk is cut once it reaches the limit: one series more.
		if body, err := s2.Decode(nil, m.Data); err != nil || len(body) > 64<<10+seriesSize {
			t.Errorf("message of %d bytes (%v), over the 64 KiB allowed and one series", len(body), err)
		}
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

func newJoiningSink(t *testing.T, pub publisher, maxBytes int, linger time.Duration, joinSamples ...int) *sink {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg := sinkConfig{partitions: 1, maxMessageBytes: maxBytes, source: "node-a", publishTimeout: time.Second, linger: linger}
	if len(joinSamples) > 0 {
		cfg.joinSamples = joinSamples[0]
	}
	return newSink(context.Background(), cfg,
		pub, newMetrics(reg), slog.New(slog.DiscardHandler))
}

// scrapeSize is the encoded size of a scrape appendN makes of n series.
func scrapeSize(t *testing.T, n int) int {
	t.Helper()
	pub := &recordingPublisher{}
	s := newJoiningSink(t, pub, 1<<20, 0)
	app := s.AppenderV2(context.Background()).(*appender)
	appendN(t, app, n, false)
	size := app.b.Len()
	if err := app.Rollback(); err != nil {
		t.Fatal(err)
	}
	return size
}

// commitConcurrently commits one scrape of n series per size in its own
// goroutine, as the scrape loops of several targets do, and returns their
// errors.
func commitConcurrently(t *testing.T, s *sink, sizes ...int) []error {
	t.Helper()
	errs := make([]error, len(sizes))
	var wg sync.WaitGroup
	for i, n := range sizes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			app := s.AppenderV2(context.Background())
			appendN(t, app, n, false)
			errs[i] = app.Commit()
		}()
	}
	wg.Wait()
	return errs
}

// checkChunkTable checks that a message's Ws-Chunks table cuts it into
// chunks the writer can make requests of: each holds at most an eighth of
// joinSamples (the writer's maxSamplesPerSend), unless the message is of
// a scrape larger than joinSamples, which goes alone.
func checkChunkTable(t *testing.T, m *nats.Msg, joinSamples, samples int) {
	t.Helper()
	table := m.Header.Get(bus.HeaderChunks)
	parts, err := remotewrite.SplitBlock(nil, m.Data, table, samples)
	if err != nil {
		t.Fatalf("message of %d samples with chunk table %q: %v", samples, table, err)
	}
	if joinSamples == 0 || samples > joinSamples {
		return // a scrape going alone
	}
	limit := (joinSamples + chunksPerMessage - 1) / chunksPerMessage
	for i, p := range parts {
		if p.Items > limit {
			t.Errorf("chunk %d of a message holds %d samples, over an eighth of %d", i, p.Items, joinSamples)
		}
	}
}

func TestScrapesOfAPartitionShareAMessage(t *testing.T) {
	size := scrapeSize(t, 100)
	for _, tc := range []struct {
		name     string
		maxBytes int
		linger   time.Duration
		// joinSamples (the writer's maxSamplesPerSend) sizes the chunks,
		// an eighth of it, and sends larger scrapes alone; 0 for neither.
		joinSamples int
		scrapes     []int
		// messages is the number of bus messages expected, 0 for "any".
		messages int
		// full is how many messages hold over 7/8 of maxBytes: filled to
		// within a chunk.
		full int
	}{
		// The third scrape fills the message: it goes out at once, long
		// before the linger ends.
		{name: "full message goes out at once", maxBytes: 3 * size, linger: time.Hour, scrapes: []int{100, 100, 100}, messages: 1},
		{name: "linger ends the message", maxBytes: 1 << 20, linger: 10 * time.Millisecond, scrapes: []int{100}, messages: 1},
		// Whatever the interleaving, no message exceeds maxBytes and every
		// series arrives once.
		{name: "a scrape without room opens the next message", maxBytes: 2*size + 1, linger: 5 * time.Millisecond, scrapes: []int{100, 100, 100, 100, 100}},
		// Three times maxSamplesPerSend in one message: the writer cuts
		// it into requests at its chunks (checked below).
		{name: "a message is not capped at maxSamplesPerSend", maxBytes: 3 * size, linger: time.Hour, joinSamples: 100, scrapes: []int{100, 100, 100}, messages: 1, full: 1},
		// The second scrape fills the first message to maxBytes, its rest
		// opens the next.
		{name: "a scrape fills the open message and opens the next", maxBytes: 3 * size / 2, linger: 50 * time.Millisecond, joinSamples: 100, scrapes: []int{100, 100}, messages: 2, full: 1},
		{name: "scrapes of many sizes", maxBytes: 1 << 20, linger: 5 * time.Millisecond, joinSamples: 250, scrapes: []int{100, 7, 100, 31, 100}},
		{name: "a scrape larger than the sample cap goes alone", maxBytes: 1 << 20, linger: 5 * time.Millisecond, joinSamples: 50, scrapes: []int{100, 10, 100}, messages: 3},
		{name: "linger 0 publishes every scrape alone", maxBytes: 1 << 20, linger: 0, scrapes: []int{100, 100, 100}, messages: 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pub := &recordingPublisher{}
			s := newJoiningSink(t, pub, tc.maxBytes, tc.linger, tc.joinSamples)
			for i, err := range commitConcurrently(t, s, tc.scrapes...) {
				if err != nil {
					t.Fatalf("commit %d: %v", i, err)
				}
			}
			if tc.messages > 0 && len(pub.msgs) != tc.messages {
				t.Fatalf("%d messages, want %d", len(pub.msgs), tc.messages)
			}
			want, series, full := 0, 0, 0
			for _, n := range tc.scrapes {
				want += n
			}
			for _, m := range pub.msgs {
				body, err := s2.Decode(nil, m.Data)
				if err != nil {
					t.Fatal(err)
				}
				if len(body) > tc.maxBytes {
					t.Errorf("message of %d bytes, over the %d allowed", len(body), tc.maxBytes)
				}
				n := len(decodeMsg(t, m).Timeseries)
				if c, _ := bus.Count(m.Header); c != n {
					t.Errorf("count header %d, payload holds %d", c, n)
				}
				checkChunkTable(t, m, tc.joinSamples, n)
				if len(body) > tc.maxBytes*7/8 {
					full++
				}
				series += n
			}
			if full < tc.full {
				t.Errorf("%d messages filled to within a chunk of %d bytes, want %d", full, tc.maxBytes, tc.full)
			}
			if series != want {
				t.Errorf("%d series published, want %d", series, want)
			}
			if got := testutil.ToFloat64(s.metrics.samplesPublished); got != float64(want) {
				t.Errorf("published counter %v, want %d", got, want)
			}
			if got := testutil.ToFloat64(s.metrics.messages); got != float64(len(pub.msgs)) {
				t.Errorf("messages counter %v, want %d", got, len(pub.msgs))
			}
		})
	}
}

func TestAFailedSharedMessageFailsEachScrapeAndCountsItsSamplesOnce(t *testing.T) {
	pub := &recordingPublisher{err: errors.New("bus down")}
	s := newJoiningSink(t, pub, 2*scrapeSize(t, 10), time.Hour)
	for i, err := range commitConcurrently(t, s, 10, 10) {
		if err == nil || !strings.Contains(err.Error(), "bus down") {
			t.Errorf("commit %d: %v, want the publish error", i, err)
		}
	}
	if got := testutil.ToFloat64(s.metrics.samplesDropped.WithLabelValues(reasonPublishFailed)); got != 20 {
		t.Errorf("dropped %v samples, want 20", got)
	}
}

// TestATargetsScrapesStayInOrder: a target's next scrape is committed only
// once the message holding its last one is stored, so its samples reach
// the bus in scrape order even when its scrapes share messages with others.
func TestATargetsScrapesStayInOrder(t *testing.T) {
	pub := &recordingPublisher{}
	s := newJoiningSink(t, pub, 1<<20, time.Millisecond)
	var wg sync.WaitGroup
	for target := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ts := int64(1); ts <= 20; ts++ {
				app := s.AppenderV2(context.Background())
				ls := labels.FromStrings("__name__", "m", "target", fmt.Sprint(target))
				if _, err := app.Append(0, ls, 0, ts, 1, nil, nil, storage.AOptions{}); err != nil {
					t.Error(err)
				}
				if err := app.Commit(); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	last := map[string]int64{}
	for _, m := range pub.msgs {
		for _, ts := range decodeMsg(t, m).Timeseries {
			target := ts.Labels[1].Value
			if got := ts.Samples[0].Timestamp; got != last[target]+1 {
				t.Fatalf("target %s: sample %d after %d", target, got, last[target])
			}
			last[target]++
		}
	}
	for target, n := range last {
		if n != 20 {
			t.Errorf("target %s: %d samples, want 20", target, n)
		}
	}
}

// gatedPublisher stores nothing until released; it tells when a publish
// has started.
type gatedPublisher struct {
	recordingPublisher
	started chan struct{}
	release chan struct{}
}

func (p *gatedPublisher) Publish(ctx context.Context, msg *nats.Msg) (*jetstream.PubAck, error) {
	p.started <- struct{}{}
	<-p.release
	return p.recordingPublisher.Publish(ctx, msg)
}

// TestAWaitingScrapeHoldsNoBuilder: a scrape waiting for the bus has given
// its builder back, joined or alone, so the builders in use are those of
// scrapes being appended, not of every scrape waiting for its message.
func TestAWaitingScrapeHoldsNoBuilder(t *testing.T) {
	size := scrapeSize(t, 100)
	for _, tc := range []struct {
		name     string
		maxBytes int
		linger   time.Duration
	}{
		{name: "joined, full message", maxBytes: size + 1, linger: time.Hour},
		{name: "alone", maxBytes: 1 << 20, linger: 0},
		{name: "a large scrape's full messages", maxBytes: size / 3, linger: 10 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pub := &gatedPublisher{started: make(chan struct{}), release: make(chan struct{})}
			s := newJoiningSink(t, pub, tc.maxBytes, tc.linger)
			app := s.AppenderV2(context.Background()).(*appender)
			appendN(t, app, 100, false)
			done := make(chan error, 1)
			go func() { done <- app.Commit() }()
			<-pub.started // the publish happens after the builder went back
			if app.b != nil {
				t.Error("the scrape holds its builder while its message is published")
			}
			close(pub.release)
			for {
				select {
				case <-pub.started:
					continue
				case err := <-done:
					if err != nil {
						t.Fatal(err)
					}
				}
				break
			}
			var got int
			for _, m := range pub.msgs {
				got += len(decodeMsg(t, m).Timeseries)
			}
			if got != 100 {
				t.Errorf("%d series published, want 100", got)
			}
		})
	}
}

// TestAnAppenderTakesABuilderOnlyToAppend: the scrape loop takes its
// appender before the scrape's HTTP request; a builder is taken only by
// the first sample, and a scrape without one publishes nothing.
func TestAnAppenderTakesABuilderOnlyToAppend(t *testing.T) {
	pub := &recordingPublisher{}
	s, _ := newTestSink(t, pub, 1<<20)
	for _, end := range []struct {
		name string
		end  func(storage.AppenderV2) error
	}{
		{name: "commit", end: storage.AppenderV2.Commit},
		{name: "rollback", end: storage.AppenderV2.Rollback},
	} {
		t.Run(end.name, func(t *testing.T) {
			app := s.AppenderV2(context.Background())
			if app.(*appender).b != nil {
				t.Fatal("an appender holds a builder before its first sample")
			}
			if err := end.end(app); err != nil {
				t.Fatal(err)
			}
			if len(pub.msgs) != 0 {
				t.Fatalf("%d messages published for an empty scrape", len(pub.msgs))
			}
		})
	}
}
