package logproc

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/grafana/loki/pkg/push"
	"github.com/klauspost/compress/snappy"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"gopkg.in/yaml.v3"

	"github.com/watershed-dev/watershed/platform/config"
)

var t0 = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

func request(t *testing.T, streams ...push.Stream) []byte {
	t.Helper()
	body, err := (&push.PushRequest{Streams: streams}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return snappy.Encode(nil, body)
}

// render is an output as "tenant|labels|time|line|meta" rows.
func render(t *testing.T, outs []Output) []string {
	t.Helper()
	var rows []string
	for _, o := range outs {
		raw, err := snappy.Decode(nil, o.Data)
		if err != nil {
			t.Fatal(err)
		}
		var req push.PushRequest
		if err := req.Unmarshal(raw); err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, s := range req.Streams {
			for _, e := range s.Entries {
				n++
				var meta []string
				for _, m := range e.StructuredMetadata {
					meta = append(meta, m.Name+"="+m.Value)
				}
				rows = append(rows, fmt.Sprintf("%s|%s|%s|%s|%s", o.Tenant, s.Labels, e.Timestamp.UTC().Format(time.RFC3339Nano), e.Line, strings.Join(meta, ",")))
			}
		}
		if n != o.Count {
			t.Errorf("output count %d, entries %d", o.Count, n)
		}
	}
	return rows
}

func stages(t *testing.T, y string) config.LogProcessingConfig {
	t.Helper()
	c := config.LogProcessingConfig{MaxLabels: 4}
	if err := yaml.Unmarshal([]byte(y), &c.Stages); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestStages(t *testing.T) {
	base := `{job="app", namespace="shop"}`
	tests := []struct {
		name   string
		stages string
		cfg    func(*Config)
		lines  []string
		want   []string
	}{
		{
			name:   "json to labels, metadata and timestamp",
			stages: `[{json: {expressions: {level: "", user: "ctx.user", ts: ""}}}, {labels: {values: {level: ""}}}, {structured_metadata: {values: {user: ""}}}, {timestamp: {source: ts, format: RFC3339}}]`,
			lines:  []string{`{"level":"warn","ctx":{"user":"ann"},"ts":"2026-11-25T09:00:00Z"}`},
			want:   []string{`|{job="app", level="warn", namespace="shop"}|2026-11-25T09:00:00Z|{"level":"warn","ctx":{"user":"ann"},"ts":"2026-11-25T09:00:00Z"}|user=ann`},
		},
		{
			name:   "logfmt with trace id",
			stages: `[{logfmt: {}}, {trace_id: {}}]`,
			lines:  []string{`level=info traceID=4bf92f3577b34da6a3ce929d0e0e4736 msg="hi there"`, `level=info trace_id=zz msg=notatraceid`},
			want: []string{
				`|{job="app", namespace="shop"}|2026-11-25T10:00:00Z|level=info traceID=4bf92f3577b34da6a3ce929d0e0e4736 msg="hi there"|trace_id=4bf92f3577b34da6a3ce929d0e0e4736`,
				`|{job="app", namespace="shop"}|2026-11-25T10:00:00.000000001Z|level=info trace_id=zz msg=notatraceid|`,
			},
		},
		{
			name:   "regex and drop by value",
			stages: `[{regex: {expression: '^(?P<level>[A-Z]+) '}}, {drop: {source: level, value: DEBUG, reason: debug}}]`,
			lines:  []string{"DEBUG noisy", "ERROR kept", "no level"},
			want: []string{
				`|{job="app", namespace="shop"}|2026-11-25T10:00:00.000000001Z|ERROR kept|`,
				`|{job="app", namespace="shop"}|2026-11-25T10:00:00.000000002Z|no level|`,
			},
		},
		{
			name:   "drop by expression on the line and by age",
			stages: `[{drop: {expression: "healthz"}}, {drop: {olderThan: 1h, reason: too_old}}]`,
			lines:  []string{"GET /healthz", "GET /api", "GET /old"},
			want:   []string{`|{job="app", namespace="shop"}|2026-11-25T10:00:00.000000001Z|GET /api|`},
		},
		{
			name:   "static labels bounded by maxLabels",
			stages: `[{static_labels: {values: {env: prod}}}, {static_labels: {values: {zone: a}}}, {static_labels: {values: {extra: x}}}]`,
			lines:  []string{"x"},
			want:   []string{`|{env="prod", job="app", namespace="shop", zone="a"}|2026-11-25T10:00:00Z|x|`},
		},
		{
			name:   "tenant from a mapped label splits the request",
			stages: `[{regex: {expression: '^(?P<ns>\S+)'}}, {labels: {values: {namespace: ns}}}]`,
			cfg: func(c *Config) {
				c.TenantFromLabel, c.TenantMapping, c.DefaultTenant = "namespace", map[string]string{"shop": "team-shop"}, "fallback"
			},
			lines: []string{"shop a", "billing b", "shop c"},
			want: []string{
				`team-shop|{job="app", namespace="shop"}|2026-11-25T10:00:00Z|shop a|`,
				`team-shop|{job="app", namespace="shop"}|2026-11-25T10:00:00.000000002Z|shop c|`,
				`billing|{job="app", namespace="billing"}|2026-11-25T10:00:00.000000001Z|billing b|`,
			},
		},
		{
			name:   "bad json is counted and passed on",
			stages: `[{json: {}}, {labels: {values: {level: ""}}}]`,
			lines:  []string{"not json"},
			want:   []string{`|{job="app", namespace="shop"}|2026-11-25T10:00:00Z|not json|`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Config{Processing: stages(t, tt.stages)}
			if tt.cfg != nil {
				tt.cfg(&cfg)
			}
			reg := prometheus.NewRegistry()
			p, err := New(cfg, reg, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			p.now = func() time.Time { return t0.Add(30 * time.Minute) }
			var entries []push.Entry
			for i, l := range tt.lines {
				entries = append(entries, push.Entry{Timestamp: t0.Add(time.Duration(i)), Line: l})
			}
			if tt.name == "drop by expression on the line and by age" {
				entries[2].Timestamp = t0.Add(-2 * time.Hour)
			}
			outs, err := p.Process(request(t, push.Stream{Labels: base, Entries: entries}))
			if err != nil {
				t.Fatal(err)
			}
			got := render(t, outs)
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("got:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
			dropped := testutil.ToFloat64(p.metrics.dropped.WithLabelValues("drop_stage")) + testutil.ToFloat64(p.metrics.dropped.WithLabelValues("debug")) + testutil.ToFloat64(p.metrics.dropped.WithLabelValues("too_old"))
			if want := float64(len(tt.lines) - len(tt.want)); dropped != want {
				t.Errorf("dropped counters sum to %v, want %v", dropped, want)
			}
			if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
				t.Errorf("lint: %v %v", err, problems)
			}
		})
	}
}

func TestBadInputIsAnError(t *testing.T) {
	p, err := New(Config{Processing: config.LogProcessingConfig{MaxLabels: 15}, TenantFromLabel: "namespace"}, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{
		"not snappy":     []byte("\xff\xff\xff"),
		"not a request":  snappy.Encode(nil, []byte("\x0a\xff")),
		"bad stream sel": request(t, push.Stream{Labels: `job=app`, Entries: []push.Entry{{Timestamp: t0, Line: "x"}}}),
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := p.Process(data); err == nil {
				t.Error("no error")
			}
		})
	}
}

func TestParseLabels(t *testing.T) {
	for in, want := range map[string]string{
		`{}`:                              `{}`,
		`{b="2", a="1"}`:                  `{a="1", b="2"}`,
		`{a="x\"y, z=\"w", c="é\n"}`:      `{a="x\"y, z=\"w", c="é\n"}`,
		`{ job = "a/b" ,namespace="ns" }`: `{job="a/b", namespace="ns"}`,
	} {
		got, err := parseLabels(in)
		if err != nil || got.String() != want {
			t.Errorf("parseLabels(%s) = %s, %v; want %s", in, got, err, want)
		}
	}
	for _, bad := range []string{`job="a"`, `{job=a}`, `{job="a" x="b"}`, `{="a"}`} {
		if _, err := parseLabels(bad); err == nil {
			t.Errorf("parseLabels(%s): no error", bad)
		}
	}
}

func FuzzParseLabels(f *testing.F) {
	f.Add(`{a="1", b="x\"y"}`)
	f.Fuzz(func(t *testing.T, s string) {
		ls, err := parseLabels(s)
		if err != nil {
			return
		}
		again, err := parseLabels(ls.String())
		if err != nil || again.String() != ls.String() {
			t.Fatalf("%q -> %s does not read back: %v", s, ls, err)
		}
	})
}
