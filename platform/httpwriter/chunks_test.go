package httpwriter

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"

	"github.com/watershed-dev/watershed/platform/bus"
	"github.com/watershed-dev/watershed/platform/remotewrite"
)

// recordingSender accepts every request and records its samples'
// timestamps and how many each request held.
type recordingSender struct {
	mu       sync.Mutex
	sizes    []int
	accepted []int64
}

func (s *recordingSender) Send(_ context.Context, _ string, req *remotewrite.Joiner) (Result, error) {
	var wr prompb.WriteRequest
	if err := wr.Unmarshal(req.Uncompressed()); err != nil {
		return Result{}, &SendError{Class: Permanent, Reason: "bad_request", Err: err}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, ts := range wr.Timeseries {
		for _, smp := range ts.Samples {
			s.accepted = append(s.accepted, smp.Timestamp)
			n++
		}
	}
	s.sizes = append(s.sizes, n)
	return Result{Bytes: len(req.Uncompressed())}, nil
}

// newUnitPartitionWriter is a partition writer of maxSamplesPerSend 1000
// without a bus, sending to sender.
func newUnitPartitionWriter(sender Sender) *partitionWriter {
	w := New(Config{
		Protocol: Protocol{Destination: bus.DestinationPrometheus},
		Queue:    Queue{MaxItemsPerSend: 1000, MinBackoff: time.Millisecond, MaxBackoff: time.Millisecond, AckWait: time.Minute},
		Sender:   sender,
	}, nil, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	return &partitionWriter{w: w, partition: 1}
}

// chunkedMsg builds a message filled with chunks as a collector fills
// one: chunks of the given sample counts, timestamps from *ts on, with a
// chunk table unless table says otherwise ("" for none, "bad" for one
// that does not fit).
func chunkedMsg(t *testing.T, name string, ts *int64, chunks []int, table string, delivered uint64, acks *[]string) *fakeMsg {
	t.Helper()
	var bl remotewrite.Blocks
	var entries []remotewrite.Chunk
	total := 0
	for _, n := range chunks {
		var b remotewrite.Builder
		for j := range n {
			*ts++
			b.AppendSample(labels.FromStrings("__name__", "m", "j", strconv.Itoa(j)), *ts, 1, nil)
		}
		block := remotewrite.Compress(nil, b.Bytes())
		c, err := remotewrite.ChunkOf(block, n)
		if err != nil {
			t.Fatal(err)
		}
		if err := bl.Append(block); err != nil {
			t.Fatal(err)
		}
		entries = append(entries, c)
		total += n
	}
	h := nats.Header{}
	h.Set(bus.HeaderCount, strconv.Itoa(total))
	switch table {
	case "table":
		h.Set(bus.HeaderChunks, remotewrite.FormatChunkTable(entries))
	case "bad":
		entries[0].Items++
		h.Set(bus.HeaderChunks, remotewrite.FormatChunkTable(entries))
	}
	md := jetstream.MsgMetadata{NumDelivered: delivered}
	return &fakeMsg{data: slices.Clone(bl.Bytes()), headers: h, md: md, acks: acks, name: name}
}

// A message larger than a request is cut where its chunks met: requests
// keep to maxSamplesPerSend, samples arrive once and in order, and a
// request acks the last message it holds entirely (none when it holds only
// the first chunks of one).
func TestWriterCutsMessagesAtTheirChunks(t *testing.T) {
	type msg struct {
		chunks    []int
		table     string // "table", "" or "bad"
		delivered uint64 // 2 for a redelivery, in doubt
	}
	for _, tc := range []struct {
		name  string
		msgs  []msg
		sizes []int    // samples of each request, in order
		acks  []string // messages acked, in order
	}{
		{
			name: "chunks fill requests across messages",
			msgs: []msg{{chunks: []int{400, 400, 400}, table: "table"}, {chunks: []int{300}}, {chunks: []int{500, 500, 100}, table: "table"}},
			// m0's first two chunks; its third with m1; m2's first two
			// (full); its last.
			sizes: []int{800, 700, 1000, 100},
			acks:  []string{"m1", "m2"},
		},
		{
			name:  "a message without a table goes whole",
			msgs:  []msg{{chunks: []int{400, 400, 400}}},
			sizes: []int{1200},
			acks:  []string{"m0"},
		},
		{
			name:  "a table that does not fit sends the message whole",
			msgs:  []msg{{chunks: []int{100}}, {chunks: []int{600, 600}, table: "bad"}},
			sizes: []int{100, 1200},
			acks:  []string{"m0", "m1"},
		},
		{
			name: "the chunks of a redelivered message go one by one",
			msgs: []msg{{chunks: []int{300, 300}, table: "table", delivered: 2}, {chunks: []int{100}}},
			// Alone, so that a refusal as already held takes nothing
			// fresh down with it.
			sizes: []int{300, 300, 100},
			acks:  []string{"m0", "m1"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sender := &recordingSender{}
			p := newUnitPartitionWriter(sender)
			w := p.w
			ctx := context.Background()
			var acks []string // written by the requests' goroutines, read after finish
			var ts int64
			for i, m := range tc.msgs {
				delivered := max(m.delivered, 1)
				if err := p.add(ctx, chunkedMsg(t, fmt.Sprint("m", i), &ts, m.chunks, m.table, delivered, &acks)); err != nil {
					t.Fatal(err)
				}
			}
			if err := p.finish(ctx); err != nil {
				t.Fatal(err)
			}
			assertInOrder(t, sender.accepted, int(ts))
			if !slices.Equal(sender.sizes, tc.sizes) {
				t.Errorf("requests of %v samples, want %v", sender.sizes, tc.sizes)
			}
			if !slices.Equal(acks, tc.acks) {
				t.Errorf("acked %v, want %v", acks, tc.acks)
			}
			if got := testutil.ToFloat64(w.metrics.messagesAcked); got != float64(len(tc.msgs)) {
				t.Errorf("messages acked %v, want %d", got, len(tc.msgs))
			}
			if got := testutil.ToFloat64(w.metrics.itemsSent); got != float64(ts) {
				t.Errorf("samples sent %v, want %d", got, ts)
			}
		})
	}
}

// A chunk whose elements are corrupt is counted as rejected; the other
// chunks of its message are delivered and the message is acked.
func TestWriterRejectsACorruptChunkAlone(t *testing.T) {
	sender := &recordingSender{}
	p := newUnitPartitionWriter(sender)
	w := p.w
	var acks []string
	var ts int64
	m := chunkedMsg(t, "m0", &ts, []int{100, 100, 100}, "table", 1, &acks)
	parts, err := remotewrite.SplitBlock(nil, m.data, m.headers.Get(bus.HeaderChunks), 300)
	if err != nil {
		t.Fatal(err)
	}
	// Spoil the middle chunk: its first element, a literal (a chunk has
	// nothing before it to copy), becomes a copy reaching back before it.
	parts[1].Elements[0] ^= 0xff
	ctx := context.Background()
	if err := p.add(ctx, m); err != nil {
		t.Fatal(err)
	}
	if err := p.finish(ctx); err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(w.metrics.itemsRejected.WithLabelValues("corrupt_payload")); got != 100 {
		t.Errorf("rejected{corrupt_payload} = %v, want 100", got)
	}
	if len(sender.accepted) != 200 || !slices.Equal(acks, []string{"m0"}) {
		t.Errorf("delivered %d samples and acked %v, want 200 and [m0]", len(sender.accepted), acks)
	}
}
