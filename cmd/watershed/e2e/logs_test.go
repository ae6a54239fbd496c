package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/watershed-dev/watershed/platform/config"
)

// victoriaLogs is a real VictoriaLogs, which takes Loki's push protocol.
type victoriaLogs struct {
	addr, dataDir string
	srv           *server
}

func startVictoriaLogs(t *testing.T) *victoriaLogs {
	v := &victoriaLogs{dataDir: filepath.Join(t.TempDir(), "vlogs")}
	v.addr, v.srv = startOnFreePort(t, "victoria-logs", func(addr string) *server { return v.launch(t, addr) }, v.ready)
	return v
}

// start starts VictoriaLogs again on its address (after an outage).
func (v *victoriaLogs) start(t *testing.T) {
	v.srv = v.launch(t, v.addr)
	waitFor(t, 30*time.Second, "victoria-logs ready", func() (bool, string) { return v.ready(v.addr) })
}

func (v *victoriaLogs) launch(t *testing.T, addr string) *server {
	return startServer(t, "victoria-logs", "-httpListenAddr="+addr, "-storageDataPath="+v.dataDir, "-retentionPeriod=100y", "-loggerLevel=WARN")
}

func (v *victoriaLogs) ready(addr string) (bool, string) { return httpOK("http://" + addr + "/health") }

// vlEntry is one log entry as VictoriaLogs returns it.
type vlEntry struct {
	Msg    string `json:"_msg"`
	Time   string `json:"_time"`
	Stream string `json:"_stream"`
	PodUID string `json:"k8s_pod_uid"`
}

// awaitLines polls until VictoriaLogs stores at least n entries and
// returns them all.
func (v *victoriaLogs) awaitLines(t *testing.T, n int, timeout time.Duration) []vlEntry {
	t.Helper()
	var got []vlEntry
	waitFor(t, timeout, "every line in VictoriaLogs", func() (bool, string) {
		var err error
		got, err = v.query(t)
		if err != nil {
			return false, err.Error()
		}
		return len(got) >= n, fmt.Sprintf("%d of %d lines", len(got), n)
	})
	return got
}

// query returns every entry stored.
func (v *victoriaLogs) query(t *testing.T) ([]vlEntry, error) {
	resp, err := http.PostForm("http://"+v.addr+"/select/logsql/query", url.Values{"query": {"*"}})
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("query: %s", resp.Status)
	}
	var out []vlEntry
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var e vlEntry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return nil, fmt.Errorf("query line %q: %w", sc.Text(), err)
		}
		out = append(out, e)
	}
	return out, sc.Err()
}

// watershedBinary builds cmd/watershed once per test binary.
var watershedBinary = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "watershed-e2e-bin")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "watershed")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/watershed-dev/watershed/cmd/watershed").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
})

// collectorProcess is a node collector in its own process, so that it can
// be killed with SIGKILL.
type collectorProcess struct {
	bin, configFile, logFile string
	httpAddr                 string
	cmd                      *exec.Cmd
	done                     chan struct{}
}

func startCollectorProcess(t *testing.T, cfg *config.Config) *collectorProcess {
	t.Helper()
	bin, err := watershedBinary()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	data, err := config.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c := &collectorProcess{bin: bin, configFile: filepath.Join(dir, "collector.yaml"), logFile: filepath.Join(dir, "collector.log"), httpAddr: cfg.Server.HTTPListenAddress}
	if err := os.WriteFile(c.configFile, data, 0o644); err != nil {
		t.Fatal(err)
	}
	c.start(t)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("collector metrics:\n%s", c.metrics())
		}
		c.kill()
		if t.Failed() {
			b, _ := os.ReadFile(c.logFile)
			t.Logf("collector log (tail):\n%s", tail(b, 3000))
		}
	})
	return c
}

func (c *collectorProcess) start(t *testing.T) {
	t.Helper()
	logf, err := os.OpenFile(c.logFile, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	c.cmd = exec.Command(c.bin, "run", "-config.file="+c.configFile, "-target=node-collector")
	c.cmd.Stdout, c.cmd.Stderr = logf, logf
	c.cmd.Env = append(os.Environ(), "NODE_NAME=e2e-node")
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c.done = make(chan struct{})
	go func() { _ = c.cmd.Wait(); _ = logf.Close(); close(c.done) }()
}

// metrics is the collector's own log and bus metrics, for failure reports.
func (c *collectorProcess) metrics() string {
	resp, err := http.Get("http://" + c.httpAddr + "/metrics")
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	var sb strings.Builder
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if l := sc.Text(); strings.HasPrefix(l, "watershed_logs") || strings.HasPrefix(l, "watershed_bus_publish") {
			sb.WriteString(l + "\n")
		}
	}
	return sb.String()
}

func (c *collectorProcess) kill() {
	if c.cmd == nil || c.cmd.Process == nil {
		return
	}
	_ = c.cmd.Process.Signal(syscall.SIGKILL)
	<-c.done
}

// logWriter appends CRI lines to a file the way a container runtime does,
// and rotates it both ways.
type logWriter struct {
	t    *testing.T
	path string
	f    *os.File
	next int
	ts   time.Time
}

func (w *logWriter) open() {
	f, err := os.OpenFile(w.path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		w.t.Fatal(err)
	}
	w.f = f
}

func lineText(i int) string { return fmt.Sprintf("line %06d %s", i, strings.Repeat("~", i%40)) }

func lineTime(base time.Time, i int) time.Time { return base.Add(time.Duration(i) * time.Millisecond) }

func (w *logWriter) write(n int) {
	var sb strings.Builder
	for range n {
		fmt.Fprintf(&sb, "%s stdout F %s\n", lineTime(w.ts, w.next).Format(time.RFC3339Nano), lineText(w.next))
		w.next++
	}
	if _, err := w.f.WriteString(sb.String()); err != nil {
		w.t.Fatal(err)
	}
}

// rotateRename renames the file away and starts a new one (kubelet, logrotate's default).
func (w *logWriter) rotateRename(suffix string) {
	_ = w.f.Close()
	if err := os.Rename(w.path, w.path+suffix); err != nil {
		w.t.Fatal(err)
	}
	w.open()
}

// rotateCopyTruncate copies the file and truncates it in place.
func (w *logWriter) rotateCopyTruncate(suffix string) {
	data, err := os.ReadFile(w.path)
	if err != nil {
		w.t.Fatal(err)
	}
	if err := os.WriteFile(w.path+suffix, data, 0o644); err != nil {
		w.t.Fatal(err)
	}
	if err := w.f.Truncate(0); err != nil {
		w.t.Fatal(err)
	}
}

// TestLogsExactlyOnceThroughRotationKillAndOutage: a node collector in
// its own process tails a CRI file that is written, rotated both ways,
// while the collector is SIGKILLed and restarted and while the Loki-protocol
// backend (a real VictoriaLogs) is down for 60 s. Every line arrives once,
// with its labels and its own timestamp.
func TestLogsExactlyOnceThroughRotationKillAndOutage(t *testing.T) {
	vl := startVictoriaLogs(t)
	storeDir := t.TempDir()
	natsAddr := freeAddr(t)
	cfg := baseConfig(t, storeDir, "http://127.0.0.1:1") // no metrics in this test
	cfg.NATS.ListenAddress = natsAddr
	cfg.Logs.Enabled = true
	cfg.Logs.PodLogs.Enabled = false
	cfg.ExternalServices.Loki.Host = "http://" + vl.addr
	cfg.ExternalServices.Loki.WriteEndpoint = "/insert/loki/api/v1/push"
	cfg.ExternalServices.Loki.Queue.MaxBackoff = time.Second
	bus := startAllInOne(t, cfg, "router", "writer-loki")

	logDir := t.TempDir()
	w := &logWriter{t: t, path: filepath.Join(logDir, "app.log"), ts: time.Now().Add(-time.Hour).Truncate(time.Second)}
	w.open()
	ccfg := config.Default()
	ccfg.Cluster.Name = "e2e"
	ccfg.Server.HTTPListenAddress = freeAddr(t)
	ccfg.NATS.URL = "nats://" + natsAddr
	ccfg.ExternalServices = cfg.ExternalServices
	ccfg.NATS.Partitions = cfg.NATS.Partitions
	ccfg.Metrics.Enabled = false
	ccfg.Logs = cfg.Logs
	ccfg.Logs.Files = []config.LogFile{{Path: w.path, Format: config.LogFormatCRI, Labels: map[string]string{"job": "e2e/app"}}}
	ccfg.Logs.Tail.PositionsDirectory = filepath.Join(t.TempDir(), "positions")
	ccfg.Logs.Tail.PollInterval = 100 * time.Millisecond
	ccfg.Logs.Tail.MaxBatchBytes = 16 << 10
	ccfg.Server.LogLevel = "debug" // many batches, so a kill lands mid-stream
	coll := startCollectorProcess(t, ccfg)
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := exec.Command("ls", "-li", logDir).CombinedOutput()
			pos, _ := os.ReadFile(filepath.Join(ccfg.Logs.Tail.PositionsDirectory, "positions.json"))
			t.Logf("log directory:\n%s\npositions: %s", out, pos)
		}
	})

	published := func() float64 {
		return bus.metric(t, "watershed_router_routed_items_total", map[string]string{"signal": "logs"})
	}
	waitPublished := func(n int) {
		waitFor(t, 60*time.Second, fmt.Sprintf("%d lines routed", n), func() (bool, string) {
			v := published()
			return v >= float64(n), fmt.Sprintf("routed=%v", v)
		})
	}
	w.write(2000)
	waitPublished(w.next) // the collector is tailing
	w.write(2000)
	w.rotateCopyTruncate(".1")
	w.write(2000)
	coll.kill() // mid-stream: 16 KiB batches, maybe before it saw the truncation
	w.write(1000)
	w.rotateRename(".2") // while the collector is down
	w.write(1000)
	coll.start(t)
	waitPublished(w.next)

	// The backend goes away for 60 s while lines keep coming.
	vl.srv.stop(t)
	outageStart := time.Now()
	for time.Since(outageStart) < 60*time.Second {
		w.write(200)
		w.rotateRename(fmt.Sprintf(".%d", w.next))
		waitPublished(w.next)
	}
	vl.start(t)
	total := w.next

	got := vl.awaitLines(t, total, 90*time.Second)
	seen := map[string]int{}
	wantStream := fmt.Sprintf(`{cluster="e2e",filename=%q,job="e2e/app",stream="stdout"}`, w.path)
	for _, e := range got {
		seen[e.Msg]++
		if e.Stream != wantStream {
			t.Fatalf("entry %q has stream %s, want %s", e.Msg, e.Stream, wantStream)
		}
	}
	for i := range total {
		if n := seen[lineText(i)]; n != 1 {
			t.Errorf("%q stored %d times", lineText(i), n)
		}
	}
	if len(got) != total {
		t.Errorf("stored %d entries, wrote %d lines", len(got), total)
	}
	for _, e := range got[:min(len(got), 50)] {
		var i int
		if _, err := fmt.Sscanf(e.Msg, "line %06d", &i); err != nil {
			t.Fatalf("unexpected line %q", e.Msg)
		}
		if ts, err := time.Parse(time.RFC3339Nano, e.Time); err != nil || !ts.Equal(lineTime(w.ts, i)) {
			t.Errorf("%q has time %s, want %s", e.Msg, e.Time, lineTime(w.ts, i).Format(time.RFC3339Nano))
		}
	}
	t.Logf("%d lines exactly once; collector restarts 1, rotations %d, outage 60s", total, 2+(total-8000)/200)
}

// writeCRILog writes lines to a container log file as a CRI runtime does.
func writeCRILog(t *testing.T, path string, lines ...string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	var sb strings.Builder
	for _, l := range lines {
		fmt.Fprintf(&sb, "%s stdout F %s\n", time.Now().UTC().Format(time.RFC3339Nano), l)
	}
	if err := os.WriteFile(path, []byte(sb.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}
