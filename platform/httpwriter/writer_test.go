package httpwriter

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
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
	"github.com/prometheus/prometheus/prompb"

	"github.com/watershed-dev/watershed/platform/bus"
	"github.com/watershed-dev/watershed/platform/bus/bustest"
	"github.com/watershed-dev/watershed/platform/config"
	"github.com/watershed-dev/watershed/platform/remotewrite"
)

type answer struct {
	status     int
	retryAfter string
	body       string
}

// backend is a remote-write receiver for writer tests: it answers from a
// script, then 200, and records what it accepted.
type backend struct {
	mu       sync.Mutex
	script   []answer
	requests int
	accepted []int64 // sample timestamps, in arrival order
	sizes    []int
	headers  []http.Header
}

func (b *backend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	b.mu.Lock()
	defer b.mu.Unlock()
	b.requests++
	if len(b.script) > 0 {
		a := b.script[0]
		b.script = b.script[1:]
		if a.retryAfter != "" {
			w.Header().Set("Retry-After", a.retryAfter)
		}
		http.Error(w, a.body, a.status)
		return
	}
	raw, err := s2.Decode(nil, body)
	if err != nil {
		http.Error(w, "not snappy", 400)
		return
	}
	var wr prompb.WriteRequest
	if err := wr.Unmarshal(raw); err != nil {
		http.Error(w, "not a WriteRequest", 400)
		return
	}
	n := 0
	for _, ts := range wr.Timeseries {
		for _, s := range ts.Samples {
			b.accepted = append(b.accepted, s.Timestamp)
			n++
		}
	}
	b.sizes = append(b.sizes, n)
	b.headers = append(b.headers, r.Header.Clone())
}

func (b *backend) snapshot() (accepted []int64, sizes []int, headers []http.Header) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]int64(nil), b.accepted...), append([]int(nil), b.sizes...), b.headers
}

type rig struct {
	w       *Writer
	bus     *bus.Bus
	backend *backend
	reg     *prometheus.Registry
	msgs    int   // messages published so far, for unique ids
	ts      int64 // last sample timestamp published
}

func startWriter(t *testing.T, script []answer, options ...func(*Config)) *rig {
	t.Helper()
	be := &backend{script: script}
	srv := httptest.NewServer(be)
	t.Cleanup(srv.Close)
	natsCfg := bustest.NATSConfig(t.TempDir())
	b := bustest.Open(t, natsCfg)
	reg := prometheus.NewRegistry()
	cfg := Config{
		NATS: natsCfg, URL: srv.URL + "/api/v1/push", UserAgent: "test-agent", Batch: 64,
		Protocol: Protocol{
			Destination: bus.DestinationPrometheus,
			Headers:     map[string]string{"Content-Encoding": "snappy", "Content-Type": "application/x-protobuf", "X-Prometheus-Remote-Write-Version": "0.1.0"},
			RejectReason: func(_ int, body string) string {
				if strings.Contains(body, "out of order") {
					return "out_of_order"
				}
				return ""
			},
		},
		Queue: Queue{
			MaxItemsPerSend: 1000, BatchSendDeadline: 200 * time.Millisecond, RemoteTimeout: 5 * time.Second,
			MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, AckWait: 30 * time.Second,
		},
		Buffer: config.Default().ExternalServices.Prometheus.Buffer,
	}
	for _, o := range options {
		o(&cfg)
	}
	w := New(cfg, b, reg, slog.New(slog.DiscardHandler))
	ctx := context.Background()
	if err := w.StartAsync(ctx); err != nil {
		t.Fatal(err)
	}
	if err := w.AwaitRunning(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		w.StopAsync()
		_ = w.AwaitTerminated(ctx)
		if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
			t.Errorf("lint: %v %v", err, problems)
		}
	})
	return &rig{w: w, bus: b, backend: be, reg: reg}
}

// publishScrapes puts n messages of perMsg samples on partition 1, with
// increasing timestamps.
func (r *rig) publishScrapes(t *testing.T, n, perMsg int) {
	t.Helper()
	ctx := context.Background()
	for i := 0; i < n; i++ {
		var b remotewrite.Builder
		for j := 0; j < perMsg; j++ {
			r.ts++
			b.AppendSample(labels.FromStrings("__name__", "m", "j", strconv.Itoa(j)), r.ts, 1, nil)
		}
		r.msgs++
		m := nats.NewMsg(bus.DestSubject(bus.DestinationPrometheus, 1))
		m.Data = remotewrite.Compress(nil, b.Bytes())
		m.Header.Set(bus.HeaderCount, strconv.Itoa(perMsg))
		m.Header.Set(bus.HeaderTenant, "team-a")
		m.Header.Set(jetstream.MsgIDHeader, fmt.Sprint("m", r.msgs))
		// Numbered as the router numbers a partition's messages.
		m.Header.Set(bus.HeaderPartitionSeq, strconv.Itoa(r.msgs))
		if _, err := r.bus.JetStream().PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
}

func (r *rig) waitAcked(t *testing.T, msgs float64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for testutil.ToFloat64(r.w.metrics.messagesAcked) < msgs {
		if time.Now().After(deadline) {
			t.Fatalf("acked %v of %v messages", testutil.ToFloat64(r.w.metrics.messagesAcked), msgs)
		}
		<-tick.C
	}
	cons, err := r.bus.JetStream().Consumer(context.Background(), bus.DestStream(bus.DestinationPrometheus), "writer-prometheus-p1")
	if err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.NumAckPending != 0 || info.NumPending != 0 {
		t.Errorf("consumer still holds %d unacked and %d undelivered", info.NumAckPending, info.NumPending)
	}
}

func assertInOrder(t *testing.T, ts []int64, want int) {
	t.Helper()
	if len(ts) != want {
		t.Fatalf("backend accepted %d samples, want %d", len(ts), want)
	}
	for i := 1; i < len(ts); i++ {
		if ts[i] != ts[i-1]+1 {
			t.Fatalf("sample %d has timestamp %d after %d", i, ts[i], ts[i-1])
		}
	}
}

func TestWriterJoinsMessagesIntoOrderedRequests(t *testing.T) {
	r := startWriter(t, nil)
	r.publishScrapes(t, 10, 300)
	r.waitAcked(t, 10)
	ts, sizes, headers := r.backend.snapshot()
	assertInOrder(t, ts, 3000)
	for i, n := range sizes {
		if n > 1000 {
			t.Errorf("request %d has %d samples, above maxSamplesPerSend", i, n)
		}
	}
	if len(sizes) >= 10 {
		t.Errorf("%d requests for 10 messages: nothing was joined", len(sizes))
	}
	for k, v := range map[string]string{
		"Content-Encoding": "snappy", "Content-Type": "application/x-protobuf",
		"X-Prometheus-Remote-Write-Version": "0.1.0", "X-Scope-Orgid": "team-a", "User-Agent": "test-agent",
	} {
		if got := headers[0].Get(k); got != v {
			t.Errorf("header %s=%q, want %q", k, got, v)
		}
	}
	if got := testutil.ToFloat64(r.w.metrics.itemsSent); got != 3000 {
		t.Errorf("samples sent %v", got)
	}
}

func TestWriterRetriesWithoutLosingOrDisordering(t *testing.T) {
	r := startWriter(t, []answer{
		{status: 500, body: "ingester down"},
		{status: 429, retryAfter: "1", body: "slow down"},
		{status: 503, body: "unavailable"},
	})
	r.publishScrapes(t, 5, 100)
	r.waitAcked(t, 5)
	ts, _, _ := r.backend.snapshot()
	assertInOrder(t, ts, 500)
	for result, want := range map[string]float64{"retryable": 2, "throttled": 1} {
		if got := testutil.ToFloat64(r.w.metrics.requests.WithLabelValues(result)); got != want {
			t.Errorf("requests{result=%q} = %v, want %v", result, got, want)
		}
	}
}

func TestWriterAcksAndCountsPermanentRejections(t *testing.T) {
	r := startWriter(t, []answer{{status: 400, body: "out of order sample"}})
	r.publishScrapes(t, 1, 100)
	r.waitAcked(t, 1)
	if got := testutil.ToFloat64(r.w.metrics.itemsRejected.WithLabelValues("out_of_order")); got != 100 {
		t.Errorf("rejected{out_of_order} = %v, want 100", got)
	}
	// Later messages still flow.
	r.publishScrapes(t, 1, 10)
	r.waitAcked(t, 2)
}

func TestWriterRejectsCorruptPayloads(t *testing.T) {
	r := startWriter(t, nil)
	m := nats.NewMsg(bus.DestSubject(bus.DestinationPrometheus, 1))
	m.Data = []byte("definitely not snappy")
	m.Header.Set(bus.HeaderCount, "3")
	m.Header.Set(jetstream.MsgIDHeader, "corrupt")
	if _, err := r.bus.JetStream().PublishMsg(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	r.waitAcked(t, 1)
	if got := testutil.ToFloat64(r.w.metrics.itemsRejected.WithLabelValues("corrupt_payload")); got != 3 {
		t.Errorf("rejected{corrupt_payload} = %v, want 3", got)
	}
}

// TestWriterCountsWhatTheBufferDropped: while the backend refuses, a
// small dropOldest buffer overflows; when the backend is back, every
// message is either delivered or counted as dropped (max_bytes), none
// disappears unaccounted.
func TestWriterCountsWhatTheBufferDropped(t *testing.T) {
	var script []answer
	for range 1000 {
		script = append(script, answer{status: 503, body: "down"})
	}
	r := startWriter(t, script, func(c *Config) {
		c.Batch = 4
		c.Buffer.MaxBytes = 32 << 10
		c.Buffer.Discard = config.DiscardDropOldest
	})
	const messages, perMsg = 300, 40
	r.publishScrapes(t, messages, perMsg)
	r.backend.mu.Lock()
	r.backend.script = nil // the backend is back
	r.backend.mu.Unlock()
	deadline := time.Now().Add(30 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		accepted, _, _ := r.backend.snapshot()
		delivered := len(accepted) / perMsg
		dropped := int(testutil.ToFloat64(r.w.metrics.messagesDropped.WithLabelValues("max_bytes")))
		if delivered+dropped == messages {
			if dropped == 0 || delivered < 4 {
				t.Fatalf("delivered %d, dropped %d: the test did not overflow the buffer", delivered, dropped)
			}
			t.Logf("%d messages delivered, %d dropped by the full buffer and counted", delivered, dropped)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("delivered %d + dropped %d != %d published", delivered, dropped, messages)
		}
		<-tick.C
	}
	if n := testutil.ToFloat64(r.w.metrics.messagesDropped.WithLabelValues("max_age")); n != 0 {
		t.Errorf("%v counted as expired", n)
	}
}

// gatedSender holds the first request until released, and records the
// samples of each request and how many were on their way at once.
type gatedSender struct {
	started  chan struct{} // closed when the first request arrives
	release  chan struct{}
	mu       sync.Mutex
	calls    int
	inFlight int
	maxOnWay int
	accepted []int64
}

func (g *gatedSender) Send(_ context.Context, _ string, req *remotewrite.Joiner) (Result, error) {
	g.mu.Lock()
	g.calls++
	first := g.calls == 1
	g.inFlight++
	g.maxOnWay = max(g.maxOnWay, g.inFlight)
	g.mu.Unlock()
	if first {
		close(g.started)
		<-g.release
	}
	var wr prompb.WriteRequest
	if err := wr.Unmarshal(req.Uncompressed()); err != nil {
		return Result{}, &SendError{Class: Permanent, Reason: "bad_request", Err: err}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.inFlight--
	for _, ts := range wr.Timeseries {
		for _, s := range ts.Samples {
			g.accepted = append(g.accepted, s.Timestamp)
		}
	}
	return Result{}, nil
}

func (g *gatedSender) snapshot() (calls, maxOnWay int, accepted []int64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.calls, g.maxOnWay, slices.Clone(g.accepted)
}

// fakeMsg is a message of the bus for tests of the partition writer alone;
// it records its acks.
// fakeMsg is a bus message as a partition writer gets it: payload,
// headers and delivery metadata; its DoubleAck records its name in acks.
type fakeMsg struct {
	jetstream.Msg // nil: only the methods below are called
	data          []byte
	headers       nats.Header
	md            jetstream.MsgMetadata
	acks          *[]string
	name          string
}

func (m *fakeMsg) Metadata() (*jetstream.MsgMetadata, error) { return &m.md, nil }
func (m *fakeMsg) InProgress() error                         { return nil }

func (m *fakeMsg) Data() []byte         { return m.data }
func (m *fakeMsg) Headers() nats.Header { return m.headers }
func (m *fakeMsg) Subject() string      { return "test" }
func (m *fakeMsg) DoubleAck(context.Context) error {
	*m.acks = append(*m.acks, m.name)
	return nil
}

// While a partition's request is on its way, the writer takes and joins
// the next messages, but sends them only once the first request is acked:
// one request per partition at a time, in order.
func TestWriterPreparesTheNextRequestWhileOneIsOnItsWay(t *testing.T) {
	gate := &gatedSender{started: make(chan struct{}), release: make(chan struct{})}
	w := &Writer{
		cfg:     Config{Queue: Queue{MaxItemsPerSend: 1000, AckWait: time.Minute, MinBackoff: time.Millisecond, MaxBackoff: time.Millisecond}},
		sender:  gate,
		metrics: newMetrics(prometheus.NewRegistry(), "prometheus"),
		logger:  slog.New(slog.DiscardHandler),
	}
	var acks []string // written by the request's goroutine, read after wait
	msgs := make([]jetstream.Msg, 6)
	for i := range msgs {
		var b remotewrite.Builder
		for j := range 500 {
			b.AppendSample(labels.FromStrings("__name__", "m", "j", strconv.Itoa(j)), int64(i*500+j+1), 1, nil)
		}
		h := nats.Header{}
		h.Set(bus.HeaderCount, "500")
		msgs[i] = &fakeMsg{data: remotewrite.Compress(nil, b.Bytes()), headers: h, acks: &acks, name: fmt.Sprint("m", i)}
	}
	pw := &partitionWriter{w: w}
	ctx := context.Background()
	// m0 and m1 fill the first request, which the backend holds; m2 is
	// taken meanwhile.
	for _, m := range msgs[:3] {
		if err := pw.add(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	<-gate.started
	if calls, _, _ := gate.snapshot(); calls != 1 {
		t.Fatalf("%d requests sent while the first was on its way, want 1", calls)
	}
	// m3 makes the second request full: its flush waits for the first.
	done := make(chan error, 1)
	go func() {
		for _, m := range msgs[3:] {
			if err := pw.add(ctx, m); err != nil {
				done <- err
				return
			}
		}
		done <- pw.finish(ctx)
	}()
	close(gate.release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	calls, maxOnWay, accepted := gate.snapshot()
	assertInOrder(t, accepted, 3000)
	if calls != 3 || maxOnWay != 1 {
		t.Errorf("%d requests, up to %d at once; want 3, one at a time", calls, maxOnWay)
	}
	if want := []string{"m1", "m3", "m5"}; !slices.Equal(acks, want) {
		t.Errorf("acked %v, want the last message of each request in order %v", acks, want)
	}
}
