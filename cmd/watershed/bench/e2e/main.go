// Command e2e is the end-to-end benchmark. For metrics (-signal=metrics) it
// serves synthetic exposition targets and a remote-write receiver that
// decodes and counts samples, runs the watershed binary as a separate
// process against them (all-in-one, embedded JetStream with file storage),
// and prints samples/s delivered, CPU-seconds of the watershed process per
// million samples and its peak RSS. For logs (-signal=logs) it writes CRI
// files at -log-rate and counts what reaches a Loki-protocol receiver. For
// traces (-signal=traces) telemetrygen sends spans at -span-rate to the
// OTLP gRPC receiver and an OTLP server counts what writer-tempo delivers.
// It stops by itself after -duration.
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/s2"
	"google.golang.org/protobuf/encoding/protowire"
)

type options struct {
	binary string
	// services holds the per-service binaries that microservices mode
	// runs, one process each, as the deployment's images do.
	services    string
	targets     int
	series      int
	interval    time.Duration
	warmup      time.Duration
	duration    time.Duration
	profile     string
	heapProfile string
	signal      string
	logRate     float64
	logFiles    int
	// collectorOnly measures the node collector in its own process.
	collectorOnly bool
	// Traces: telemetrygen's load.
	telemetrygen string
	spanRate     float64
	workers      int
	childSpans   int
	batchSize    int
	// Catch-up: how long the backend is down, and writer-mimir replicas.
	outage  time.Duration
	writers int
	// Side-by-side runs: which agents (name prefixes), and the peers'
	// binaries.
	agents     string
	vmagent    string
	prometheus string
	otelcol    string
	natsServer string
}

// vmagentVersion and otelcolVersion are the peers' versions that
// make tools-compare installs, for the tables.
const (
	vmagentVersion = "v1.151.0"
	otelcolVersion = "v0.165.0"
)

func main() {
	var o options
	flag.StringVar(&o.binary, "watershed", "./bin/watershed", "watershed binary to run")
	flag.StringVar(&o.services, "services", "./bin", "compare: directory of the per-service binaries (make build) that microservices mode runs, as the deployment's images do")
	flag.IntVar(&o.targets, "targets", 200, "synthetic targets")
	flag.IntVar(&o.series, "series", 1000, "series per target")
	flag.DurationVar(&o.interval, "interval", time.Second, "scrape interval")
	flag.DurationVar(&o.warmup, "warmup", 10*time.Second, "time before measuring")
	flag.DurationVar(&o.duration, "duration", 30*time.Second, "measured time")
	flag.StringVar(&o.profile, "cpuprofile", "", "write a CPU profile of the watershed process over the measured time to this file")
	flag.StringVar(&o.heapProfile, "memprofile", "", "write a heap profile of the watershed process at the end of the measured time to this file")
	flag.StringVar(&o.signal, "signal", "metrics", "metrics, logs, traces, or catchup (metrics after a backend outage)")
	flag.Float64Var(&o.logRate, "log-rate", 10, "logs: MiB/s written, across all files")
	flag.IntVar(&o.logFiles, "log-files", 4, "logs: files written")
	flag.BoolVar(&o.collectorOnly, "collector-only", false, "logs: run the node collector in its own process and measure it alone")
	flag.StringVar(&o.telemetrygen, "telemetrygen", "telemetrygen", "traces: the telemetrygen binary (make bench installs it)")
	flag.Float64Var(&o.spanRate, "span-rate", 50000, "traces: spans/s offered, across all workers")
	flag.IntVar(&o.workers, "workers", 4, "traces: telemetrygen workers")
	flag.IntVar(&o.childSpans, "child-spans", 9, "traces: child spans per trace")
	flag.DurationVar(&o.outage, "outage", 5*time.Minute, "catchup: how long the remote-write receiver answers 503 before it comes back")
	flag.IntVar(&o.writers, "writers", 1, "catchup: writer-mimir replicas sharing the partitions")
	flag.IntVar(&o.batchSize, "batch-size", 512, "traces: spans per export request (512 is the OpenTelemetry SDKs' default batch)")
	flag.StringVar(&o.agents, "agents", "", "compare: comma-separated agent name prefixes to run (all when empty)")
	flag.StringVar(&o.vmagent, "vmagent", "vmagent", "compare: the vmagent binary (make tools-compare installs it)")
	flag.StringVar(&o.prometheus, "prometheus", "prometheus", "compare: the Prometheus binary, run in agent mode")
	flag.StringVar(&o.otelcol, "otelcol", "otelcol-bench", "compare: the OpenTelemetry Collector (make tools-compare builds it)")
	flag.StringVar(&o.natsServer, "nats-server", "nats-server", "compare: the nats-server of Watershed's microservices mode")
	flag.Parse()
	// The agents run in directories of their own.
	if abs, err := filepath.Abs(o.binary); err == nil {
		o.binary = abs
	}
	if abs, err := filepath.Abs(o.services); err == nil {
		o.services = abs
	}
	for _, tool := range []*string{&o.telemetrygen, &o.vmagent, &o.prometheus, &o.otelcol, &o.natsServer} {
		*tool = findTool(*tool)
	}
	runSignal := run
	switch o.signal {
	case "logs":
		runSignal = runLogs
	case "traces":
		runSignal = runTraces
	case "catchup":
		runSignal = runCatchup
	case "compare-metrics":
		runSignal = runCompareMetrics
	case "compare-logs":
		runSignal = runCompareLogs
	case "compare-traces":
		runSignal = runCompareTraces
	}
	if err := runSignal(o); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// findTool resolves a peer's binary given by name: from PATH, else from
// the tools cache where make installs the peers ($TOOLS_DIR/bin, by
// default ~/.cache/watershed/tools/bin), so that a run outside make
// finds what make tools-compare installed. A path, or a name found
// nowhere, is returned as given (the agent's start then names it).
func findTool(name string) string {
	if strings.ContainsRune(name, os.PathSeparator) {
		return name
	}
	if _, err := exec.LookPath(name); err == nil {
		return name
	}
	dir := os.Getenv("TOOLS_DIR")
	if dir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return name
		}
		dir = filepath.Join(home, ".cache", "watershed", "tools")
	}
	cached := filepath.Join(dir, "bin", name)
	if fi, err := os.Stat(cached); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
		return cached
	}
	return name
}

func run(o options) error {
	targets, err := serveTargets(o.targets, o.series)
	if err != nil {
		return err
	}
	recv := &receiver{count: countSamples}
	recvAddr, err := serve(recv)
	if err != nil {
		return err
	}
	dir, httpAddr, cleanup, err := workspace("watershed-bench-")
	if err != nil {
		return err
	}
	defer cleanup()
	var state string
	m, err := measure(o, dir, httpAddr, benchConfig(o, dir, httpAddr, targets, recvAddr), recv.items.Load,
		func() { state = pipelineState(httpAddr) })
	if err != nil {
		return err
	}
	delivered, cpu, elapsed, rss := m.delivered, m.cpu, m.elapsed, m.rss
	active := float64(o.targets * (o.series + 5))
	fmt.Printf("metrics end to end: %d targets x %d series every %s, %s measured after %s warm-up\n",
		o.targets, o.series, o.interval, o.duration, o.warmup)
	fmt.Printf("| samples delivered/s | CPU-s per 1M samples | cores used | peak RSS | bytes per active series |\n")
	fmt.Printf("| --- | --- | --- | --- | --- |\n")
	fmt.Printf("| %.0f | %.3f | %.2f | %.1f MiB | %.0f |\n",
		delivered/elapsed.Seconds(), cpu/(delivered/1e6), cpu/elapsed.Seconds(), float64(rss)/(1<<20), float64(rss)/active)
	fmt.Println(state)
	if rejected := recv.rejected.Load(); rejected > 0 {
		return fmt.Errorf("receiver refused %d requests", rejected)
	}
	return nil
}

func benchConfig(o options, dir, httpAddr string, targets []string, recvAddr string) string {
	return metricsConfig(o, httpAddr, embeddedNATS(dir, "127.0.0.1:-1"), targets, recvAddr)
}

// embeddedNATS is the nats: section of a process that runs the embedded
// JetStream with file storage under dir.
func embeddedNATS(dir, listen string) string {
	return fmt.Sprintf("{storeDir: %q, listenAddress: %q}", filepath.Join(dir, "nats"), listen)
}

// externalNATS is the nats: section of a process on an external server.
func externalNATS(addr string) string {
	return fmt.Sprintf("{url: %q}", "nats://"+addr)
}

// metricsConfig scrapes targets every o.interval and remote-writes to
// recvAddr; natsYAML is the nats: section.
func metricsConfig(o options, httpAddr, natsYAML string, targets []string, recvAddr string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `cluster: {name: bench}
server: {httpListenAddress: %q, logLevel: warn}
nats: %s
externalServices:
  prometheus: {host: "http://%s", writeEndpoint: /api/v1/write}
logs: {enabled: false}
receivers: {grpc: {enabled: false}, http: {enabled: false}, zipkin: {enabled: false}}
metrics:
  scrapeInterval: %s
  staticTargets:
    - job: bench
      targets:
`, httpAddr, natsYAML, recvAddr, o.interval)
	for _, t := range targets {
		fmt.Fprintf(&b, "        - %q\n", t)
	}
	return b.String()
}

// serveTargets starts one listener per target, each serving a fixed page.
func serveTargets(n, series int) ([]string, error) {
	var addrs []string
	for i := 0; i < n; i++ {
		page := exposition(i, series)
		addr, err := serve(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/plain; version=0.0.4")
			_, _ = w.Write(page)
		}))
		if err != nil {
			return nil, err
		}
		addrs = append(addrs, addr)
	}
	return addrs, nil
}

// exposition is a page of counters shaped like an instrumented service.
func exposition(target, series int) []byte {
	var b bytes.Buffer
	b.WriteString("# HELP http_requests_total Requests.\n# TYPE http_requests_total counter\n")
	for i := 0; i < series; i++ {
		fmt.Fprintf(&b, "http_requests_total{code=\"%d\",handler=\"/api/v1/items/%d\",method=\"GET\",pod=\"app-%d\"} %d\n",
			200+i%5, i, target, i*7)
	}
	return b.Bytes()
}

func serve(h http.Handler) (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	go func() { _ = http.Serve(l, h) }()
	return l.Addr().String(), nil
}

// receiver takes snappy-compressed protobuf requests, decodes each with
// count, and adds up the items count reports (samples, log lines).
type receiver struct {
	count    func(body []byte) (int, error)
	items    atomic.Int64
	rejected atomic.Int64
	// down makes it answer 503, as a backend in an outage.
	down atomic.Bool
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if r.down.Load() {
		_, _ = io.Copy(io.Discard, req.Body)
		http.Error(w, "down for the benchmark", http.StatusServiceUnavailable)
		return
	}
	body, err := io.ReadAll(req.Body)
	if err == nil {
		body, err = s2.Decode(nil, body)
	}
	n := 0
	if err == nil {
		n, err = r.count(body)
	}
	if err != nil {
		r.rejected.Add(1)
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.items.Add(int64(n))
	w.WriteHeader(http.StatusNoContent)
}

// countSamples counts the samples of a remote-write request.
func countSamples(body []byte) (int, error) { return walkSamples(body, nil) }

// walkSamples counts the samples of a remote-write request, calling each,
// if not nil, with a sample's timestamp. It reads the protobuf in place
// instead of decoding labels and all: a real backend's cost is not the
// agents', and on a machine of 2 cores a receiver that allocated every
// label would take the CPU the agents are measured on.
func walkSamples(body []byte, each func(ts int64)) (int, error) {
	n := 0
	err := walkMessage(body, func(num protowire.Number, series []byte, _ uint64) error {
		if num != 1 || series == nil { // WriteRequest.timeseries; metadata skipped
			return nil
		}
		return walkMessage(series, func(num protowire.Number, sample []byte, _ uint64) error {
			if num != 2 || sample == nil { // TimeSeries.samples; labels, exemplars, histograms skipped
				return nil
			}
			n++
			if each == nil {
				return nil
			}
			return walkMessage(sample, func(num protowire.Number, _ []byte, v uint64) error {
				if num == 2 { // Sample.timestamp
					each(int64(v))
				}
				return nil
			})
		})
	})
	return n, err
}

// walkMessage calls fn with each length-delimited field of a protobuf
// message (its bytes) and each varint field (its value, with nil bytes),
// and checks that the others are well formed.
func walkMessage(b []byte, fn func(num protowire.Number, field []byte, varint uint64) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("remote-write request: %w", protowire.ParseError(n))
		}
		b = b[n:]
		var err error
		switch typ {
		case protowire.BytesType:
			var v []byte
			v, n = protowire.ConsumeBytes(b)
			if n >= 0 {
				err = fn(num, v, 0)
			}
		case protowire.VarintType:
			var v uint64
			v, n = protowire.ConsumeVarint(b)
			if n >= 0 {
				err = fn(num, nil, v)
			}
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return fmt.Errorf("remote-write request: %w", protowire.ParseError(n))
		}
		if err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

// cpuSeconds is the user+system CPU time of a process, from /proc.
func cpuSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name, which is in parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("unexpected /proc stat format")
	}
	f := strings.Fields(string(b[i+2:]))
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	return (utime + stime) / 100, nil // USER_HZ is 100 on Linux
}

// peakRSS is VmHWM of a process, in bytes.
func peakRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmHWM in /proc status")
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// workspace is a run's temporary directory and a free address for the
// watershed process's HTTP server; cleanup removes the directory.
func workspace(prefix string) (dir, httpAddr string, cleanup func(), err error) {
	dir, err = os.MkdirTemp("", prefix)
	if err != nil {
		return "", "", nil, err
	}
	cleanup = func() { _ = os.RemoveAll(dir) }
	if httpAddr, err = freeAddr(); err != nil {
		cleanup()
		return "", "", nil, err
	}
	return dir, httpAddr, cleanup, nil
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func fetchProfile(httpAddr string, d time.Duration, file string) error {
	return fetchURL(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", httpAddr, int(d.Seconds())), file)
}

func fetchURL(url, file string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(f, resp.Body)
	return err
}

// pipelineState reads Watershed's own counters: whether delivery kept up
// with scraping, and whether a reader had to rewind.
func pipelineState(httpAddr string) string {
	return metricLines(httpAddr, append([]string{"watershed_collector_samples_published_total", "watershed_collector_messages_published_total",
		"watershed_writer_items_sent_total", "watershed_collector_samples_dropped_total{reason=\"publish_failed\"}"}, append(lostDeliveries, goMemory...)...)...)
}

// goMemory is the Go runtime's account of the process's memory at the
// end, beside its peak RSS: what the heap holds, what the GC keeps or has
// not yet given back, and the goroutines' stacks.
var goMemory = []string{"go_goroutines", "go_memstats_heap_inuse_bytes", "go_memstats_heap_idle_bytes",
	"go_memstats_heap_released_bytes", "go_memstats_stack_inuse_bytes", "go_memstats_sys_bytes", "go_memstats_next_gc_bytes"}

// lostDeliveries are the counters of deliveries lost on their way, which
// make a reader rewind: a run that shows any was not a steady one.
var lostDeliveries = []string{"watershed_router_lost_deliveries_total", "watershed_writer_lost_deliveries_total"}

// metricLines is Watershed's own series whose lines start with one of names.
func metricLines(httpAddr string, names ...string) string {
	resp, err := http.Get("http://" + httpAddr + "/metrics")
	if err != nil {
		return "watershed metrics: " + err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		for _, name := range names {
			if strings.HasPrefix(line, name) {
				out = append(out, line)
			}
		}
	}
	return "watershed: " + strings.Join(out, "; ")
}
