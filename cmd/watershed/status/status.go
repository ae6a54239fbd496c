package status

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/watershed-dev/watershed/platform/bus"
	"github.com/watershed-dev/watershed/proto/watershedv1"
	"github.com/watershed-dev/watershed/services/node-collector/collector"
)

// Stream is one Watershed stream and its consumers, summed.
type Stream struct {
	Name         string
	Messages     uint64
	Bytes        uint64
	LimitBytes   int64
	OldestAge    time.Duration // zero when empty
	Consumers    int
	Pending      uint64 // not delivered to any consumer yet
	AckPending   int    // delivered, not acknowledged
	Redelivered  int
	MaxPartition uint64 // the largest pending of one consumer
	// OldestUnacked is the age of the oldest message a consumer has not
	// acknowledged: how far behind delivery is.
	OldestUnacked time.Duration
}

// Collector is one collector's last heartbeat.
type Collector struct {
	Name            string
	Age             time.Duration
	Targets         uint32
	Down            int
	SamplesSent     uint64
	SamplesDropped  uint64
	AssignmentEpoch uint64
}

// Group is the replicas of the router or of a writer, and the partitions
// each holds.
type Group struct {
	Name string
	// Held maps a live replica to the partitions it holds.
	Held map[string]int
	// Unheld counts partitions no replica holds now (a handover, or a
	// replica that died and whose claims have not expired).
	Unheld int
}

// Report is the state of the bus.
type Report struct {
	Streams    []Stream
	Collectors []Collector
	Groups     []Group
}

// Gather reads the state of every WS_ stream, the partition groups of the
// router and the writers (nats.partitions each), and the heartbeats.
func Gather(ctx context.Context, js jetstream.JetStream, partitions int, now time.Time) (*Report, error) {
	r := &Report{}
	names := js.StreamNames(ctx)
	var list []string
	for n := range names.Name() {
		if strings.HasPrefix(n, "WS_") {
			list = append(list, n)
		}
	}
	if err := names.Err(); err != nil {
		return nil, fmt.Errorf("list streams: %w", err)
	}
	sort.Strings(list)
	for _, name := range list {
		st, err := gatherStream(ctx, js, name, now)
		if err != nil {
			return nil, err
		}
		r.Streams = append(r.Streams, st)
	}
	groups, err := gatherGroups(ctx, js, partitions)
	if err != nil {
		return nil, err
	}
	r.Groups = groups
	kv, err := js.KeyValue(ctx, collector.HeartbeatBucket)
	switch {
	case errors.Is(err, jetstream.ErrBucketNotFound):
		return r, nil
	case err != nil:
		return nil, fmt.Errorf("heartbeats: %w", err)
	}
	keys, err := kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("heartbeats: %w", err)
	}
	for key := range keys.Keys() {
		entry, err := kv.Get(ctx, key)
		if err != nil {
			continue // expired meanwhile
		}
		var hb watershedv1.CollectorHeartbeat
		if err := proto.Unmarshal(entry.Value(), &hb); err != nil {
			return nil, fmt.Errorf("heartbeat %s: %w", key, err)
		}
		c := Collector{Name: hb.Name, Age: now.Sub(entry.Created()), Targets: hb.Targets, SamplesSent: hb.SamplesPublished,
			SamplesDropped: hb.SamplesDropped, AssignmentEpoch: hb.AssignmentEpoch}
		for _, th := range hb.TargetsHealth {
			if th.Health != "up" {
				c.Down++
			}
		}
		r.Collectors = append(r.Collectors, c)
	}
	sort.Slice(r.Collectors, func(i, j int) bool { return r.Collectors[i].Name < r.Collectors[j].Name })
	return r, nil
}

// gatherGroups reads the partition groups of the router and the writers:
// live members (heartbeats) and the claims.
func gatherGroups(ctx context.Context, js jetstream.JetStream, partitions int) ([]Group, error) {
	kv, err := js.KeyValue(ctx, bus.PartitionGroupsBucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("partition groups: %w", err)
	}
	keys, err := kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("partition groups: %w", err)
	}
	byName := map[string]*Group{}
	claims := map[string]int{}
	for key := range keys.Keys() {
		name, rest, ok := strings.Cut(key, ".")
		if !ok {
			continue
		}
		g := byName[name]
		if g == nil {
			g = &Group{Name: name, Held: map[string]int{}}
			byName[name] = g
		}
		switch {
		case strings.HasPrefix(rest, "m."):
			g.Held[strings.TrimPrefix(rest, "m.")] += 0
		case strings.HasPrefix(rest, "p."):
			entry, err := kv.Get(ctx, key)
			if err != nil {
				continue // released meanwhile
			}
			g.Held[string(entry.Value())]++
			claims[name]++
		}
	}
	var out []Group
	for _, g := range byName {
		g.Unheld = max(partitions-claims[g.Name], 0)
		out = append(out, *g)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func gatherStream(ctx context.Context, js jetstream.JetStream, name string, now time.Time) (Stream, error) {
	s, err := js.Stream(ctx, name)
	if err != nil {
		return Stream{}, fmt.Errorf("stream %s: %w", name, err)
	}
	info := s.CachedInfo()
	st := Stream{Name: name, Messages: info.State.Msgs, Bytes: info.State.Bytes, LimitBytes: info.Config.MaxBytes}
	if info.State.Msgs > 0 && !info.State.FirstTime.IsZero() {
		st.OldestAge = now.Sub(info.State.FirstTime)
	}
	consumers := s.ListConsumers(ctx)
	for ci := range consumers.Info() {
		st.Consumers++
		st.Pending += ci.NumPending
		st.AckPending += ci.NumAckPending
		st.Redelivered += ci.NumRedelivered
		st.MaxPartition = max(st.MaxPartition, ci.NumPending)
		st.OldestUnacked = max(st.OldestUnacked, bus.OldestUnackedAge(ctx, s, ci, now))
	}
	if err := consumers.Err(); err != nil {
		return Stream{}, fmt.Errorf("consumers of %s: %w", name, err)
	}
	return st, nil
}

// Print writes the report as two tables.
func Print(w io.Writer, r *Report) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STREAM\tMESSAGES\tBYTES\tFULL\tOLDEST\tCONSUMERS\tNOT DELIVERED\tMOST BEHIND\tNOT ACKED\tOLDEST NOT ACKED\tREDELIVERED")
	for _, s := range r.Streams {
		full := "-"
		if s.LimitBytes > 0 {
			full = fmt.Sprintf("%.1f%%", 100*float64(s.Bytes)/float64(s.LimitBytes))
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%s\t%d\n", s.Name, s.Messages, bytesString(s.Bytes), full,
			age(s.OldestAge), s.Consumers, s.Pending, s.MaxPartition, s.AckPending, age(s.OldestUnacked), s.Redelivered)
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "GROUP\tREPLICAS\tPARTITIONS HELD\tNOT HELD")
	for _, g := range r.Groups {
		var held []string
		for _, m := range slices.Sorted(maps.Keys(g.Held)) {
			held = append(held, fmt.Sprintf("%s:%d", m, g.Held[m]))
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%d\n", g.Name, len(g.Held), strings.Join(held, " "), g.Unheld)
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "COLLECTOR\tLAST HEARTBEAT\tTARGETS\tDOWN\tSAMPLES SENT\tSAMPLES DROPPED\tASSIGNMENT EPOCH")
	if len(r.Collectors) == 0 {
		fmt.Fprintln(tw, "(none alive)")
	}
	for _, c := range r.Collectors {
		fmt.Fprintf(tw, "%s\t%s ago\t%d\t%d\t%d\t%d\t%d\n", c.Name, age(c.Age), c.Targets, c.Down, c.SamplesSent, c.SamplesDropped, c.AssignmentEpoch)
	}
	return tw.Flush()
}

func age(d time.Duration) string {
	if d <= 0 {
		return "-"
	}
	return d.Round(time.Second).String()
}

func bytesString(b uint64) string {
	const unit = 1024
	if b < unit {
		return fmt.Sprintf("%d B", b)
	}
	div, exp := uint64(unit), 0
	for n := b / unit; n >= unit; n /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(b)/float64(div), "KMGTPE"[exp])
}
