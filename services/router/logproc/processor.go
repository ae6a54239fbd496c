package logproc

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/grafana/loki/pkg/push"
	"github.com/klauspost/compress/snappy"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/watershed-dev/watershed/platform/config"
)

// Config is what the processor needs.
type Config struct {
	Processing config.LogProcessingConfig
	// TenantFromLabel, TenantMapping and DefaultTenant choose each stream's
	// tenant (externalServices.loki).
	TenantFromLabel string
	TenantMapping   map[string]string
	DefaultTenant   string
}

// Needed reports whether cfg asks for any processing at all.
func (c Config) Needed() bool { return len(c.Processing.Stages) > 0 || c.TenantFromLabel != "" }

type metrics struct {
	dropped       *prometheus.CounterVec
	stageErrors   *prometheus.CounterVec
	labelsRefused *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg)
	m := &metrics{
		dropped: f.NewCounterVec(prometheus.CounterOpts{
			Name: "watershed_router_log_entries_dropped_total",
			Help: "Log entries a drop stage removed, by the stage's reason.",
		}, []string{"reason"}),
		stageErrors: f.NewCounterVec(prometheus.CounterOpts{
			Name: "watershed_router_log_stage_errors_total",
			Help: "Entries a stage could not parse (json, logfmt, regex, timestamp); the entry goes on unchanged.",
		}, []string{"stage"}),
		labelsRefused: f.NewCounterVec(prometheus.CounterOpts{
			Name: "watershed_router_log_labels_refused_total",
			Help: "Labels a labels stage did not add, by reason: max_labels (logs.processing.maxLabels) or value_too_long.",
		}, []string{"reason"}),
	}
	for _, r := range []string{"max_labels", "value_too_long"} {
		m.labelsRefused.WithLabelValues(r)
	}
	return m
}

// Processor runs the stages on push requests.
type Processor struct {
	cfg       Config
	stages    []stage
	maxLabels int
	metrics   *metrics
	now       func() time.Time
}

// New compiles the stages.
func New(cfg Config, reg prometheus.Registerer, _ *slog.Logger) (*Processor, error) {
	p := &Processor{cfg: cfg, maxLabels: cfg.Processing.MaxLabels, metrics: newMetrics(reg), now: time.Now}
	for i, s := range cfg.Processing.Stages {
		st, err := compileStage(s)
		if err != nil {
			return nil, fmt.Errorf("logs.processing.stages[%d]: %w", i, err)
		}
		p.stages = append(p.stages, st)
	}
	return p, nil
}

// Output is one push request for one tenant.
type Output struct {
	// Data is a snappy-compressed PushRequest.
	Data   []byte
	Tenant string
	// Count is the number of entries.
	Count int
}

// Process decodes a snappy-compressed PushRequest, runs the stages on each
// entry, and returns one request per tenant, streams in their first
// order and entries in theirs. All entries dropped means no output.
func (p *Processor) Process(data []byte) ([]Output, error) {
	raw, err := snappy.Decode(nil, data)
	if err != nil {
		return nil, fmt.Errorf("snappy: %w", err)
	}
	var req push.PushRequest
	if err := req.Unmarshal(raw); err != nil {
		return nil, fmt.Errorf("push request: %w", err)
	}
	type group struct {
		streams []push.Stream
		index   map[string]int
		count   int
	}
	groups := map[string]*group{}
	var order []string
	for _, s := range req.Streams {
		ls, err := parseLabels(s.Labels)
		if err != nil {
			return nil, err
		}
		for _, ent := range s.Entries {
			e := entry{labels: append(labelSet(nil), ls...), ts: ent.Timestamp, line: ent.Line, meta: ent.StructuredMetadata, extracted: map[string]string{}}
			if !p.run(&e) {
				continue
			}
			tenant := p.tenantOf(e.labels)
			g := groups[tenant]
			if g == nil {
				g = &group{index: map[string]int{}}
				groups[tenant] = g
				order = append(order, tenant)
			}
			key := e.labels.String()
			i, ok := g.index[key]
			if !ok {
				i = len(g.streams)
				g.index[key] = i
				g.streams = append(g.streams, push.Stream{Labels: key})
			}
			g.streams[i].Entries = append(g.streams[i].Entries, push.Entry{Timestamp: e.ts, Line: e.line, StructuredMetadata: e.meta})
			g.count++
		}
	}
	out := make([]Output, 0, len(order))
	for _, tenant := range order {
		g := groups[tenant]
		body, err := (&push.PushRequest{Streams: g.streams}).Marshal()
		if err != nil {
			return nil, fmt.Errorf("encode push request: %w", err)
		}
		out = append(out, Output{Data: snappy.Encode(nil, body), Tenant: tenant, Count: g.count})
	}
	return out, nil
}

func (p *Processor) run(e *entry) bool {
	for _, s := range p.stages {
		if !s.apply(p, e) {
			return false
		}
	}
	return true
}

func (p *Processor) tenantOf(ls labelSet) string {
	if p.cfg.TenantFromLabel == "" {
		return p.cfg.DefaultTenant
	}
	v := ls.get(p.cfg.TenantFromLabel)
	if v == "" {
		return p.cfg.DefaultTenant
	}
	if t, ok := p.cfg.TenantMapping[v]; ok {
		return t
	}
	return v
}
