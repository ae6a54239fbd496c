package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"
)

// runCompareTraces sends spans with telemetrygen at o.spanRate into
// Watershed (all-in-one and microservices) and into the OpenTelemetry
// Collector (OTLP receiver, batch, OTLP exporter) in turn, all exporting
// to one counting OTLP server.
func runCompareTraces(o options) error {
	counter, counterAddr, stop, err := serveSpanCounter()
	if err != nil {
		return err
	}
	defer stop()
	// Every agent in turn takes spans on the same address.
	otlpAddr, err := freeAddr()
	if err != nil {
		return err
	}
	results := runAgents(o, selectedAgents(o, tracesAgents(o, otlpAddr, counterAddr)), counter.spans.Load, window{
		load: func(ctx context.Context, dir string) error { return sendSpans(ctx, o, dir, otlpAddr) },
	})
	var ref *agentResult
	if results[0].name == "watershed all-in-one" {
		ref = &results[0]
	}
	spansPerCPU := func(r agentResult) float64 { return r.delivered / r.cpu }
	fmt.Printf("\ntraces side by side: telemetrygen, %d workers, %.0f spans/s offered (%d child spans per trace, %d spans per request) over OTLP gRPC, exported to one counting OTLP server; %s measured after %s warm-up; CPU and peak RSS summed over each agent's processes\n",
		o.workers, o.spanRate, o.childSpans, o.batchSize, o.duration, o.warmup)
	printTable(results, []column{
		{"spans delivered/s", func(r agentResult) string { return fmt.Sprintf("%.0f", r.delivered/r.elapsed.Seconds()) }},
		{"spans per CPU-s", func(r agentResult) string { return fmt.Sprintf("%.0f", spansPerCPU(r)) }},
		{"x Watershed all-in-one", ratioTo(ref, spansPerCPU)},
		{"cores used", func(r agentResult) string { return fmt.Sprintf("%.3f", r.cpu/r.elapsed.Seconds()) }},
		{"peak RSS", func(r agentResult) string { return mib(r.rss) }},
		{"CPU by process", roleShares},
		{"peak RSS by process", roleRSS},
	})
	return nil
}

// sendSpans runs telemetrygen against otlpAddr once it listens, until ctx
// ends.
func sendSpans(ctx context.Context, o options, dir, otlpAddr string) error {
	if err := awaitListening(otlpAddr, time.Minute); err != nil {
		return err
	}
	// telemetrygen's --rate is spans per second per worker.
	perWorker := o.spanRate / float64(o.workers)
	load := exec.CommandContext(ctx, o.telemetrygen, "traces",
		"--otlp-endpoint", otlpAddr, "--otlp-insecure",
		"--workers", strconv.Itoa(o.workers), "--rate", strconv.FormatFloat(perWorker, 'f', 2, 64),
		"--child-spans", strconv.Itoa(o.childSpans), "--batch-size", strconv.Itoa(o.batchSize),
		"--duration", (o.warmup + o.duration + time.Minute).String(), "--service", "bench")
	logFile, err := os.Create(filepath.Join(dir, "telemetrygen.log"))
	if err != nil {
		return err
	}
	defer logFile.Close()
	load.Stdout, load.Stderr = logFile, logFile
	if err := load.Run(); err != nil && ctx.Err() == nil {
		out, _ := os.ReadFile(logFile.Name())
		return fmt.Errorf("telemetrygen: %w: %s", err, tail(out, 1000))
	}
	return ctx.Err()
}

// tracesAgents are the contenders of a traces run, in the order they run.
func tracesAgents(o options, otlpAddr, counterAddr string) []agent {
	_, otlpPort, _ := net.SplitHostPort(otlpAddr)
	return []agent{
		{name: "watershed all-in-one", start: func(ctx context.Context, dir string) ([]*agentProcess, error) {
			httpAddr, err := freeAddr()
			if err != nil {
				return nil, err
			}
			p, err := startWatershed(ctx, o, dir, "watershed", tracesConfig(httpAddr, embeddedNATS(dir, "127.0.0.1:-1"), counterAddr, otlpPort))
			if err != nil {
				return nil, err
			}
			return []*agentProcess{p}, nil
		}},
		{name: "watershed microservices", start: func(ctx context.Context, dir string) ([]*agentProcess, error) {
			return startMicroservices(ctx, o, dir, func(httpAddr, natsYAML string) string {
				return tracesConfig(httpAddr, natsYAML, counterAddr, otlpPort)
			}, "router", "writer-tempo")
		}},
		{name: "otelcol " + otelcolVersion, start: func(ctx context.Context, dir string) ([]*agentProcess, error) {
			return startOtelcol(ctx, o, dir, fmt.Sprintf(`receivers:
  otlp:
    protocols:
      grpc: {endpoint: %q}
processors:
  batch: {}
exporters:
  otlp_grpc:
    endpoint: %q
    tls: {insecure: true}
service:
  telemetry: {logs: {level: warn}, metrics: {level: none}}
  pipelines:
    traces: {receivers: [otlp], processors: [batch], exporters: [otlp_grpc]}
`, otlpAddr, counterAddr))
		}},
	}
}
