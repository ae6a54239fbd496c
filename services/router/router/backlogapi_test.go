package router

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/watershed-dev/watershed/platform/bus"
)

func TestBacklogAPI(t *testing.T) {
	sample := bus.Backlog{Messages: 7, Bytes: 700, Partitions: []uint64{3, 0, 4}}
	tests := []struct {
		name       string
		method     string
		query      string
		measureErr error
		wantStatus int
		wantBody   string // substring
	}{
		{name: "known destination", method: http.MethodGet, query: "?destination=loki", wantStatus: http.StatusOK,
			wantBody: `{"destination":"loki","messages":7,"bytes":700,"partitions":[3,0,4]}`},
		{name: "unknown destination", method: http.MethodGet, query: "?destination=mimir", wantStatus: http.StatusBadRequest,
			wantBody: `unknown destination "mimir": this router routes to loki, prometheus`},
		{name: "missing destination", method: http.MethodGet, wantStatus: http.StatusBadRequest,
			wantBody: "missing query parameter destination: one of loki, prometheus"},
		{name: "bus unavailable", method: http.MethodGet, query: "?destination=prometheus", measureErr: errors.New("nats: timeout"),
			wantStatus: http.StatusServiceUnavailable, wantBody: "measuring the backlog of prometheus: nats: timeout"},
		{name: "wrong method", method: http.MethodPost, query: "?destination=loki", wantStatus: http.StatusMethodNotAllowed,
			wantBody: "method POST not allowed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			api := newBacklogAPI([]string{"prometheus", "loki"}, func(context.Context, string) (bus.Backlog, error) {
				return sample, tc.measureErr
			})
			rec := httptest.NewRecorder()
			api.ServeHTTP(rec, httptest.NewRequest(tc.method, BacklogPath+tc.query, nil))
			if rec.Code != tc.wantStatus || !strings.Contains(rec.Body.String(), tc.wantBody) {
				t.Errorf("got %d %q, want %d containing %q", rec.Code, rec.Body.String(), tc.wantStatus, tc.wantBody)
			}
			if tc.wantStatus == http.StatusOK && rec.Header().Get("Content-Type") != "application/json" {
				t.Errorf("content type %q", rec.Header().Get("Content-Type"))
			}
		})
	}
}

// Requests within a second share one measurement per destination; an
// error is not cached.
func TestBacklogAPICachesForASecond(t *testing.T) {
	calls := map[string]int{}
	var fail bool
	api := newBacklogAPI([]string{"loki", "tempo"}, func(_ context.Context, dest string) (bus.Backlog, error) {
		calls[dest]++
		if fail {
			return bus.Backlog{}, errors.New("down")
		}
		return bus.Backlog{Messages: uint64(calls[dest])}, nil
	})
	now := time.Unix(1000, 0)
	api.now = func() time.Time { return now }
	get := func(dest string) (int, uint64) {
		rec := httptest.NewRecorder()
		api.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, BacklogPath+"?destination="+dest, nil))
		var r BacklogResponse
		_ = json.Unmarshal(rec.Body.Bytes(), &r)
		return rec.Code, r.Messages
	}
	steps := []struct {
		advance time.Duration
		fail    bool
		dest    string
		want    uint64
		status  int
	}{
		{0, false, "loki", 1, 200},
		{500 * time.Millisecond, false, "loki", 1, 200}, // cached
		{0, false, "tempo", 1, 200},                     // cached per destination
		{600 * time.Millisecond, false, "loki", 2, 200}, // expired: measured again
		{2 * time.Second, true, "loki", 0, 503},
		{0, false, "loki", 4, 200}, // the failure was not cached
	}
	for i, s := range steps {
		now = now.Add(s.advance)
		fail = s.fail
		if status, got := get(s.dest); status != s.status || got != s.want {
			t.Errorf("step %d (%s): got %d messages=%d, want %d messages=%d", i, s.dest, status, got, s.status, s.want)
		}
	}
}

// The router serves the real backlog of its destination: what it routed
// that no writer has acknowledged, summed over every partition.
func TestRouterServesTheBacklogOfEveryPartition(t *testing.T) {
	r, b := startRouter(t)
	ctx := context.Background()
	const msgs = 12
	for i := range msgs {
		if _, err := b.JetStream().PublishMsg(ctx, raw(bus.SignalMetrics, i%4, fmt.Sprint("b", i), "", "payload")); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the router to route every message", func() bool {
		return testutil.ToFloat64(r.metrics.routedMessages.WithLabelValues("metrics", "prometheus")) == msgs
	})
	srv := httptest.NewServer(r.BacklogHandler())
	defer srv.Close()
	resp, err := http.Get(srv.URL + BacklogPath + "?destination=prometheus")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got BacklogResponse
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, %v", resp.StatusCode, err)
	}
	var sum, used uint64
	for _, n := range got.Partitions {
		sum += n
		if n > 0 {
			used++
		}
	}
	if got.Messages != msgs || sum != msgs || used < 2 || got.Bytes == 0 || len(got.Partitions) != r.cfg.NATS.Partitions {
		t.Errorf("backlog %+v: want %d messages over several of %d partitions, with bytes", got, msgs, r.cfg.NATS.Partitions)
	}
}
