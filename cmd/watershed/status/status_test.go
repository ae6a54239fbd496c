package status

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/watershed-dev/watershed/platform/bus"
	"github.com/watershed-dev/watershed/platform/bus/bustest"
	"github.com/watershed-dev/watershed/platform/partgroup"
	"github.com/watershed-dev/watershed/proto/watershedv1"
	"github.com/watershed-dev/watershed/services/node-collector/collector"
)

func TestGatherAndPrint(t *testing.T) {
	cfg := bustest.NATSConfig(t.TempDir())
	b := bustest.Open(t, cfg)
	ctx := context.Background()
	js := b.JetStream()
	raw, err := bus.EnsureStream(ctx, js, bus.RawStreamConfig(cfg))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		msg := nats.NewMsg(bus.RawSubject(bus.SignalLogs, i))
		msg.Data = []byte("payload")
		if _, err := js.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}
	cons, err := raw.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "router", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(1)
	if err != nil {
		t.Fatal(err)
	}
	for range batch.Messages() { // delivered, not acked
	}
	kv, err := collector.EnsureHeartbeatBucket(ctx, js, 1)
	if err != nil {
		t.Fatal(err)
	}
	hb, _ := proto.Marshal(&watershedv1.CollectorHeartbeat{Name: "node-a", Targets: 2, SamplesPublished: 100, AssignmentEpoch: 7,
		TargetsHealth: []*watershedv1.TargetHealth{{Id: "a", Health: "up"}, {Id: "b", Health: "down"}}})
	if _, err := kv.Put(ctx, "node-a", hb); err != nil {
		t.Fatal(err)
	}

	// Two writer replicas: w1 holds partitions 0 and 1, w2 holds 2; 3 is
	// between owners.
	groups, err := partgroup.EnsureBucket(ctx, js, bus.PartitionGroupsBucket, time.Minute, 1)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]string{
		"writer-prometheus.m.w1": "", "writer-prometheus.m.w2": "",
		"writer-prometheus.p.0": "w1", "writer-prometheus.p.1": "w1", "writer-prometheus.p.2": "w2",
	} {
		if _, err := groups.Put(ctx, k, []byte(v)); err != nil {
			t.Fatal(err)
		}
	}

	// A minute from now, the oldest message nobody acknowledged is a minute old.
	r, err := Gather(ctx, js, 4, time.Now().Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Streams) == 0 || r.Streams[0].Name != bus.RawStream {
		t.Fatalf("streams %+v", r.Streams)
	}
	s := r.Streams[0]
	if s.Messages != 3 || s.Consumers != 1 || s.Pending != 2 || s.AckPending != 1 || s.LimitBytes <= 0 || s.OldestAge <= 0 {
		t.Errorf("WS_RAW = %+v, want 3 messages, 1 consumer, 2 not delivered, 1 not acked", s)
	}
	if s.OldestUnacked < time.Minute || s.OldestUnacked > 2*time.Minute {
		t.Errorf("oldest not acknowledged %s, want about a minute", s.OldestUnacked)
	}
	if len(r.Collectors) != 1 || r.Collectors[0] != (Collector{Name: "node-a", Age: r.Collectors[0].Age, Targets: 2, Down: 1, SamplesSent: 100, AssignmentEpoch: 7}) {
		t.Errorf("collectors %+v", r.Collectors)
	}
	if len(r.Groups) != 1 || r.Groups[0].Name != "writer-prometheus" || r.Groups[0].Held["w1"] != 2 || r.Groups[0].Held["w2"] != 1 || r.Groups[0].Unheld != 1 {
		t.Errorf("groups %+v, want writer-prometheus with w1:2 w2:1 and 1 not held", r.Groups)
	}
	var out bytes.Buffer
	if err := Print(&out, r); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"STREAM", "OLDEST NOT ACKED", "WS_RAW", "COLLECTOR", "node-a", "GROUP", "w1:2 w2:1"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

func TestBytesString(t *testing.T) {
	for in, want := range map[uint64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 3 << 30: "3.0 GiB"} {
		if got := bytesString(in); got != want {
			t.Errorf("bytesString(%d) = %q, want %q", in, got, want)
		}
	}
}
