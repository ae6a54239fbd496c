package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/grafana/loki/pkg/push"
)

// countLines counts the entries of a Loki push request.
func countLines(body []byte) (int, error) {
	var pr push.PushRequest
	if err := pr.Unmarshal(body); err != nil {
		return 0, err
	}
	n := 0
	for _, s := range pr.Streams {
		n += len(s.Entries)
	}
	return n, nil
}

// logLine is a 200-byte CRI line.
func logLine(i int) string {
	head := fmt.Sprintf("%s stdout F level=info msg=\"request served\" seq=%09d ", time.Now().UTC().Format(time.RFC3339Nano), i)
	return head + strings.Repeat("x", 199-len(head)) + "\n"
}

// writeLogs appends CRI lines to files at rate bytes/s until ctx ends.
func writeLogs(ctx context.Context, files []string, rate float64) error {
	fs := make([]*os.File, len(files))
	for i, name := range files {
		f, err := os.Create(name)
		if err != nil {
			return err
		}
		defer f.Close()
		fs[i] = f
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	start, written, seq := time.Now(), 0.0, 0
	var sb strings.Builder
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		// A writer that fell behind (the machine is busy) catches up by
		// at most a tenth of a second's worth per tick, and the deficit
		// is forgiven: the rate delivered is what is reported.
		if deficit := rate*time.Since(start).Seconds() - written; deficit > rate/10 {
			written += deficit - rate/10
		}
		for i, f := range fs {
			sb.Reset()
			due := rate*time.Since(start).Seconds() - written
			for float64(sb.Len()) < due/float64(len(fs)-i) {
				sb.WriteString(logLine(seq))
				seq++
			}
			written += float64(sb.Len())
			if _, err := f.WriteString(sb.String()); err != nil {
				return err
			}
		}
	}
}

// runLogs measures file to Loki: CRI files written at a fixed rate, tailed
// by the all-in-one, delivered to a counting Loki-protocol receiver.
func runLogs(o options) error {
	recv := &receiver{count: countLines}
	recvAddr, err := serve(recv)
	if err != nil {
		return err
	}
	dir, httpAddr, cleanup, err := workspace("watershed-bench-logs-")
	if err != nil {
		return err
	}
	defer cleanup()
	var files []string
	for i := range o.logFiles {
		files = append(files, filepath.Join(dir, "logs", fmt.Sprintf("app-%d.log", i)))
	}
	if err := os.MkdirAll(filepath.Join(dir, "logs"), 0o755); err != nil {
		return err
	}
	logsConfig := func(httpAddr, nats string) string {
		return logsConfig(httpAddr, nats, recvAddr, filepath.Join(dir, "logs", "*.log"), filepath.Join(dir, "positions"))
	}
	embedded := func(listen string) string { return embeddedNATS(dir, listen) }
	cfg := logsConfig(httpAddr, embedded("127.0.0.1:-1"))
	var targetArgs []string
	if o.collectorOnly {
		// Router and writer-loki in a process of their own, with the
		// embedded JetStream; the node collector, measured, connects to it.
		natsAddr, err := freeAddr()
		if err != nil {
			return err
		}
		restHTTP, err := freeAddr()
		if err != nil {
			return err
		}
		stop, err := startRest(o, dir, logsConfig(restHTTP, embedded(natsAddr)))
		if err != nil {
			return err
		}
		defer stop()
		cfg = logsConfig(httpAddr, externalNATS(natsAddr))
		targetArgs = []string{"-target=node-collector"}
	}
	writeCtx, stopWriting := context.WithCancel(context.Background())
	defer stopWriting()
	writeErr := make(chan error, 1)
	go func() { writeErr <- writeLogs(writeCtx, files, o.logRate*(1<<20)) }()
	var state string
	m, err := measure(o, dir, httpAddr, cfg, recv.items.Load, func() {
		state = metricLines(httpAddr, "watershed_logs_lines_total{kind=\"file\"}", "watershed_logs_position_writes_total",
			"watershed_bus_published_messages_total{component=\"logtail\"", "watershed_writer_requests_total")
	}, targetArgs...)
	stopWriting()
	if werr := <-writeErr; err == nil {
		err = werr
	}
	if err != nil {
		return err
	}
	lines, cpu, elapsed, rss := m.delivered, m.cpu, m.elapsed, m.rss
	fileBytes := lines * 200 // each line is 200 bytes in its file
	measured := "the all-in-one process"
	if o.collectorOnly {
		measured = "the node-collector process alone"
	}
	fmt.Printf("logs end to end: %d CRI files written at %.0f MiB/s in all (200-byte lines), %s measured after %s warm-up; CPU and RSS of %s\n",
		o.logFiles, o.logRate, o.duration, o.warmup, measured)
	fmt.Printf("| lines delivered/s | file MiB/s delivered | CPU-s per GiB of file | cores used | peak RSS |\n")
	fmt.Printf("| --- | --- | --- | --- | --- |\n")
	fmt.Printf("| %.0f | %.1f | %.2f | %.3f | %.1f MiB |\n",
		lines/elapsed.Seconds(), fileBytes/(1<<20)/elapsed.Seconds(), cpu/(fileBytes/(1<<30)), cpu/elapsed.Seconds(), float64(rss)/(1<<20))
	fmt.Println(state)
	if rejected := recv.rejected.Load(); rejected > 0 {
		return fmt.Errorf("receiver refused %d requests", rejected)
	}
	return nil
}

// logsConfig tails the CRI files of glob and pushes them to recvAddr;
// natsYAML is the nats: section.
func logsConfig(httpAddr, natsYAML, recvAddr, glob, positionsDir string) string {
	return fmt.Sprintf(`cluster: {name: bench}
server: {httpListenAddress: %q, logLevel: warn}
nats: %s
externalServices:
  prometheus: {host: "http://127.0.0.1:1"}
  loki: {host: "http://%s"}
metrics: {enabled: false}
receivers: {grpc: {enabled: false}, http: {enabled: false}, zipkin: {enabled: false}}
logs:
  pod_logs: {enabled: false}
  files: [{path: %q, format: cri, labels: {job: bench}}]
  tail: {positionsDirectory: %q}
`, httpAddr, natsYAML, recvAddr, glob, positionsDir)
}

// startRest runs the router and writer-loki, with the embedded JetStream,
// as a process of their own, unmeasured.
func startRest(o options, dir, cfg string) (stop func(), err error) {
	rest := filepath.Join(dir, "rest")
	if err := os.MkdirAll(rest, 0o755); err != nil {
		return nil, err
	}
	cfgFile := filepath.Join(rest, "rest.yaml")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	logFile, err := os.Create(filepath.Join(rest, "watershed.log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(o.binary, "run", "-config.file="+cfgFile, "-target=router,writer-loki")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", o.binary, err)
	}
	return func() {
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
		_ = logFile.Close()
	}, nil
}
