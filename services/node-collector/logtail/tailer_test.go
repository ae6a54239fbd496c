package logtail

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/grafana/dskit/services"
	"github.com/grafana/loki/pkg/push"
	"github.com/klauspost/compress/snappy"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/watershed-dev/watershed/platform/bus"
	"github.com/watershed-dev/watershed/platform/bus/bustest"
	"github.com/watershed-dev/watershed/platform/config"
)

// rig is a real embedded JetStream and a directory of log files.
type rig struct {
	t       *testing.T
	bus     *bus.Bus
	cfg     Config
	dir     string
	cons    jetstream.Consumer
	seen    map[string]int // line -> times received
	labels  map[string]string
	meta    map[string]push.LabelsAdapter
	times   map[string]time.Time
	reg     *prometheus.Registry
	current *Tailer
}

func newRig(t *testing.T) *rig {
	t.Helper()
	natsCfg := bustest.NATSConfig(t.TempDir())
	b := bustest.Open(t, natsCfg)
	logs := config.Default().Logs
	logs.Enabled = true
	logs.PodLogs.Enabled = false
	logs.Tail.PollInterval = 20 * time.Millisecond
	logs.Tail.MaxBatchBytes = 4 << 10
	logs.Tail.PositionsDirectory = filepath.Join(t.TempDir(), "positions")
	dir := t.TempDir()
	logs.Files = []config.LogFile{{Path: filepath.Join(dir, "*.log"), Labels: map[string]string{"job": "app"}}}
	r := &rig{
		t: t, bus: b, dir: dir, seen: map[string]int{}, labels: map[string]string{}, meta: map[string]push.LabelsAdapter{}, times: map[string]time.Time{},
		cfg: Config{Cluster: "test", Node: "node-a", Logs: logs, NATS: natsCfg, FlushTimeout: 5 * time.Second, UnknownPodGrace: time.Hour},
	}
	ctx := context.Background()
	stream, err := bus.EnsureStream(ctx, b.JetStream(), bus.RawStreamConfig(natsCfg))
	if err != nil {
		t.Fatal(err)
	}
	r.cons, err = stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "test", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// start runs a new tailer, as a restarted collector would.
func (r *rig) start() *Tailer {
	r.t.Helper()
	r.reg = prometheus.NewRegistry()
	tl := New(r.cfg, r.bus, bus.NewPublisherMetrics(r.reg), r.reg, slog.New(slog.DiscardHandler))
	if err := services.StartAndAwaitRunning(context.Background(), tl); err != nil {
		r.t.Fatal(err)
	}
	r.current = tl
	r.t.Cleanup(func() { _ = services.StopAndAwaitTerminated(context.Background(), tl) })
	return tl
}

func (r *rig) stop() {
	r.t.Helper()
	if err := services.StopAndAwaitTerminated(context.Background(), r.current); err != nil {
		r.t.Fatal(err)
	}
}

func (r *rig) write(name string, from, to int) {
	r.t.Helper()
	f, err := os.OpenFile(filepath.Join(r.dir, name), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		r.t.Fatal(err)
	}
	defer f.Close()
	var sb strings.Builder
	for i := from; i < to; i++ {
		fmt.Fprintf(&sb, "line-%05d %s\n", i, strings.Repeat("x", i%50))
	}
	if _, err := f.WriteString(sb.String()); err != nil {
		r.t.Fatal(err)
	}
}

// receive reads the raw stream until lines 0..n-1 have all arrived, and
// fails on any line received twice.
func (r *rig) receive(n int) {
	r.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for len(r.seen) < n {
		if time.Now().After(deadline) {
			r.t.Fatalf("received %d of %d lines", len(r.seen), n)
		}
		r.drain(500 * time.Millisecond)
	}
	r.drain(100 * time.Millisecond) // anything extra
	for i := range n {
		line := fmt.Sprintf("line-%05d %s", i, strings.Repeat("x", i%50))
		if c := r.seen[line]; c != 1 {
			r.t.Errorf("%q received %d times", line, c)
		}
	}
	if len(r.seen) != n {
		r.t.Errorf("received %d distinct lines, want %d", len(r.seen), n)
	}
}

func (r *rig) drain(wait time.Duration) {
	r.t.Helper()
	batch, err := r.cons.Fetch(100, jetstream.FetchMaxWait(wait))
	if err != nil {
		r.t.Fatal(err)
	}
	for msg := range batch.Messages() {
		body, err := snappy.Decode(nil, msg.Data())
		if err != nil {
			r.t.Fatal(err)
		}
		var req push.PushRequest
		if err := req.Unmarshal(body); err != nil {
			r.t.Fatal(err)
		}
		for _, s := range req.Streams {
			for _, e := range s.Entries {
				r.seen[e.Line]++
				r.labels[e.Line] = s.Labels
				r.meta[e.Line] = e.StructuredMetadata
				r.times[e.Line] = e.Timestamp
			}
		}
		_ = msg.Ack()
	}
}

func (r *rig) counter(name string, labels ...string) float64 {
	r.t.Helper()
	mfs, err := r.reg.Gather()
	if err != nil {
		r.t.Fatal(err)
	}
	total := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue metric
				}
			}
			total += m.GetCounter().GetValue()
		}
	}
	return total
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

func TestTailFileWithLabels(t *testing.T) {
	r := newRig(t)
	r.write("a.log", 0, 500)
	r.start()
	r.receive(500)
	want := fmt.Sprintf(`{cluster="test", filename=%q, job="app"}`, filepath.Join(r.dir, "a.log"))
	if got := r.labels["line-00000 "]; got != want {
		t.Errorf("labels %s, want %s", got, want)
	}
	if problems, err := testutil.GatherAndLint(r.reg); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", err, problems)
	}
}

func TestRotationLosesNothing(t *testing.T) {
	tests := []struct {
		name    string
		rotate  func(r *rig)
		outcome string
	}{
		{"rename and create", func(r *rig) {
			if err := os.Rename(filepath.Join(r.dir, "a.log"), filepath.Join(r.dir, "a.log.1")); err != nil {
				t.Fatal(err)
			}
		}, "renamed"},
		{"copytruncate", func(r *rig) {
			path := filepath.Join(r.dir, "a.log")
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path+".1", data, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(path, 0); err != nil {
				t.Fatal(err)
			}
		}, "copytruncate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t)
			r.cfg.Logs.Files[0].Path = filepath.Join(r.dir, "a.log") // the rotated copy is not tailed itself
			r.start()
			r.write("a.log", 0, 300)
			r.receive(300)
			r.write("a.log", 300, 600) // unread yet, most likely
			tt.rotate(r)
			r.write("a.log", 600, 900)
			r.receive(900)
			if got := r.counter("watershed_logs_rotations_total", "outcome", tt.outcome); got != 1 {
				t.Errorf("rotations{outcome=%s} = %v, want 1", tt.outcome, got)
			}
		})
	}
}

// Renames faster than the poll: each file is read whole, whichever way
// the tailer comes across it.
func TestRenamesInQuickSuccession(t *testing.T) {
	r := newRig(t)
	r.cfg.Logs.Files[0].Path = filepath.Join(r.dir, "a.log")
	r.start()
	r.write("a.log", 0, 10)
	r.receive(10)
	n := 10
	for i := range 6 {
		r.write("a.log", n, n+100)
		n += 100
		if err := os.Rename(filepath.Join(r.dir, "a.log"), filepath.Join(r.dir, fmt.Sprintf("a.log.%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	r.write("a.log", n, n+100)
	r.receive(n + 100)
}

// A path that links to the runtime's file (cri-dockerd) is followed
// through the target's rotations, which happen beside the target.
func TestSymlinkedFileRotation(t *testing.T) {
	r := newRig(t)
	target := t.TempDir()
	link := filepath.Join(r.dir, "a.log")
	if err := os.Symlink(filepath.Join(target, "c-json.log"), link); err != nil {
		t.Fatal(err)
	}
	r.cfg.Logs.Files[0].Path = link
	writeTo := func(from, to int) {
		f, err := os.OpenFile(filepath.Join(target, "c-json.log"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		for i := from; i < to; i++ {
			fmt.Fprintf(f, "line-%05d %s\n", i, strings.Repeat("x", i%50))
		}
	}
	writeTo(0, 100)
	r.start()
	r.receive(100)
	r.stop()
	writeTo(100, 200)
	if err := os.Rename(filepath.Join(target, "c-json.log"), filepath.Join(target, "c-json.log.1")); err != nil {
		t.Fatal(err)
	}
	writeTo(200, 300)
	r.start()
	r.receive(300)
}

func TestRestartResumesWhereAcknowledged(t *testing.T) {
	tests := []struct {
		name     string
		whenDown func(r *rig)
		outcome  string
	}{
		{"more lines", func(r *rig) { r.write("a.log", 400, 800) }, ""},
		{"renamed while down", func(r *rig) {
			r.write("a.log", 400, 600)
			if err := os.Rename(filepath.Join(r.dir, "a.log"), filepath.Join(r.dir, "a.log.1")); err != nil {
				t.Fatal(err)
			}
			r.write("a.log", 600, 800)
		}, "renamed_while_down"},
		{"renamed twice while down", func(r *rig) {
			for i, name := range []string{"a.log.1", "a.log.2"} {
				r.write("a.log", 400+i*200, 600+i*200)
				if err := os.Rename(filepath.Join(r.dir, "a.log"), filepath.Join(r.dir, name)); err != nil {
					t.Fatal(err)
				}
			}
		}, "renamed_between_polls"},
		{"copytruncated while down", func(r *rig) {
			r.write("a.log", 400, 600)
			path := filepath.Join(r.dir, "a.log")
			data, _ := os.ReadFile(path)
			if err := os.WriteFile(path+".1", data, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(path, 0); err != nil {
				t.Fatal(err)
			}
			r.write("a.log", 600, 800)
		}, "copytruncate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t)
			r.cfg.Logs.Files[0].Path = filepath.Join(r.dir, "a.log")
			r.start()
			r.write("a.log", 0, 400)
			r.receive(400)
			r.stop()
			tt.whenDown(r)
			r.start()
			r.receive(800)
			if tt.outcome != "" {
				if got := r.counter("watershed_logs_rotations_total", "outcome", tt.outcome); got != 1 {
					t.Errorf("rotations{outcome=%s} = %v, want 1", tt.outcome, got)
				}
			}
		})
	}
}

// A collector killed after JetStream stored a batch but before the
// position moved sends the same range again under the same message id,
// and JetStream drops it.
func TestPendingBatchIsStoredOnce(t *testing.T) {
	r := newRig(t)
	r.cfg.Logs.Tail.MaxBatchBytes = 1 << 20
	r.write("a.log", 0, 200) // one batch: the file is complete before the start
	r.start()
	r.receive(200)
	r.stop()
	// Put the position back to where it was during that publish.
	editPositions(t, r.cfg.Logs.Tail.PositionsDirectory, func(p *positions) {
		file := filepath.Join(r.dir, "a.log")
		pos, _ := p.get(file)
		pos.PendingEnd, pos.Offset, pos.Tail = pos.Offset, 0, nil
		p.set(file, pos)
	})
	r.start()
	waitFor(t, "the replayed batch", func() bool {
		return r.counter("watershed_bus_publish_duplicates_total") == 1
	})
	r.write("a.log", 200, 300)
	r.receive(300)
}

func TestDeletedFileIsDrainedAndReleased(t *testing.T) {
	r := newRig(t)
	r.start()
	r.write("a.log", 0, 100)
	r.receive(100)
	f, err := os.OpenFile(filepath.Join(r.dir, "a.log"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	// The container's last line has no newline; the file is deleted
	// while the collector waits for the rest of it.
	fmt.Fprintf(f, "line-%05d %s\nline-%05d %s", 100, strings.Repeat("x", 0), 101, strings.Repeat("x", 1))
	f.Close()
	if err := os.Remove(filepath.Join(r.dir, "a.log")); err != nil {
		t.Fatal(err)
	}
	r.receive(102)
	waitFor(t, "the position to be released", func() bool {
		_, ok := r.current.sh.positions.get(filepath.Join(r.dir, "a.log"))
		return !ok && r.counter("watershed_logs_files_released_total") == 1
	})
}

// editPositions changes the positions a stopped collector left.
func editPositions(t *testing.T, dir string, edit func(*positions)) {
	t.Helper()
	p, err := openPositions(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	edit(p)
	if err := p.close(); err != nil {
		t.Fatal(err)
	}
}

// Compressed rotations are never read, even when the glob matches them.
func TestCompressedRotationsAreIgnored(t *testing.T) {
	r := newRig(t)
	r.cfg.Logs.Files[0].Path = filepath.Join(r.dir, "*")
	if err := os.WriteFile(filepath.Join(r.dir, "a.log.1.gz"), []byte("\x1f\x8b compressed\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r.write("a.log", 0, 50)
	r.start()
	r.receive(50)
	if got := r.seen["\x1f\x8b compressed"]; got != 0 {
		t.Errorf("the .gz file was read")
	}
}
