package status

import (
	"context"
	"errors"
	"fmt"
	"io"
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

// Report is the state of the bus.
type Report struct {
	Streams    []Stream
	Collectors []Collector
}

// Gather reads the state of every WS_ stream and the heartbeats.
func Gather(ctx context.Context, js jetstream.JetStream, now time.Time) (*Report, error) {
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
