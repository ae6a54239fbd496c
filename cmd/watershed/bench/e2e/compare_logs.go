package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"

	"github.com/klauspost/compress/s2"
	"go.opentelemetry.io/collector/pdata/plog/plogotlp"
)

// logsReceiver is a Loki-protocol server that, like Loki 3, also takes
// OTLP HTTP logs: it decodes every request and counts the lines.
type logsReceiver struct {
	lines    atomic.Int64
	rejected atomic.Int64
}

func (r *logsReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(req.Body)
	if err != nil {
		r.refuse(w, err)
		return
	}
	switch req.URL.Path {
	case "/loki/api/v1/push":
		if body, err = s2.Decode(nil, body); err != nil {
			r.refuse(w, fmt.Errorf("snappy: %w", err))
			return
		}
		n, err := countLines(body)
		if err != nil {
			r.refuse(w, err)
			return
		}
		r.lines.Add(int64(n))
		w.WriteHeader(http.StatusNoContent)
	case "/v1/logs":
		if req.Header.Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(bytes.NewReader(body))
			if err == nil {
				body, err = io.ReadAll(zr)
			}
			if err != nil {
				r.refuse(w, fmt.Errorf("gzip: %w", err))
				return
			}
		}
		er := plogotlp.NewExportRequest()
		if err := er.UnmarshalProto(body); err != nil {
			r.refuse(w, fmt.Errorf("otlp logs: %w", err))
			return
		}
		r.lines.Add(int64(er.Logs().LogRecordCount()))
		resp, _ := plogotlp.NewExportResponse().MarshalProto()
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(resp)
	default:
		http.NotFound(w, req)
	}
}

func (r *logsReceiver) refuse(w http.ResponseWriter, err error) {
	r.rejected.Add(1)
	http.Error(w, err.Error(), http.StatusBadRequest)
}

// runCompareLogs writes CRI files at o.logRate for each agent in turn
// (fresh files each time), tailed by Watershed (all-in-one and
// microservices) and by the OpenTelemetry Collector's filelog receiver,
// all delivering to one counting Loki-protocol server.
func runCompareLogs(o options) error {
	recv := &logsReceiver{}
	recvAddr, err := serve(recv)
	if err != nil {
		return err
	}
	files := func(dir string) []string {
		var out []string
		for i := range o.logFiles {
			out = append(out, filepath.Join(dir, "logs", fmt.Sprintf("app-%d.log", i)))
		}
		return out
	}
	results := runAgents(o, selectedAgents(o, logsAgents(o, recvAddr)), recv.lines.Load, window{
		prepare: func(dir string) error { return os.MkdirAll(filepath.Join(dir, "logs"), 0o755) },
		load: func(ctx context.Context, dir string) error {
			return writeLogs(ctx, files(dir), o.logRate*(1<<20))
		},
	})
	var ref *agentResult
	if results[0].name == "watershed all-in-one" {
		ref = &results[0]
	}
	linesPerCPU := func(r agentResult) float64 { return r.delivered / r.cpu }
	fmt.Printf("\nlogs side by side: %d CRI files written at %.0f MiB/s in all (200-byte lines), one counting Loki-protocol server (Loki push, OTLP HTTP); %s measured after %s warm-up; CPU and peak RSS summed over each agent's processes\n",
		o.logFiles, o.logRate, o.duration, o.warmup)
	printTable(results, []column{
		{"lines delivered/s", func(r agentResult) string { return fmt.Sprintf("%.0f", r.delivered/r.elapsed.Seconds()) }},
		{"lines per CPU-s", func(r agentResult) string { return fmt.Sprintf("%.0f", linesPerCPU(r)) }},
		{"x Watershed all-in-one", ratioTo(ref, linesPerCPU)},
		{"cores used", func(r agentResult) string { return fmt.Sprintf("%.3f", r.cpu/r.elapsed.Seconds()) }},
		{"peak RSS", func(r agentResult) string { return mib(r.rss) }},
		{"file MiB per CPU-s of the node's process", func(r agentResult) string {
			cpu := r.cpu
			if c, ok := r.cpuByRole["node-collector"]; ok {
				cpu = c // what each node pays: the rest runs once per cluster
			}
			return fmt.Sprintf("%.0f", r.delivered*200/(1<<20)/cpu)
		}},
		{"CPU by process", roleShares},
		{"peak RSS by process", roleRSS},
	})
	if rejected := recv.rejected.Load(); rejected > 0 {
		return fmt.Errorf("receiver refused %d requests", rejected)
	}
	return nil
}

// logsAgents are the contenders of a logs run, in the order they run.
func logsAgents(o options, recvAddr string) []agent {
	cfg := func(dir, httpAddr, natsYAML string) string {
		return logsConfig(httpAddr, natsYAML, recvAddr, filepath.Join(dir, "logs", "*.log"), filepath.Join(dir, "positions"))
	}
	return []agent{
		{name: "watershed all-in-one", start: func(ctx context.Context, dir string) ([]*agentProcess, error) {
			httpAddr, err := freeAddr()
			if err != nil {
				return nil, err
			}
			p, err := startWatershed(ctx, o, dir, "watershed", cfg(dir, httpAddr, embeddedNATS(dir, "127.0.0.1:-1")))
			if err != nil {
				return nil, err
			}
			return []*agentProcess{p}, nil
		}},
		{name: "watershed microservices", start: func(ctx context.Context, dir string) ([]*agentProcess, error) {
			return startMicroservices(ctx, o, dir, func(httpAddr, natsYAML string) string {
				return cfg(dir, httpAddr, natsYAML)
			}, "node-collector", "router", "writer-loki")
		}},
		{name: "otelcol " + otelcolVersion, start: func(ctx context.Context, dir string) ([]*agentProcess, error) {
			storage := filepath.Join(dir, "otel-storage")
			if err := os.MkdirAll(storage, 0o755); err != nil {
				return nil, err
			}
			return startOtelcol(ctx, o, dir, fmt.Sprintf(`extensions:
  file_storage: {directory: %q}
receivers:
  file_log:
    include: [%q]
    start_at: beginning
    include_file_path: true
    storage: file_storage
    operators:
      - {type: container, format: containerd, add_metadata_from_filepath: false}
processors:
  batch: {}
exporters:
  otlp_http: {endpoint: "http://%s"}
service:
  extensions: [file_storage]
  telemetry: {logs: {level: warn}, metrics: {level: none}}
  pipelines:
    logs: {receivers: [file_log], processors: [batch], exporters: [otlp_http]}
`, storage, filepath.Join(dir, "logs", "*.log"), recvAddr))
		}},
	}
}

// startOtelcol runs the OpenTelemetry Collector with the configuration cfg.
func startOtelcol(ctx context.Context, o options, dir, cfg string) ([]*agentProcess, error) {
	file := filepath.Join(dir, "otelcol.yaml")
	if err := os.WriteFile(file, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	p, err := startAgentProcess(ctx, dir, "otelcol", o.otelcol, "--config="+file)
	if err != nil {
		return nil, err
	}
	return []*agentProcess{p}, nil
}
