package httpwriter

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
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

// newDelivered is message seq of the stream, delivered that many times,
// holding samples samples at timestamp seq.
func newDelivered(seq uint64, delivered uint64, samples int) *fakeMsg {
	var b remotewrite.Builder
	for j := 0; j < samples; j++ {
		b.AppendSample(labels.FromStrings("__name__", "m", "j", strconv.Itoa(j)), int64(seq), 1, nil)
	}
	h := nats.Header{}
	h.Set(bus.HeaderCount, strconv.Itoa(samples))
	md := jetstream.MsgMetadata{NumDelivered: delivered}
	md.Sequence.Stream = seq
	return &fakeMsg{data: remotewrite.Compress(nil, b.Bytes()), headers: h, md: md, acks: new([]string)}
}

// scriptedSender answers requests from a script, then accepts them, and
// records each request's samples by message (their timestamps are the
// messages' stream sequences).
type scriptedSender struct {
	script   []error
	requests []string
}

func (s *scriptedSender) Send(_ context.Context, _ string, req *remotewrite.Joiner) (Result, error) {
	var wr prompb.WriteRequest
	if err := wr.Unmarshal(req.Uncompressed()); err != nil {
		return Result{}, &SendError{Class: Permanent, Reason: "bad_request", Err: err}
	}
	var seqs []string
	for _, ts := range wr.Timeseries {
		if s := fmt.Sprint(ts.Samples[0].Timestamp); len(seqs) == 0 || seqs[len(seqs)-1] != s {
			seqs = append(seqs, s)
		}
	}
	s.requests = append(s.requests, strings.Join(seqs, "+"))
	if len(s.script) > 0 {
		err := s.script[0]
		s.script = s.script[1:]
		if err != nil {
			return Result{}, err
		}
	}
	return Result{Bytes: len(req.Uncompressed())}, nil
}

// A message the bus delivered before (redelivered after AckWait, or by a
// new consumer leader) may be held by the backend already: it goes alone,
// and a refusal as out of order counts as a resend already held, without
// taking fresh messages down with it.
func TestRedeliveredMessagesGoAlone(t *testing.T) {
	outOfOrder := &SendError{Class: Permanent, Reason: "out_of_order", Err: fmt.Errorf("out of order sample")}
	for _, tc := range []struct {
		name      string
		delivered []uint64 // NumDelivered of messages 1, 2, 3
		script    []error
		requests  string
		held      float64 // samples counted as resent already held
		sent      float64
	}{
		{name: "first deliveries are joined", delivered: []uint64{1, 1, 1}, requests: "1+2+3", sent: 30},
		{name: "a redelivered message goes alone", delivered: []uint64{2, 1, 1}, script: []error{outOfOrder}, requests: "1,2+3", held: 10, sent: 20},
		{name: "a redelivered message the backend takes", delivered: []uint64{1, 3, 1}, requests: "1,2,3", sent: 30},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sender := &scriptedSender{script: tc.script}
			w := New(Config{
				Protocol: Protocol{Destination: bus.DestinationPrometheus},
				Queue:    Queue{MaxItemsPerSend: 1000, MinBackoff: time.Millisecond, MaxBackoff: time.Millisecond, AckWait: time.Minute},
				Sender:   sender,
			}, nil, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
			p := &partitionWriter{w: w, partition: 1}
			ctx := context.Background()
			for i, d := range tc.delivered {
				if err := p.add(ctx, newDelivered(uint64(i+1), d, 10)); err != nil {
					t.Fatal(err)
				}
			}
			if err := p.finish(ctx); err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(sender.requests, ","); got != tc.requests {
				t.Errorf("requests %s, want %s", got, tc.requests)
			}
			if got := testutil.ToFloat64(w.metrics.itemsResentHeld); got != tc.held {
				t.Errorf("resent already held %v, want %v", got, tc.held)
			}
			if got := testutil.ToFloat64(w.metrics.itemsSent); got != tc.sent {
				t.Errorf("sent %v, want %v", got, tc.sent)
			}
			if got := testutil.ToFloat64(w.metrics.itemsRejected.WithLabelValues("out_of_order")); got != 0 {
				t.Errorf("rejected as out of order %v, want 0", got)
			}
		})
	}
}
