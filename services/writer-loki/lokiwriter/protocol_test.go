package lokiwriter

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/grafana/dskit/services"
	"github.com/grafana/loki/pkg/push"
	"github.com/klauspost/compress/s2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/watershed-dev/watershed/platform/bus"
	"github.com/watershed-dev/watershed/platform/bus/bustest"
	"github.com/watershed-dev/watershed/platform/config"
	"github.com/watershed-dev/watershed/platform/remotewrite"
)

func TestRejectReason(t *testing.T) {
	for _, c := range []struct {
		status     int
		body, want string
	}{
		{400, "entry for stream '{job=\"x\"}' has timestamp too old: 2020-01-01", "too_old"},
		{400, "entry too far behind, oldest acceptable timestamp is: 2026-11-25", "too_old"},
		{400, "Max entry size '262144' bytes exceeded for stream; line too long", "line_too_long"},
		{429, "Maximum active stream limit exceeded", "stream_limit"},
		{400, "error parsing labels", "invalid_labels"},
		{400, "something new", ""},
	} {
		if got := rejectReason(c.status, c.body); got != c.want {
			t.Errorf("%q: got %q, want %q", c.body, got, c.want)
		}
	}
}

// lokiBackend is a Loki push receiver for the test: it decodes requests and
// keeps their lines in arrival order.
type lokiBackend struct {
	mu      sync.Mutex
	lines   []string
	headers http.Header
	fail    int // answer 503 to the first fail requests
}

func (l *lokiBackend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.fail > 0 {
		l.fail--
		http.Error(w, "ingester unavailable", http.StatusServiceUnavailable)
		return
	}
	raw, err := s2.Decode(nil, body)
	var req push.PushRequest
	if err == nil {
		err = req.Unmarshal(raw)
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	for _, s := range req.Streams {
		for _, e := range s.Entries {
			l.lines = append(l.lines, e.Line)
		}
	}
	l.headers = r.Header.Clone()
	w.WriteHeader(http.StatusNoContent)
}

// TestWriterPushesJoinedInOrder: log messages on the Loki stream reach a
// push endpoint joined, in order, with the protocol's headers, through a
// retried 503.
func TestWriterPushesJoinedInOrder(t *testing.T) {
	be := &lokiBackend{fail: 2}
	srv := httptest.NewServer(be)
	defer srv.Close()
	natsCfg := bustest.NATSConfig(t.TempDir())
	b := bustest.Open(t, natsCfg)
	loki := config.Default().ExternalServices.Loki
	loki.Host, loki.TenantID = srv.URL, "team-a"
	loki.Queue.MinBackoff, loki.Queue.MaxBackoff, loki.Queue.BatchSendDeadline = 10*time.Millisecond, 50*time.Millisecond, 200*time.Millisecond
	reg := prometheus.NewRegistry()
	w := New(natsCfg, loki, b, reg, slog.New(slog.DiscardHandler))
	ctx := context.Background()
	if err := services.StartAndAwaitRunning(ctx, w); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = services.StopAndAwaitTerminated(ctx, w) }()

	for i := 0; i < 50; i++ {
		req := push.PushRequest{Streams: []push.Stream{{Labels: `{job="app"}`, Entries: []push.Entry{{Timestamp: time.Unix(1700000000, int64(i)), Line: "line " + strconv.Itoa(i)}}}}}
		body, err := req.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		m := nats.NewMsg(bus.DestSubject(bus.DestinationLoki, 3))
		m.Data = remotewrite.Compress(nil, body)
		m.Header.Set(bus.HeaderCount, "1")
		m.Header.Set(bus.HeaderTenant, "team-a")
		m.Header.Set(jetstream.MsgIDHeader, "l"+strconv.Itoa(i))
		if _, err := b.JetStream().PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		be.mu.Lock()
		n := len(be.lines)
		be.mu.Unlock()
		if n >= 50 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("backend has %d of 50 lines", n)
		}
		<-tick.C
	}
	be.mu.Lock()
	defer be.mu.Unlock()
	for i, l := range be.lines {
		if l != "line "+strconv.Itoa(i) {
			t.Fatalf("line %d is %q: out of order or doubled", i, l)
		}
	}
	if be.headers.Get("Content-Type") != "application/x-protobuf" || be.headers.Get("X-Scope-OrgID") != "team-a" || be.headers.Get("User-Agent") != UserAgent {
		t.Errorf("headers %v", be.headers)
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", err, problems)
	}
}
