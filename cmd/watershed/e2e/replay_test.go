package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/prometheus/model/labels"

	"github.com/watershed-dev/watershed/cmd/watershed/replay"
	"github.com/watershed-dev/watershed/platform/bus"
	"github.com/watershed-dev/watershed/platform/bus/bustest"
	"github.com/watershed-dev/watershed/platform/config"
	"github.com/watershed-dev/watershed/platform/remotewrite"
)

// bufferPhase stores n scrapes of 5 series named name in the Prometheus
// destination's buffer, as the router would, with samples a minute old
// and one second apart.
func bufferPhase(t *testing.T, js jetstream.JetStream, name string, n int) {
	base := time.Now().Add(-time.Minute).UnixMilli()
	for i := range n {
		var b remotewrite.Builder
		for s := range 5 {
			b.AppendSample(labels.FromStrings("__name__", name, "series", fmt.Sprint(s)), base+int64(i)*1000, float64(i), nil)
		}
		m := nats.NewMsg(bus.DestSubject(bus.DestinationPrometheus, 0))
		m.Data = remotewrite.Compress(nil, b.Bytes())
		m.Header.Set(bus.HeaderCount, "5")
		m.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("%s-%d", name, i))
		if _, err := js.PublishMsg(context.Background(), m); err != nil {
			t.Fatal(err)
		}
	}
}

// TestReplayWindowToSecondBackend: a window of the Prometheus buffer
// replayed to a second, real Prometheus, which then holds exactly that
// window: every sample of it, none from before or after.
func TestReplayWindowToSecondBackend(t *testing.T) {
	natsCfg := bustest.NATSConfig(t.TempDir())
	b := bustest.Open(t, natsCfg)
	js := b.JetStream()
	cfg := config.Default()
	cfg.NATS = natsCfg
	cfg.ExternalServices.Prometheus.Host = "http://127.0.0.1:1" // the first backend, not used here
	if _, err := bus.EnsureStream(context.Background(), js, bus.DestStreamConfig(bus.DestinationPrometheus, cfg.ExternalServices.Prometheus.Buffer, natsCfg.DuplicateWindow)); err != nil {
		t.Fatal(err)
	}
	bufferPhase(t, js, "replay_before", 10)
	from := time.Now()
	bufferPhase(t, js, "replay_inside", 30)
	to := time.Now()
	bufferPhase(t, js, "replay_after", 10)

	second := startPrometheus(t)
	o := replay.Options{Destination: "prometheus", From: from, To: to, ToURL: second.url() + "/api/v1/write"}
	sum, err := replay.Run(context.Background(), js, cfg, o, nil)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Sent != 150 || len(sum.Rejected) != 0 {
		t.Fatalf("summary %+v", sum)
	}
	waitFor(t, 30*time.Second, "the window in the second Prometheus", func() (bool, string) {
		got := second.query(t, `{__name__=~"replay_.*"}[5m]`)
		counts := map[string]float64{}
		for _, s := range got {
			counts[s.Metric["__name__"]] += float64(len(s.Values))
		}
		return len(counts) == 1 && counts["replay_inside"] == 150, fmt.Sprintf("samples by series name: %v", counts)
	})
}
