package router

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/watershed-dev/watershed/platform/bus"
)

// BacklogPath is where the router serves each destination's backlog.
const BacklogPath = "/api/v1/backlog"

// backlogCacheTTL bounds how often requests reach JetStream: an autoscaler
// polling every few seconds from several places costs one measurement per
// destination per TTL.
const backlogCacheTTL = time.Second

// backlogMeasureTimeout bounds one measurement of a destination.
const backlogMeasureTimeout = 5 * time.Second

// BacklogResponse is the body of GET /api/v1/backlog?destination=NAME.
type BacklogResponse struct {
	Destination string `json:"destination"`
	// Messages the destination's writers have not acknowledged, over all
	// partitions: what an autoscaler scales the writers on.
	Messages uint64 `json:"messages"`
	// Bytes estimates Messages at the stream's average message size.
	Bytes uint64 `json:"bytes"`
	// Partitions holds Messages per partition, by partition number.
	Partitions []uint64 `json:"partitions"`
}

type measureFunc func(ctx context.Context, dest string) (bus.Backlog, error)

// backlogAPI serves the backlog of every destination the router routes
// to, summed over its partitions. KEDA's nats-jetstream scaler reads one
// consumer only, and a destination has one consumer per partition; this
// is the whole figure, for KEDA's metrics-api scaler or anything else.
type backlogAPI struct {
	dests   []string
	measure measureFunc
	now     func() time.Time

	mu    sync.Mutex // held while measuring: concurrent requests share one measurement
	cache map[string]cachedBacklog
}

type cachedBacklog struct {
	at      time.Time
	backlog bus.Backlog
}

func newBacklogAPI(dests []string, measure measureFunc) *backlogAPI {
	slices.Sort(dests)
	return &backlogAPI{dests: dests, measure: measure, now: time.Now, cache: map[string]cachedBacklog{}}
}

// BacklogHandler serves BacklogPath for the router's destinations.
func (r *Router) BacklogHandler() http.Handler {
	dests := make([]string, 0, len(r.cfg.Routes))
	for _, d := range r.cfg.Routes {
		dests = append(dests, d.Name)
	}
	js, partitions := r.bus.JetStream(), r.cfg.NATS.Partitions
	return newBacklogAPI(dests, func(ctx context.Context, dest string) (bus.Backlog, error) {
		return bus.DestinationBacklog(ctx, js, dest, partitions)
	})
}

func (a *backlogAPI) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, fmt.Sprintf("method %s not allowed: use GET", req.Method), http.StatusMethodNotAllowed)
		return
	}
	dest := req.URL.Query().Get("destination")
	if !slices.Contains(a.dests, dest) {
		msg := fmt.Sprintf("unknown destination %q: this router routes to %s", dest, strings.Join(a.dests, ", "))
		if dest == "" {
			msg = "missing query parameter destination: one of " + strings.Join(a.dests, ", ")
		}
		http.Error(w, msg, http.StatusBadRequest)
		return
	}
	b, err := a.backlog(req.Context(), dest)
	if err != nil {
		if errors.Is(err, context.Canceled) && req.Context().Err() != nil {
			return // the client went away
		}
		http.Error(w, fmt.Sprintf("measuring the backlog of %s: %v", dest, err), http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(BacklogResponse{Destination: dest, Messages: b.Messages, Bytes: b.Bytes, Partitions: b.Partitions})
}

func (a *backlogAPI) backlog(ctx context.Context, dest string) (bus.Backlog, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if c, ok := a.cache[dest]; ok && a.now().Sub(c.at) < backlogCacheTTL {
		return c.backlog, nil
	}
	ctx, cancel := context.WithTimeout(ctx, backlogMeasureTimeout)
	defer cancel()
	b, err := a.measure(ctx, dest)
	if err != nil {
		return bus.Backlog{}, err
	}
	a.cache[dest] = cachedBacklog{at: a.now(), backlog: b}
	return b, nil
}
