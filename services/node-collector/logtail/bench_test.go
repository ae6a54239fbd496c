package logtail

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/grafana/dskit/services"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/watershed-dev/watershed/platform/bus"
	"github.com/watershed-dev/watershed/platform/bus/bustest"
	"github.com/watershed-dev/watershed/platform/config"
)

func BenchmarkParseRead(b *testing.B) {
	var data strings.Builder
	for i := 0; data.Len() < 512<<10; i++ {
		fmt.Fprintf(&data, "2026-11-25T10:00:00.%09dZ stdout F level=info msg=\"request served\" path=/api/v1/items/%d status=200 duration=%dms\n", i, i, i%1000)
	}
	buf := []byte(data.String())
	bt := &batch{src: testSource(formatCRI), limits: limits{maxLineSize: 256 << 10, maxPartialLines: 100}}
	now := time.Now()
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		bt.parseRead(buf, parseMode{now: now})
		_ = bt.body(nil)
	}
}

// BenchmarkTailFileToBus tails a 200-byte-line CRI file into a real
// embedded JetStream, each batch acknowledged before its position moves,
// and reports MiB per CPU-second of the whole process (tailer, bus client
// and server).
func BenchmarkTailFileToBus(b *testing.B) {
	dir := b.TempDir()
	line := "2026-11-25T10:00:00.000000000Z stdout F " + strings.Repeat("x", 200-41) + "\n"
	chunk := strings.Repeat(line, (4<<20)/len(line))
	natsCfg := bustest.NATSConfig(filepath.Join(dir, "nats"))
	bs := bustest.Open(b, natsCfg)
	logs := config.Default().Logs
	logs.PodLogs.Enabled = false
	logs.Tail.PositionsDirectory = filepath.Join(dir, "positions")
	logs.Tail.PollInterval = 10 * time.Millisecond
	logs.Files = []config.LogFile{{Path: filepath.Join(dir, "*.log"), Format: config.LogFormatCRI}}
	reg := prometheus.NewRegistry()
	tl := New(Config{Cluster: "bench", Node: "n", Logs: logs, NATS: natsCfg, FlushTimeout: time.Second}, bs, bus.NewPublisherMetrics(reg), reg, slog.New(slog.DiscardHandler))
	if err := services.StartAndAwaitRunning(context.Background(), tl); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = services.StopAndAwaitTerminated(context.Background(), tl) }()
	f, err := os.Create(filepath.Join(dir, "a.log"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	b.SetBytes(int64(len(chunk)))
	b.ReportAllocs()
	var cpu0 syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &cpu0)
	written := 0
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for b.Loop() {
		if _, err := f.WriteString(chunk); err != nil {
			b.Fatal(err)
		}
		written += len(chunk)
		for int(testutil.ToFloat64(tl.sh.metrics.bytesRead.WithLabelValues("file"))) < written {
			<-tick.C // poll until the tailer has it acknowledged
		}
	}
	var cpu1 syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &cpu1)
	cpu := tv(cpu1.Utime) + tv(cpu1.Stime) - tv(cpu0.Utime) - tv(cpu0.Stime)
	b.ReportMetric(float64(written)/(1<<20)/cpu, "MiB/cpu-s")
}

func tv(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
