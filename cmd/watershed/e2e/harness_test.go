package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/watershed-dev/watershed/cmd/watershed/app"
	"github.com/watershed-dev/watershed/platform/bus"
	"github.com/watershed-dev/watershed/platform/bus/bustest"
	"github.com/watershed-dev/watershed/platform/config"
	"github.com/watershed-dev/watershed/platform/runtime"
)

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	last := ""
	for {
		ok, state := cond()
		if ok {
			return
		}
		last = state
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s; last state: %s", timeout, what, last)
		}
		<-tick.C
	}
}

// freeAddr finds a free loopback port for a third-party server.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	return addr
}

// requireBinary finds a third-party server that `make test` installs.
func requireBinary(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is not installed: run the tests with `make test`, which installs it (%v)", name, err)
	}
	return p
}

// server is a third-party process on loopback.
type server struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
}

func startServer(t *testing.T, name string, args ...string) *server {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(requireBinary(t, name), args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	s := &server{name: name, cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); _ = logFile.Close(); close(s.done) }()
	t.Cleanup(func() {
		s.stop(t)
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("%s log (tail):\n%s", name, tail(b, 3000))
		}
	})
	return s
}

func (s *server) stop(t *testing.T) {
	select {
	case <-s.done:
		return
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

func httpOK(u string) (bool, string) {
	resp, err := http.Get(u)
	if err != nil {
		return false, err.Error()
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode == http.StatusOK, resp.Status
}

// startNodeExporter runs the Debian node exporter on a free port.
func startNodeExporter(t *testing.T) string {
	addr, _ := startOnFreePort(t, "node exporter", func(addr string) *server {
		return startServer(t, "prometheus-node-exporter", "--web.listen-address="+addr)
	}, func(addr string) (bool, string) { return httpOK("http://" + addr + "/metrics") })
	return addr
}

// startOnFreePort starts a third-party server on a free loopback port and
// waits until ready answers. A free port can be taken by another process
// before the server binds it; the server then exits, and is started again
// on another port (three tries).
func startOnFreePort(t *testing.T, what string, launch func(addr string) *server, ready func(addr string) (bool, string)) (string, *server) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		addr := freeAddr(t)
		srv := launch(addr)
		ok, exited, state := awaitReady(srv, addr, ready)
		switch {
		case ok:
			return addr, srv
		case exited && attempt < 3:
			t.Logf("%s exited before it was ready on %s (%s); trying another port", what, addr, state)
		default:
			t.Fatalf("%s not ready on %s: %s", what, addr, state)
		}
	}
}

// awaitReady polls ready for a minute, or until the server exits.
func awaitReady(srv *server, addr string, ready func(addr string) (bool, string)) (ok, exited bool, state string) {
	deadline := time.Now().Add(time.Minute)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if ok, state = ready(addr); ok {
			return true, false, state
		}
		select {
		case <-srv.done:
			return false, true, state
		case <-tick.C:
		}
		if time.Now().After(deadline) {
			return false, false, state
		}
	}
}

// prom is a real Prometheus with its remote-write receiver on.
type prom struct {
	t                         *testing.T
	addr, dataDir, configFile string
	srv                       *server
}

func startPrometheus(t *testing.T) *prom {
	dir := t.TempDir()
	p := &prom{t: t, dataDir: filepath.Join(dir, "data"), configFile: filepath.Join(dir, "prometheus.yml")}
	if err := os.WriteFile(p.configFile, []byte("global:\n  scrape_interval: 1m\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p.addr, p.srv = startOnFreePort(t, "prometheus", p.launch, p.ready)
	return p
}

// start starts Prometheus again on its address (after an outage).
func (p *prom) start(t *testing.T) {
	p.srv = p.launch(p.addr)
	waitFor(t, 60*time.Second, "prometheus ready", func() (bool, string) { return p.ready(p.addr) })
}

func (p *prom) launch(addr string) *server {
	return startServer(p.t, "prometheus",
		"--config.file="+p.configFile,
		"--storage.tsdb.path="+p.dataDir,
		"--web.listen-address="+addr,
		"--web.enable-remote-write-receiver")
}

func (p *prom) ready(addr string) (bool, string) { return httpOK("http://" + addr + "/-/ready") }

func (p *prom) url() string { return "http://" + p.addr }

type promSample struct {
	Metric map[string]string
	Value  float64
	Time   float64
	Values [][2]float64
}

// query runs an instant query and returns its vector or matrix.
func (p *prom) query(t *testing.T, q string) []promSample {
	t.Helper()
	resp, err := http.PostForm(p.url()+"/api/v1/query", url.Values{"query": {q}})
	if err != nil {
		t.Fatalf("query %s: %v", q, err)
	}
	defer resp.Body.Close()
	var body struct {
		Status string
		Error  string
		Data   struct {
			ResultType string
			Result     []struct {
				Metric map[string]string
				Value  []any
				Values [][]any
			}
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("query %s: %v", q, err)
	}
	if body.Status != "success" {
		t.Fatalf("query %s: %s", q, body.Error)
	}
	out := make([]promSample, 0, len(body.Data.Result))
	for _, r := range body.Data.Result {
		s := promSample{Metric: r.Metric}
		if len(r.Value) == 2 {
			s.Time, s.Value = r.Value[0].(float64), parseFloat(r.Value[1])
		}
		for _, v := range r.Values {
			s.Values = append(s.Values, [2]float64{v[0].(float64), parseFloat(v[1])})
		}
		out = append(out, s)
	}
	return out
}

func parseFloat(v any) float64 {
	f, _ := strconv.ParseFloat(fmt.Sprint(v), 64)
	return f
}

// scalar runs a query expected to give one value; ok is false for none.
func (p *prom) scalar(t *testing.T, q string) (float64, bool) {
	r := p.query(t, q)
	if len(r) == 0 {
		return 0, false
	}
	return r[0].Value, true
}

// syncBuffer is a log sink tests can read while the process writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// allInOne is Watershed running in the test process.
type allInOne struct {
	proc   *runtime.Process
	cancel context.CancelFunc
	done   chan error
	logs   *syncBuffer
	once   sync.Once
}

// baseConfig is the all-in-one configuration of a test, storing the bus in storeDir.
func baseConfig(t *testing.T, storeDir, backend string) *config.Config {
	cfg := config.Default()
	cfg.Cluster.Name = "e2e"
	cfg.Server.HTTPListenAddress = "127.0.0.1:0"
	cfg.Server.ShutdownTimeout = 20 * time.Second
	cfg.NATS = bustest.NATSConfig(storeDir)
	cfg.ExternalServices.Prometheus.Host = backend
	cfg.ExternalServices.Prometheus.WriteEndpoint = "/api/v1/write"
	cfg.ExternalServices.Prometheus.Queue.MaxBackoff = time.Second
	cfg.Metrics.ScrapeInterval = time.Second
	cfg.Logs.Enabled = false // TestLogs* turn them on
	// No receivers on the default ports; the trace tests turn them on, on free ports.
	cfg.Receivers.GRPC.Enabled, cfg.Receivers.HTTP.Enabled, cfg.Receivers.Zipkin.Enabled = false, false, false
	cfg.Logs.Tail.PositionsDirectory = filepath.Join(storeDir, "positions")
	return cfg
}

// startAllInOne runs the targets of the all-in-one in the test process
// and waits until they are ready. A port the test picked with freeAddr
// can be taken by another process before the all-in-one binds it: the
// embedded NATS server then fails in NewProcess, a receiver when its
// service starts. Either way the ports are picked again and the
// all-in-one started again (three tries), as startOnFreePort does for
// third-party servers; the tests read the ports from cfg afterwards.
func startAllInOne(t *testing.T, cfg *config.Config, targets ...string) *allInOne {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("test config: %v", err)
	}
	if len(targets) == 0 {
		targets = app.Targets
	}
	for attempt := 1; ; attempt++ {
		a, err := launchAllInOne(t, cfg, targets)
		switch {
		case err == nil:
			return a
		case portTaken(err) && attempt < 3:
			t.Logf("all-in-one: %v; trying other ports", err)
			repickPorts(t, cfg, err)
		default:
			t.Fatalf("all-in-one: %v", err)
		}
	}
}

// launchAllInOne starts the all-in-one once. It returns an error when the
// process cannot be built or when it stops before it is ready.
func launchAllInOne(t *testing.T, cfg *config.Config, targets []string) (*allInOne, error) {
	t.Helper()
	logs := &syncBuffer{}
	logger := runtime.NewLogger(logs, "info")
	ctx, cancel := context.WithCancel(context.Background())
	p, err := runtime.NewProcess(ctx, "watershed", cfg, logger, app.Build(targets))
	if err != nil {
		cancel()
		return nil, err
	}
	a := &allInOne{proc: p, cancel: cancel, done: make(chan error, 1), logs: logs}
	go func() { a.done <- p.Run(ctx) }()
	deadline := time.Now().Add(30 * time.Second)
	for !p.Ready() {
		select {
		case err := <-a.done:
			cancel()
			a.once.Do(func() {}) // Run has returned: nothing left to stop
			if err == nil {
				err = errors.New("stopped before it was ready")
			}
			return nil, err
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Logf("watershed log (tail):\n%s", tail([]byte(logs.String()), 4000))
			a.stop(t)
			t.Fatalf("all-in-one not ready within 30s")
		}
	}
	t.Cleanup(func() {
		a.stop(t)
		if t.Failed() {
			t.Logf("watershed log (tail):\n%s", tail([]byte(logs.String()), 4000))
		}
	})
	return a, nil
}

// portTaken tells whether the all-in-one failed because a port it was
// given is in use. dskit's service manager reports a failed service's
// error as text, not wrapped, so the text is checked as well.
func portTaken(err error) bool {
	return errors.Is(err, bus.ErrEmbeddedNotStarted) || errors.Is(err, syscall.EADDRINUSE) ||
		strings.Contains(err.Error(), "address already in use")
}

// repickPorts gives the embedded NATS server (when it was what failed)
// and every enabled receiver other free ports.
func repickPorts(t *testing.T, cfg *config.Config, err error) {
	if errors.Is(err, bus.ErrEmbeddedNotStarted) {
		cfg.NATS.ListenAddress = freeAddr(t)
	}
	for _, r := range []*config.ReceiverPort{&cfg.Receivers.GRPC, &cfg.Receivers.HTTP, &cfg.Receivers.Zipkin, &cfg.Receivers.Jaeger.GRPC, &cfg.Receivers.Jaeger.ThriftHTTP} {
		if r.Enabled {
			r.Port = portOf(t, freeAddr(t))
		}
	}
}

// stop shuts the all-in-one down gracefully, as SIGTERM does.
func (a *allInOne) stop(t *testing.T) {
	a.once.Do(func() {
		a.cancel()
		select {
		case err := <-a.done:
			if err != nil {
				t.Errorf("all-in-one stopped with error: %v", err)
			}
		case <-time.After(60 * time.Second):
			t.Error("all-in-one did not stop within 60s")
		}
	})
}

// metric sums the values of a counter or gauge family whose labels include want.
func metric(t *testing.T, reg prometheus.Gatherer, name string, want map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if !hasLabels(m, want) {
				continue
			}
			switch {
			case m.Counter != nil:
				sum += m.GetCounter().GetValue()
			case m.Gauge != nil:
				sum += m.GetGauge().GetValue()
			}
		}
	}
	return sum
}

func hasLabels(m *dto.Metric, want map[string]string) bool {
	n := 0
	for _, lp := range m.GetLabel() {
		if v, ok := want[lp.GetName()]; ok && v == lp.GetValue() {
			n++
		}
	}
	return n == len(want)
}

func (a *allInOne) metric(t *testing.T, name string, labels map[string]string) float64 {
	return metric(t, a.proc.Env().Registry, name, labels)
}

// kubeClient is a client of the test's API server with its credentials in
// memory: with certificate files, client-go starts a goroutine that watches
// them and logs through klog, racing with discovery setting klog's logger.
func kubeClient(t *testing.T, kubeconfig string) (kubernetes.Interface, *rest.Config) {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []struct {
		file *string
		data *[]byte
	}{{&cfg.CertFile, &cfg.CertData}, {&cfg.KeyFile, &cfg.KeyData}, {&cfg.CAFile, &cfg.CAData}} {
		if *f.file == "" {
			continue
		}
		b, err := os.ReadFile(*f.file)
		if err != nil {
			t.Fatal(err)
		}
		*f.data, *f.file = b, ""
	}
	return kubernetes.NewForConfigOrDie(cfg), cfg
}
