package httpwriter

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/grafana/dskit/services"
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

// referee is a remote-write receiver that judges as Prometheus does: a
// request with a sample older than its series' newest is refused whole
// (400, out of order), one equal to it is taken as a duplicate. It
// records refusals that would have lost data: a refused request holding
// a sample it never accepted.
type referee struct {
	mu       sync.Mutex
	newest   map[string]int64
	accepted map[string]int
	lost     []string
	resent   int
}

func newReferee() *referee {
	return &referee{newest: map[string]int64{}, accepted: map[string]int{}}
}

func (r *referee) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	raw, err := s2.Decode(nil, body)
	var wr prompb.WriteRequest
	if err == nil {
		err = wr.Unmarshal(raw)
	}
	if err != nil {
		http.Error(w, "unreadable: "+err.Error(), http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	var old, fresh []string
	for _, ts := range wr.Timeseries {
		series := ts.Labels[len(ts.Labels)-1].Value
		newest, seen := r.newest[series]
		for _, s := range ts.Samples {
			switch {
			case seen && s.Timestamp < newest:
				old = append(old, fmt.Sprintf("%s@%d", series, s.Timestamp))
			case !seen || s.Timestamp > newest:
				fresh = append(fresh, fmt.Sprintf("%s@%d", series, s.Timestamp))
				newest, seen = s.Timestamp, true
			}
		}
	}
	if len(old) > 0 {
		if len(fresh) > 0 {
			r.lost = append(r.lost, fmt.Sprintf("refused %v for out-of-order %v", fresh, old))
		}
		r.resent++
		http.Error(w, "out of order sample", http.StatusBadRequest)
		return
	}
	for _, ts := range wr.Timeseries {
		series := ts.Labels[len(ts.Labels)-1].Value
		for _, s := range ts.Samples {
			if s.Timestamp > r.newest[series] || r.accepted[series] == 0 {
				r.newest[series] = s.Timestamp
				r.accepted[series]++
			}
		}
	}
}

func (r *referee) count(series string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.accepted[series]
}

// publisher puts scrapes on every partition of the Prometheus destination,
// numbered as the router numbers them: several samples of one series per
// message, so that a message sent twice is refused as out of order.
type publisher struct {
	js         jetstream.JetStream
	partitions int
	perMsg     int
	mu         sync.Mutex
	msgs       []int // per partition
}

func (p *publisher) publish(ctx context.Context, part int) error {
	p.mu.Lock()
	p.msgs[part]++
	n := p.msgs[part]
	p.mu.Unlock()
	var b remotewrite.Builder
	for j := 0; j < p.perMsg; j++ {
		b.AppendSample(labels.FromStrings("__name__", "m", "series", "p"+strconv.Itoa(part)), int64(n*p.perMsg+j), 1, nil)
	}
	m := nats.NewMsg(bus.DestSubject(bus.DestinationPrometheus, part))
	m.Data = remotewrite.Compress(nil, b.Bytes())
	m.Header.Set(bus.HeaderCount, strconv.Itoa(p.perMsg))
	m.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("p%d-%d", part, n))
	m.Header.Set(bus.HeaderPartitionSeq, strconv.Itoa(n))
	_, err := p.js.PublishMsg(ctx, m)
	return err
}

type replica struct {
	w   *Writer
	bus *bus.Bus
	reg *prometheus.Registry
}

func startReplica(t *testing.T, natsCfg config.NATSConfig, url, member string) *replica {
	t.Helper()
	ctx := context.Background()
	b := bustest.Connect(t, natsCfg, member)
	reg := prometheus.NewRegistry()
	cfg := Config{
		NATS: natsCfg, URL: url, UserAgent: "test", Batch: 16, Member: member,
		Protocol: Protocol{Destination: bus.DestinationPrometheus, RejectReason: func(_ int, body string) string {
			return map[bool]string{true: "out_of_order"}[strings.Contains(body, "out of order")]
		}},
		Queue: Queue{
			MaxItemsPerSend: 200, BatchSendDeadline: 100 * time.Millisecond, RemoteTimeout: 5 * time.Second,
			MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond, AckWait: 30 * time.Second,
		},
		Buffer: config.Default().ExternalServices.Prometheus.Buffer,
	}
	logger := slog.New(slog.DiscardHandler)
	if os.Getenv("WRITER_TEST_LOG") != "" {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("member", member)
	}
	w := New(cfg, b, reg, logger)
	if err := services.StartAndAwaitRunning(ctx, w); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = services.StopAndAwaitTerminated(ctx, w) })
	return &replica{w: w, bus: b, reg: reg}
}

// owned is how many partitions the replica holds, from its own metric.
func (r *replica) owned(t *testing.T) float64 {
	mfs, err := r.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "watershed_partition_group_partitions_owned" {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	return 0
}

// TestWritersScaleOutAndInWithoutLossOrDisorder runs one writer, then
// three, then one again, with one of the two leaving by crashing
// (its bus connection cut mid-stream), while scrapes keep arriving. The
// referee must end with every sample, having refused nothing new as out
// of order; what a new owner sent again after the crash may be refused
// as already held, and is counted as such.
func TestWritersScaleOutAndInWithoutLossOrDisorder(t *testing.T) {
	const partitions = 8
	natsCfg := bustest.NATSConfig(t.TempDir())
	natsCfg.Partitions = partitions
	natsCfg.Groups.Lease = 1500 * time.Millisecond
	server, external := bustest.Shared(t, natsCfg)
	ref := newReferee()
	srv := httptest.NewServer(ref)
	t.Cleanup(srv.Close)

	ctx, stopPublishing := context.WithCancel(context.Background())
	pub := &publisher{js: server.JetStream(), partitions: partitions, perMsg: 5, msgs: make([]int, partitions)}
	// The stream must exist before the first publish.
	a := startReplica(t, external, srv.URL, "a")
	published := make(chan error, 1)
	go func() {
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				published <- nil
				return
			case <-tick.C:
			}
			if err := pub.publish(context.Background(), i%partitions); err != nil {
				published <- err
				return
			}
		}
	}()

	progress := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			<-tick.C
		}
	}
	sentBy := func(r *replica) float64 { return testutil.ToFloat64(r.w.metrics.itemsSent) }
	progress("one writer sending", func() bool { return sentBy(a) > 500 })

	b := startReplica(t, external, srv.URL, "b")
	c := startReplica(t, external, srv.URL, "c")
	progress("three writers sending", func() bool { return sentBy(b) > 200 && sentBy(c) > 200 })
	if a.owned(t) > 3 || b.owned(t) > 3 || c.owned(t) > 3 {
		t.Errorf("partitions held %v/%v/%v, want at most ceil(8/3)=3 each", a.owned(t), b.owned(t), c.owned(t))
	}

	if err := services.StopAndAwaitTerminated(context.Background(), b.w); err != nil {
		t.Fatal(err)
	}
	_ = c.bus.Close() // a crash, as far as the bus can tell
	progress("the last writer taking every partition", func() bool { return a.owned(t) == partitions })
	stopPublishing()
	if err := <-published; err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for p := range partitions {
				t.Logf("partition %d: published %d samples, referee holds %d", p, pub.msgs[p]*pub.perMsg, ref.count("p"+strconv.Itoa(p)))
			}
			for _, r := range []*replica{a, b, c} {
				mfs, _ := r.reg.Gather()
				for _, mf := range mfs {
					for _, m := range mf.GetMetric() {
						if v := m.GetCounter().GetValue() + m.GetGauge().GetValue(); v != 0 {
							t.Logf("%s %s %v", mf.GetName(), m.GetLabel(), v)
						}
					}
				}
			}
		}
	})
	for p := range partitions {
		want := pub.msgs[p] * pub.perMsg
		progress(fmt.Sprintf("every sample of partition %d", p), func() bool { return ref.count("p"+strconv.Itoa(p)) >= want })
		if got := ref.count("p" + strconv.Itoa(p)); got != want {
			t.Errorf("partition %d: referee holds %d samples, %d were published", p, got, want)
		}
	}
	ref.mu.Lock()
	defer ref.mu.Unlock()
	for _, l := range ref.lost {
		t.Error(l)
	}
	var held, resent float64
	for _, r := range []*replica{a, b, c} {
		held += testutil.ToFloat64(r.w.metrics.itemsResentHeld)
		resent += testutil.ToFloat64(r.w.metrics.itemsResent)
		if n := testutil.ToFloat64(r.w.metrics.itemsRejected.WithLabelValues("out_of_order")); n > 0 {
			t.Errorf("a writer counted %v samples refused as out of order", n)
		}
	}
	// Every refusal was of a message sent again, and counted so.
	if want := float64(ref.resent * pub.perMsg); held != want || resent < held {
		t.Errorf("writers counted %v samples as already held (of %v resent), the referee refused %v", held, resent, want)
	}
	t.Logf("published %v messages; the referee refused %d resent requests as already held, the writers counted %v samples so",
		pub.msgs, ref.resent, held)
}
