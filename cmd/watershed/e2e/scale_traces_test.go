package e2e

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// TestTraceWritersScaleOutAndCrash runs writer-tempo as separate
// processes against an OTLP trace server while SDKs of eight services send
// spans through the router's receiver: one writer, then two, then one
// killed with SIGKILL while spans keep coming. Every span must arrive; a
// span may arrive twice only if the survivor sent it again after the kill.
func TestTraceWritersScaleOutAndCrash(t *testing.T) {
	ts := startTraceServer(t)
	cfg := baseConfig(t, t.TempDir(), "http://127.0.0.1:1")
	cfg.NATS.ListenAddress = freeAddr(t)
	cfg.NATS.Partitions = 8
	cfg.NATS.Groups.Lease = 2 * time.Second
	cfg.Metrics.Enabled = false
	tracesConfig(t, cfg, ts.addr)
	startAllInOne(t, cfg, "router")
	writerCfg := *cfg
	writerCfg.NATS.URL = "nats://" + cfg.NATS.ListenAddress
	ctx := context.Background()

	// Eight services: a resource is a partition key, so they spread.
	var tps []*sdktrace.TracerProvider
	for i := range 8 {
		exp, err := otlptracegrpc.New(ctx, otlptracegrpc.WithEndpoint(cfg.Receivers.Address(cfg.Receivers.GRPC)), otlptracegrpc.WithInsecure())
		if err != nil {
			t.Fatal(err)
		}
		tp := tracer(exp, fmt.Sprintf("svc-%d", i))
		t.Cleanup(func() { _ = tp.Shutdown(ctx) })
		tps = append(tps, tp)
	}
	emitted := 0
	round := 0
	emitRound := func(n int) {
		round++
		for i, tp := range tps {
			emit(t, tp, fmt.Sprintf("r%d-s%d", round, i), n)
			emitted += n
		}
	}
	sent := func(w *watershedProcess) float64 { return w.metric("watershed_writer_items_sent_total") }
	owned := func(w *watershedProcess) float64 {
		return w.metric("watershed_partition_group_partitions_owned", `group="writer-tempo"`)
	}

	first := startWatershedProcess(t, "writer-tempo-1", &writerCfg, "writer-tempo")
	emitRound(200)
	waitFor(t, 30*time.Second, "writer-tempo-1 delivering", func() (bool, string) {
		return sent(first) > 0, "nothing sent"
	})
	second := startWatershedProcess(t, "writer-tempo-2", &writerCfg, "writer-tempo")
	waitFor(t, 30*time.Second, "two writers sharing the partitions", func() (bool, string) {
		emitRound(20)
		return owned(first) == 4 && owned(second) == 4 && sent(second) > 0, fmt.Sprintf("owned %v/%v", owned(first), owned(second))
	})
	emitRound(200)
	second.signal(syscall.SIGKILL)
	emitRound(200)
	waitFor(t, 30*time.Second, "writer-tempo-1 holding every partition", func() (bool, string) {
		return owned(first) == 8, fmt.Sprintf("owned %v", owned(first))
	})
	emitRound(100)

	waitFor(t, 60*time.Second, "every span at the trace server", func() (bool, string) {
		n := len(ts.named("r"))
		return n == emitted, fmt.Sprintf("%d of %d distinct spans", n, emitted)
	})
	ts.mu.Lock()
	duplicates := ts.total - len(ts.spans)
	ts.mu.Unlock()
	resent := first.metric("watershed_writer_items_resent_total")
	if float64(duplicates) > resent {
		t.Errorf("%d spans arrived twice, more than the %v the surviving writer sent again", duplicates, resent)
	}
	if r := first.metric("watershed_writer_items_rejected_total"); r != 0 {
		t.Errorf("writer-tempo-1 counted %v spans refused", r)
	}
	t.Logf("spans emitted=%d received=%d distinct, %d duplicates (resent after the kill: %v)", emitted, len(ts.named("r")), duplicates, resent)
}
