package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/grpc"
	_ "google.golang.org/grpc/encoding/gzip" // writer-tempo gzips its exports
)

// spanCounter is an OTLP gRPC trace server that counts spans.
type spanCounter struct {
	ptraceotlp.UnimplementedGRPCServer
	spans atomic.Int64
}

func (c *spanCounter) Export(_ context.Context, req ptraceotlp.ExportRequest) (ptraceotlp.ExportResponse, error) {
	c.spans.Add(int64(req.Traces().SpanCount()))
	return ptraceotlp.NewExportResponse(), nil
}

// serveSpanCounter starts a spanCounter on a loopback port.
func serveSpanCounter() (c *spanCounter, addr string, stop func(), err error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", nil, err
	}
	c = &spanCounter{}
	srv := grpc.NewServer()
	ptraceotlp.RegisterGRPCServer(srv, c)
	go func() { _ = srv.Serve(l) }()
	return c, l.Addr().String(), srv.Stop, nil
}

// tracesConfig receives OTLP gRPC on otlpPort and exports to tempoAddr;
// natsYAML is the nats: section.
func tracesConfig(httpAddr, natsYAML, tempoAddr, otlpPort string) string {
	return fmt.Sprintf(`cluster: {name: bench}
server: {httpListenAddress: %q, logLevel: warn}
nats: %s
externalServices:
  prometheus: {host: "http://127.0.0.1:1"}
  tempo: {host: "http://%s"}
metrics: {enabled: false}
logs: {enabled: false}
traces: {enabled: true}
receivers: {grpc: {port: %s}, http: {enabled: false}, zipkin: {enabled: false}}
`, httpAddr, natsYAML, tempoAddr, otlpPort)
}

// runTraces sends spans with telemetrygen (several workers at a finite
// rate: rate 0 makes telemetrygen drop spans in the client) to the
// all-in-one's OTLP gRPC receiver and counts what writer-tempo delivers.
func runTraces(o options) error {
	counter, counterAddr, stop, err := serveSpanCounter()
	if err != nil {
		return err
	}
	defer stop()
	dir, httpAddr, cleanup, err := workspace("watershed-bench-traces-")
	if err != nil {
		return err
	}
	defer cleanup()
	otlpAddr, err := freeAddr()
	if err != nil {
		return err
	}
	_, otlpPort, _ := net.SplitHostPort(otlpAddr)
	cfg := tracesConfig(httpAddr, embeddedNATS(dir, "127.0.0.1:-1"), counterAddr, otlpPort)

	// telemetrygen's --rate is spans per second per worker; each trace is
	// a parent and o.childSpans children.
	perWorker := o.spanRate / float64(o.workers)
	ctx, cancel := context.WithTimeout(context.Background(), o.warmup+o.duration+10*time.Second)
	defer cancel()
	load := exec.CommandContext(ctx, o.telemetrygen, "traces",
		"--otlp-endpoint", otlpAddr, "--otlp-insecure",
		"--workers", strconv.Itoa(o.workers), "--rate", strconv.FormatFloat(perWorker, 'f', 2, 64),
		"--child-spans", strconv.Itoa(o.childSpans), "--batch-size", strconv.Itoa(o.batchSize), "--duration", (o.warmup + o.duration + 5*time.Second).String(),
		"--service", "bench")
	loadLog, err := os.Create(filepath.Join(dir, "telemetrygen.log"))
	if err != nil {
		return err
	}
	defer loadLog.Close()
	load.Stdout, load.Stderr = loadLog, loadLog
	// telemetrygen starts once the receiver listens: measure waits o.warmup first.
	go func() {
		time.Sleep(2 * time.Second) // let the all-in-one bind its receivers; a benchmark phase
		_ = load.Run()
	}()
	var state string
	m, err := measure(o, dir, httpAddr, cfg, counter.spans.Load, func() {
		state = metricLines(httpAddr, append([]string{"watershed_receiver_items_accepted_total", "watershed_receiver_items_refused_total",
			"watershed_writer_items_sent_total", "watershed_writer_requests_total"}, lostDeliveries...)...)
	})
	if err != nil {
		return err
	}
	fmt.Printf("traces end to end: telemetrygen, %d workers, %.0f spans/s offered (%d child spans per trace, %d spans per request), OTLP gRPC into the all-in-one, writer-tempo to a counting OTLP server; %s measured after %s warm-up\n",
		o.workers, o.spanRate, o.childSpans, o.batchSize, o.duration, o.warmup)
	fmt.Printf("| spans delivered/s | CPU-s per 1M spans | cores used | spans/s per core | peak RSS |\n")
	fmt.Printf("| --- | --- | --- | --- | --- |\n")
	rate := m.delivered / m.elapsed.Seconds()
	cores := m.cpu / m.elapsed.Seconds()
	fmt.Printf("| %.0f | %.3f | %.2f | %.0f | %.1f MiB |\n", rate, m.cpu/(m.delivered/1e6), cores, rate/cores, float64(m.rss)/(1<<20))
	fmt.Println(state)
	return nil
}
