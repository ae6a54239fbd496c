package collector

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/value"
	"google.golang.org/protobuf/proto"

	"github.com/watershed-dev/watershed/platform/config"
	"github.com/watershed-dev/watershed/proto/watershedv1"
)

func putAssignment(t *testing.T, c *Collector, a *watershedv1.CollectorAssignment) {
	t.Helper()
	b, err := proto.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.assignments.Put(context.Background(), c.cfg.Name, b); err != nil {
		t.Fatal(err)
	}
}

// TestCollectorScrapesWhatItIsAssigned: targets come and go through the
// collector's key in the assignment bucket, with their labels, params and
// metric relabeling (an allow list); a removed target gets staleness
// markers and the heartbeat carries the epoch and each target's health.
func TestCollectorScrapesWhatItIsAssigned(t *testing.T) {
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "kept_metric{module=%q} 1\ndropped_metric 2\n", r.URL.Query().Get("module"))
	}))
	defer target.Close()
	addr := strings.TrimPrefix(target.URL, "http://")

	c, b, _ := startCollector(t, "node-a", config.Default().Metrics)
	ctx := context.Background()

	putAssignment(t, c, &watershedv1.CollectorAssignment{
		Collector: "node-a", Epoch: 7, Leader: "discovery-0",
		Targets: []*watershedv1.ScrapeTarget{{
			Id: "t1", Job: "integrations/app", Scheme: "http", Address: addr, MetricsPath: "/metrics",
			Params:           []*watershedv1.Param{{Name: "module", Values: []string{"http_2xx"}}},
			Labels:           []*watershedv1.Label{{Name: "job", Value: "integrations/app"}, {Name: "namespace", Value: "shop"}, {Name: "instance", Value: "app-0"}},
			ScrapeIntervalMs: 200, ScrapeTimeoutMs: 200,
			MetricRelabelConfigs: "- source_labels: [__name__]\n  regex: kept_metric|up\n  action: keep\n",
		}},
	})
	got := scrapedSamples(t, b, func(s []sample) bool { return len(find(s, "kept_metric", nil)) >= 2 })
	kept := find(got, "kept_metric", nil)[0]
	for k, v := range map[string]string{"job": "integrations/app", "namespace": "shop", "instance": "app-0", "module": "http_2xx", "cluster": "test"} {
		if kept.labels[k] != v {
			t.Errorf("label %s=%q, want %q (%v)", k, kept.labels[k], v, kept.labels)
		}
	}
	if _, ok := kept.labels[targetIDLabel]; ok {
		t.Error("the internal target id label leaked into the series")
	}
	if n := len(find(got, "dropped_metric", nil)); n != 0 {
		t.Errorf("allow list let %d dropped_metric samples through", n)
	}

	if err := c.heartbeat(ctx); err != nil {
		t.Fatal(err)
	}
	entry, err := c.heartbeats.Get(ctx, "node-a")
	if err != nil {
		t.Fatal(err)
	}
	var hb watershedv1.CollectorHeartbeat
	if err := proto.Unmarshal(entry.Value(), &hb); err != nil {
		t.Fatal(err)
	}
	if hb.GetAssignmentEpoch() != 7 || len(hb.GetTargetsHealth()) != 1 || hb.GetTargetsHealth()[0].GetId() != "t1" || hb.GetTargetsHealth()[0].GetHealth() != "up" {
		t.Errorf("heartbeat %v", &hb)
	}

	// The target moves away: its series end with staleness markers.
	putAssignment(t, c, &watershedv1.CollectorAssignment{Collector: "node-a", Epoch: 8})
	got = scrapedSamples(t, b, func(s []sample) bool {
		for _, x := range find(s, "kept_metric", nil) {
			if value.IsStaleNaN(x.value) {
				return true
			}
		}
		return false
	})
	if c.epoch.Load() != 8 {
		t.Errorf("epoch %d, want 8", c.epoch.Load())
	}
}

// TestBadAssignmentKeepsThePreviousOne: an unreadable or invalid
// assignment is refused and logged, and scraping goes on.
func TestBadAssignmentKeepsThePreviousOne(t *testing.T) {
	c, _, _ := startCollector(t, "node-b", config.Default().Metrics)
	ctx := context.Background()
	good := &watershedv1.CollectorAssignment{Epoch: 1, Targets: []*watershedv1.ScrapeTarget{{
		Id: "a", Job: "j", Scheme: "http", Address: "127.0.0.1:1", MetricsPath: "/metrics", ScrapeIntervalMs: 1000, ScrapeTimeoutMs: 1000,
	}}}
	if err := c.apply(ctx, good); err != nil {
		t.Fatalf("good assignment refused: %v", err)
	}
	for name, a := range map[string]*watershedv1.CollectorAssignment{
		"zero interval":      {Epoch: 2, Targets: []*watershedv1.ScrapeTarget{{Id: "b", Job: "j", Scheme: "http", Address: "x:1", MetricsPath: "/m"}}},
		"bad relabel":        {Epoch: 3, Targets: []*watershedv1.ScrapeTarget{{Id: "c", Job: "j", Scheme: "http", Address: "x:1", MetricsPath: "/m", ScrapeIntervalMs: 1000, ScrapeTimeoutMs: 1000, MetricRelabelConfigs: "- action: explode\n"}}},
		"timeout > interval": {Epoch: 4, Targets: []*watershedv1.ScrapeTarget{{Id: "d", Job: "j", Scheme: "http", Address: "x:1", MetricsPath: "/m", ScrapeIntervalMs: 1000, ScrapeTimeoutMs: 5000}}},
	} {
		t.Run(name, func(t *testing.T) {
			if err := c.apply(ctx, a); err == nil {
				t.Fatal("accepted")
			}
			if c.epoch.Load() != 1 {
				t.Errorf("epoch moved to %d", c.epoch.Load())
			}
		})
	}
}

// TestMovedTargetWaitsForItsPreviousOwner: a target that moved here starts
// only once the collector it moved from reports the new epoch, or at the
// latest one interval later.
func TestMovedTargetWaitsForItsPreviousOwner(t *testing.T) {
	c, _, _ := startCollector(t, "node-b", config.Default().Metrics)
	ctx := context.Background()
	ownerEpoch := func(epoch uint64) {
		hb, _ := proto.Marshal(&watershedv1.CollectorHeartbeat{Name: "node-a", AssignmentEpoch: epoch})
		if _, err := c.heartbeats.Put(ctx, "node-a", hb); err != nil {
			t.Fatal(err)
		}
	}
	active := func() int {
		n := 0
		for _, ts := range c.manager.TargetsActive() {
			n += len(ts)
		}
		return n
	}
	moved := func(interval int64) *watershedv1.CollectorAssignment {
		return &watershedv1.CollectorAssignment{Epoch: 5, Targets: []*watershedv1.ScrapeTarget{{
			Id: "m", Job: "j", Scheme: "http", Address: "127.0.0.1:1", MetricsPath: "/metrics",
			ScrapeIntervalMs: interval, ScrapeTimeoutMs: 100, Epoch: 5, PreviousOwner: "node-a",
		}}}
	}
	waitActive := func(want int, within time.Duration) {
		t.Helper()
		deadline := time.Now().Add(within)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for active() != want {
			if time.Now().After(deadline) {
				t.Fatalf("%d active targets after %s, want %d", active(), within, want)
			}
			<-tick.C
		}
	}

	t.Run("starts when the previous owner reports the epoch", func(t *testing.T) {
		ownerEpoch(4)
		if err := c.apply(ctx, moved(60_000)); err != nil {
			t.Fatal(err)
		}
		c.applyMu.Lock()
		_, held := c.heldSince["m"]
		c.applyMu.Unlock()
		if !held {
			t.Fatal("the moved target was not held while node-a still has epoch 4")
		}
		ownerEpoch(5)
		waitActive(1, 5*time.Second)
	})
	t.Run("starts after one interval at the latest", func(t *testing.T) {
		if err := c.apply(ctx, &watershedv1.CollectorAssignment{Epoch: 6}); err != nil {
			t.Fatal(err)
		}
		waitActive(0, 5*time.Second)
		ownerEpoch(4) // node-a never catches up
		start := time.Now()
		a := moved(500)
		a.Epoch, a.Targets[0].Epoch = 7, 7
		if err := c.apply(ctx, a); err != nil {
			t.Fatal(err)
		}
		waitActive(1, 5*time.Second)
		if took := time.Since(start); took < 400*time.Millisecond {
			t.Errorf("started after %s, before the previous owner's interval ran out", took)
		}
	})
}
