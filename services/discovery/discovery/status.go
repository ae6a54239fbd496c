package discovery

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"sort"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/watershed-dev/watershed/platform/config"
	"github.com/watershed-dev/watershed/proto/watershedv1"
)

// TargetStatus is one row of /api/v0/web/targets.
type TargetStatus struct {
	ID                 string            `json:"id"`
	Job                string            `json:"job"`
	URL                string            `json:"url"`
	Labels             map[string]string `json:"labels,omitempty"`
	Source             string            `json:"source,omitempty"`
	Owner              string            `json:"owner,omitempty"`
	FallbackOwner      string            `json:"fallbackOwner,omitempty"`
	Epoch              uint64            `json:"epoch,omitempty"`
	Health             string            `json:"health"`
	LastError          string            `json:"lastError,omitempty"`
	LastScrape         *time.Time        `json:"lastScrape,omitempty"`
	LastScrapeDuration string            `json:"lastScrapeDuration,omitempty"`
	Unassigned         string            `json:"unassignedReason,omitempty"`
}

// CollectorStatus is a collector and its last heartbeat.
type CollectorStatus struct {
	Name            string    `json:"name"`
	LastHeartbeat   time.Time `json:"lastHeartbeat"`
	AssignmentEpoch uint64    `json:"assignmentEpoch"`
	Targets         uint32    `json:"targets"`
	Version         string    `json:"version"`
}

// Status is the body of /api/v0/web/targets.
type Status struct {
	Targets    []TargetStatus    `json:"targets"`
	Skipped    []Problem         `json:"skipped"`
	Collectors []CollectorStatus `json:"collectors"`
	ComputedAt *time.Time        `json:"computedAt,omitempty"`
	Leader     bool              `json:"leader"`
}

// RegisterHandlers adds the troubleshooting endpoints to the process's server.
func (d *Discovery) RegisterHandlers(mux *http.ServeMux, cfg *config.Config) {
	mux.HandleFunc("GET /api/v0/web/targets", func(w http.ResponseWriter, r *http.Request) {
		st, err := d.Status(r.Context())
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(st)
	})
	mux.HandleFunc("GET /api/v0/web/config", func(w http.ResponseWriter, _ *http.Request) {
		out, err := config.Marshal(cfg)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "text/yaml; charset=utf-8")
		_, _ = w.Write(out)
	})
}

// Status joins what discovery computed with what the collectors report.
func (d *Discovery) Status(ctx context.Context) (*Status, error) {
	health, collectors, err := d.collectorReports(ctx)
	if err != nil {
		return nil, err
	}
	st := &Status{Collectors: collectors, Leader: d.leading.Load(), Skipped: []Problem{}, Targets: []TargetStatus{}}
	d.mu.Lock()
	p := d.lastPlan
	d.mu.Unlock()
	seen := map[string]bool{}
	if p != nil {
		st.ComputedAt = &p.at
		st.Skipped = append(st.Skipped, p.problems...)
		for owner, ts := range p.assignment.ByCollector {
			for _, t := range ts {
				st.Targets = append(st.Targets, targetStatus(t, owner, p.assignment.Fallback[t.Id], health[t.Id]))
				seen[t.Id] = true
			}
		}
		for _, u := range p.assignment.Unassigned {
			ts := targetStatus(u.Target, "", "", nil)
			ts.Unassigned = u.Reason
			st.Targets = append(st.Targets, ts)
			seen[u.Target.Id] = true
		}
	}
	// Targets the collectors scrape on their own (static targets).
	for id, h := range health {
		if !seen[id] {
			ts := TargetStatus{ID: id, Job: h.th.GetJob(), URL: h.th.GetUrl(), Owner: h.collector}
			fillHealth(&ts, h)
			st.Targets = append(st.Targets, ts)
		}
	}
	sort.Slice(st.Targets, func(i, j int) bool {
		if st.Targets[i].Job != st.Targets[j].Job {
			return st.Targets[i].Job < st.Targets[j].Job
		}
		return st.Targets[i].URL < st.Targets[j].URL
	})
	return st, nil
}

type reportedHealth struct {
	collector string
	th        *watershedv1.TargetHealth
}

func (d *Discovery) collectorReports(ctx context.Context) (map[string]*reportedHealth, []CollectorStatus, error) {
	health := map[string]*reportedHealth{}
	collectors := []CollectorStatus{}
	lister, err := d.heartbeats.ListKeys(ctx)
	if err != nil {
		return nil, nil, err
	}
	for key := range lister.Keys() {
		e, err := d.heartbeats.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return nil, nil, err
		}
		hb := &watershedv1.CollectorHeartbeat{}
		if err := proto.Unmarshal(e.Value(), hb); err != nil {
			continue
		}
		collectors = append(collectors, CollectorStatus{
			Name: hb.GetName(), LastHeartbeat: time.UnixMilli(hb.GetSentUnixMs()).UTC(),
			AssignmentEpoch: hb.GetAssignmentEpoch(), Targets: hb.GetTargets(), Version: hb.GetVersion(),
		})
		for _, th := range hb.GetTargetsHealth() {
			health[th.GetId()] = &reportedHealth{collector: hb.GetName(), th: th}
		}
	}
	sort.Slice(collectors, func(i, j int) bool { return collectors[i].Name < collectors[j].Name })
	return health, collectors, nil
}

func targetStatus(t Target, owner, fallback string, h *reportedHealth) TargetStatus {
	ts := TargetStatus{
		ID: t.Id, Job: t.Job, URL: t.Scheme + "://" + t.Address + t.MetricsPath, Source: t.Source,
		Owner: owner, FallbackOwner: fallback, Epoch: t.Epoch, Health: "unknown", Labels: map[string]string{},
	}
	for _, l := range t.Labels {
		ts.Labels[l.Name] = l.Value
	}
	fillHealth(&ts, h)
	return ts
}

func fillHealth(ts *TargetStatus, h *reportedHealth) {
	if h == nil {
		if ts.Health == "" {
			ts.Health = "unknown"
		}
		return
	}
	ts.Health, ts.LastError = h.th.GetHealth(), h.th.GetLastError()
	if ms := h.th.GetLastScrapeUnixMs(); ms > 0 {
		t := time.UnixMilli(ms).UTC()
		ts.LastScrape = &t
		ts.LastScrapeDuration = (time.Duration(h.th.GetLastScrapeDurationMs()) * time.Millisecond).String()
	}
}
