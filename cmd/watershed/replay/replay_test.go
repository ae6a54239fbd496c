package replay

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/s2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"

	"github.com/watershed-dev/watershed/platform/bus"
	"github.com/watershed-dev/watershed/platform/bus/bustest"
	"github.com/watershed-dev/watershed/platform/config"
	"github.com/watershed-dev/watershed/platform/remotewrite"
)

// rwBackend is a remote-write receiver for the test: it decodes every
// request and keeps the samples by series name, and the tenants.
type rwBackend struct {
	mu       sync.Mutex
	samples  map[string]int
	tenants  map[string]bool
	requests int
	onReq    func(n int)
}

func (b *rwBackend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	raw, err := s2.Decode(nil, body)
	var wr prompb.WriteRequest
	if err == nil {
		err = wr.Unmarshal(raw)
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	b.mu.Lock()
	for _, ts := range wr.Timeseries {
		for _, l := range ts.Labels {
			if l.Name == "__name__" {
				b.samples[l.Value] += len(ts.Samples)
			}
		}
	}
	b.tenants[r.Header.Get("X-Scope-OrgID")] = true
	b.requests++
	n := b.requests
	b.mu.Unlock()
	if b.onReq != nil {
		b.onReq(n)
	}
	w.WriteHeader(http.StatusNoContent)
}

func newBackend(t *testing.T) (*rwBackend, string) {
	be := &rwBackend{samples: map[string]int{}, tenants: map[string]bool{}}
	srv := httptest.NewServer(be)
	t.Cleanup(srv.Close)
	return be, srv.URL + "/api/v1/write"
}

// phase publishes n messages of 10 samples of series name to the
// Prometheus destination's stream, and returns when they are stored.
func phase(t *testing.T, js jetstream.JetStream, name string, n int) {
	ctx := context.Background()
	for i := range n {
		var b remotewrite.Builder
		for j := range 10 {
			b.AppendSample(labels.FromStrings("__name__", name, "i", fmt.Sprint(j)), int64(1000*i), float64(i), nil)
		}
		m := nats.NewMsg(bus.DestSubject(bus.DestinationPrometheus, i%4))
		m.Data = remotewrite.Compress(nil, b.Bytes())
		m.Header.Set(bus.HeaderCount, "10")
		m.Header.Set(bus.HeaderTenant, "live-tenant")
		m.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("%s-%d", name, i))
		if _, err := js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
}

// newBuffer is an empty Prometheus destination stream on an embedded
// server, and a configuration of maxSamplesPerSend 100 to replay it with.
func newBuffer(t *testing.T) (jetstream.JetStream, *config.Config) {
	natsCfg := bustest.NATSConfig(t.TempDir())
	b := bustest.Open(t, natsCfg)
	cfg := config.Default()
	cfg.NATS = natsCfg
	cfg.ExternalServices.Prometheus.Host = "http://127.0.0.1:1"
	cfg.ExternalServices.Prometheus.Queue.MaxSamplesPerSend = 100
	js := b.JetStream()
	if _, err := bus.EnsureStream(context.Background(), js, bus.DestStreamConfig(bus.DestinationPrometheus, cfg.ExternalServices.Prometheus.Buffer, natsCfg.DuplicateWindow)); err != nil {
		t.Fatal(err)
	}
	return js, cfg
}

// setup fills a buffer with three phases and returns the window of the
// second.
func setup(t *testing.T) (jetstream.JetStream, *config.Config, time.Time, time.Time) {
	js, cfg := newBuffer(t)
	phase(t, js, "before", 20)
	from := time.Now()
	phase(t, js, "inside", 50)
	to := time.Now()
	phase(t, js, "after", 20)
	return js, cfg, from, to
}

// TestReplayWindow: exactly the window's samples reach the other backend,
// joined into requests of maxSamplesPerSend, as the given tenant.
func TestReplayWindow(t *testing.T) {
	js, cfg, from, to := setup(t)
	be, url := newBackend(t)
	var progress bytes.Buffer
	o := Options{Destination: "prometheus", From: from, To: to, ToURL: url, Tenant: "replayed"}
	sum, err := Run(context.Background(), js, cfg, o, &progress)
	if err != nil {
		t.Fatal(err)
	}
	if len(be.samples) != 1 || be.samples["inside"] != 500 || be.requests != 5 {
		t.Errorf("backend got %v in %d requests; want 500 samples of inside in 5", be.samples, be.requests)
	}
	if !be.tenants["replayed"] || len(be.tenants) != 1 {
		t.Errorf("tenants %v", be.tenants)
	}
	if sum.Messages != 50 || sum.Items != 500 || sum.Sent != 500 || sum.Requests != 5 || sum.Interrupted {
		t.Errorf("summary %+v", sum)
	}
	if !strings.Contains(progress.String(), "100.0%") {
		t.Errorf("no final progress line: %q", progress.String())
	}
	var out bytes.Buffer
	Print(&out, o, url, sum)
	if !strings.Contains(out.String(), "sent: 500 items") {
		t.Errorf("summary text:\n%s", out.String())
	}
}

// TestDryRunSendsNothing counts the window without sending.
func TestDryRunSendsNothing(t *testing.T) {
	js, cfg, from, to := setup(t)
	be, url := newBackend(t)
	sum, err := Run(context.Background(), js, cfg, Options{Destination: "prometheus", From: from, To: to, ToURL: url, DryRun: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if be.requests != 0 || sum.Items != 500 || sum.Messages != 50 {
		t.Errorf("dry run: %d requests, summary %+v", be.requests, sum)
	}
}

// TestInterruptAndResume: a replay stopped (as by Ctrl-C) after two
// requests says so; run again with the resume file, it sends the rest:
// every sample of the window arrives, and none of it twice but for the
// request in flight at the stop.
func TestInterruptAndResume(t *testing.T) {
	js, cfg, from, to := setup(t)
	be, url := newBackend(t)
	ctx, cancel := context.WithCancel(context.Background())
	be.onReq = func(n int) {
		if n == 2 {
			cancel()
		}
	}
	o := Options{Destination: "prometheus", From: from, To: to, ToURL: url, ResumeFile: filepath.Join(t.TempDir(), "resume.json")}
	first, err := Run(ctx, js, cfg, o, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !first.Interrupted || first.LastSeq == 0 {
		t.Fatalf("first run: %+v", first)
	}
	be.onReq = nil
	second, err := Run(context.Background(), js, cfg, o, nil)
	if err != nil {
		t.Fatal(err)
	}
	if second.Interrupted || first.Sent+second.Sent != 500 {
		t.Errorf("sent %d then %d, want 500 in all", first.Sent, second.Sent)
	}
	if got := be.samples["inside"]; got < 500 || got > 600 {
		t.Errorf("backend holds %d samples of the window; want 500, or up to 600 with the request in flight at the stop", got)
	}
	if len(be.samples) != 1 {
		t.Errorf("samples outside the window: %v", be.samples)
	}
	other := o
	other.From = from.Add(-time.Second)
	if _, err := Run(context.Background(), js, cfg, other, nil); err == nil || !strings.Contains(err.Error(), "not this replay") {
		t.Errorf("resume file of another window accepted: %v", err)
	}
}

func TestParseTime(t *testing.T) {
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		in      string
		want    time.Time
		wantErr bool
	}{
		{"15m", now.Add(-15 * time.Minute), false},
		{"2026-12-02T10:30:00Z", time.Date(2026, 12, 2, 10, 30, 0, 0, time.UTC), false},
		{"yesterday", time.Time{}, true},
		{"-5m", time.Time{}, true},
	} {
		t.Run(c.in, func(t *testing.T) {
			got, err := ParseTime(c.in, now)
			if (err != nil) != c.wantErr || (!c.wantErr && !got.Equal(c.want)) {
				t.Errorf("ParseTime(%q) = %v, %v", c.in, got, err)
			}
		})
	}
}

// TestRateLimit: --rate bounds items per second (a lower bound on the
// time taken, which the limiter guarantees), and the progress line is
// redrawn meanwhile.
func TestRateLimit(t *testing.T) {
	js, cfg, from, to := setup(t)
	be, url := newBackend(t)
	var progress syncBuffer
	sum, err := Run(context.Background(), js, cfg, Options{Destination: "prometheus", From: from, To: to, ToURL: url, Rate: 200}, &progress)
	if err != nil {
		t.Fatal(err)
	}
	// 500 items at 200/s with a burst of 200: at least 1.5 s.
	if sum.Elapsed < 1500*time.Millisecond || be.samples["inside"] != 500 {
		t.Errorf("500 items at 200/s took %s (want >= 1.5s); backend %v", sum.Elapsed, be.samples)
	}
	if !strings.Contains(progress.String(), "\r[") {
		t.Errorf("progress not redrawn: %q", progress.String())
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// A message filled with chunks by a collector, larger than
// maxSamplesPerSend, is cut into requests where its chunks met, as the
// writer cuts it; every sample arrives once.
func TestReplayCutsMessagesAtTheirChunks(t *testing.T) {
	js, cfg := newBuffer(t)
	ctx := context.Background()
	from := time.Now()
	for i := range 2 {
		var bl remotewrite.Blocks
		var table []remotewrite.Chunk
		for c := range 3 {
			var bld remotewrite.Builder
			for j := range 60 {
				bld.AppendSample(labels.FromStrings("__name__", "chunked", "c", fmt.Sprint(i, c), "j", fmt.Sprint(j)), int64(1000*i), 1, nil)
			}
			block := remotewrite.Compress(nil, bld.Bytes())
			entry, err := remotewrite.ChunkOf(block, 60)
			if err != nil {
				t.Fatal(err)
			}
			if err := bl.Append(block); err != nil {
				t.Fatal(err)
			}
			table = append(table, entry)
		}
		m := nats.NewMsg(bus.DestSubject(bus.DestinationPrometheus, 0))
		m.Data = bl.Bytes()
		m.Header.Set(bus.HeaderCount, "180")
		m.Header.Set(bus.HeaderChunks, remotewrite.FormatChunkTable(table))
		m.Header.Set(jetstream.MsgIDHeader, fmt.Sprint("chunked-", i))
		if _, err := js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	be, url := newBackend(t)
	sum, err := Run(ctx, js, cfg, Options{Destination: "prometheus", From: from, To: time.Now(), ToURL: url}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Six chunks of 60: no two fit a request of 100.
	if be.samples["chunked"] != 360 || be.requests != 6 {
		t.Errorf("backend got %v in %d requests; want 360 samples in 6", be.samples, be.requests)
	}
	if sum.Messages != 2 || sum.Items != 360 || sum.Sent != 360 || sum.Requests != 6 {
		t.Errorf("summary %+v", sum)
	}
}
