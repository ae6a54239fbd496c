package replay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/time/rate"

	"github.com/watershed-dev/watershed/platform/bus"
	"github.com/watershed-dev/watershed/platform/config"
	"github.com/watershed-dev/watershed/platform/httpwriter"
	"github.com/watershed-dev/watershed/platform/remotewrite"
	"github.com/watershed-dev/watershed/services/writer-loki/lokiwriter"
	"github.com/watershed-dev/watershed/services/writer-mimir/mimirwriter"
	"github.com/watershed-dev/watershed/services/writer-tempo/tempowriter"
)

// UserAgent is sent with replayed requests.
const UserAgent = "Watershed-replay/0.1"

// Options are the command's flags.
type Options struct {
	// Destination is a key under externalServices: prometheus, loki, tempo.
	Destination string
	From, To    time.Time
	// ToURL sends to another backend than the configured one (for Tempo:
	// its host).
	ToURL string
	// Tenant replaces the messages' tenant.
	Tenant string
	// Rate bounds items per second; 0 is no bound.
	Rate float64
	// DryRun counts what would be sent and sends nothing.
	DryRun bool
	// ResumeFile keeps the position of the last delivered request.
	ResumeFile string
}

// Summary is what a replay did.
type Summary struct {
	Messages int
	Items    int
	Bytes    int // compressed payload bytes read
	Requests int
	Sent     int
	// Rejected counts items the backend refused for good, by reason
	// (too_old when a backend's age limit refuses them).
	Rejected map[string]int
	// Skipped counts items of messages that could not be read, by reason.
	Skipped     map[string]int
	LastSeq     uint64
	Interrupted bool
	Elapsed     time.Duration
}

// ParseTime reads RFC 3339, or a duration before now ("15m").
func ParseTime(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return time.Time{}, fmt.Errorf("%q is neither RFC 3339 nor a duration ago such as 15m", s)
	}
	return now.Add(-d), nil
}

// target is where and how a destination's requests go.
type target struct {
	sender httpwriter.Sender
	queue  httpwriter.Queue
	url    string
}

func newTarget(cfg *config.Config, o Options) (*target, error) {
	es := cfg.ExternalServices
	switch o.Destination {
	case bus.DestinationPrometheus:
		c := mimirwriter.SenderConfig(es.Prometheus, UserAgent)
		if o.ToURL != "" {
			c.URL = o.ToURL
		}
		return &target{sender: httpwriter.NewHTTPSender(c), queue: c.Queue, url: c.URL}, nil
	case bus.DestinationLoki:
		c := lokiwriter.SenderConfig(es.Loki)
		if o.ToURL != "" {
			c.URL = o.ToURL
		}
		c.UserAgent = UserAgent
		return &target{sender: httpwriter.NewHTTPSender(c), queue: c.Queue, url: c.URL}, nil
	case bus.DestinationTempo:
		t := es.Tempo
		if o.ToURL != "" {
			t.Host = o.ToURL
		}
		s, err := tempowriter.NewSender(t)
		if err != nil {
			return nil, err
		}
		return &target{sender: s, queue: tempowriter.Queue(t, cfg.Receivers.Processors.Batch), url: t.Host}, nil
	}
	return nil, fmt.Errorf("--destination %q is not prometheus, loki or tempo", o.Destination)
}

// resumeState is the resume file.
type resumeState struct {
	Destination string    `json:"destination"`
	From        time.Time `json:"from"`
	To          time.Time `json:"to"`
	LastSeq     uint64    `json:"lastSeq"`
}

func readResume(o Options) (uint64, error) {
	if o.ResumeFile == "" {
		return 0, nil
	}
	b, err := os.ReadFile(o.ResumeFile)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("--resume: %w", err)
	}
	var st resumeState
	if err := json.Unmarshal(b, &st); err != nil {
		return 0, fmt.Errorf("--resume %s: %w", o.ResumeFile, err)
	}
	if st.Destination != o.Destination || !st.From.Equal(o.From) || !st.To.Equal(o.To) {
		return 0, fmt.Errorf("--resume %s is of destination %s from %s to %s, not this replay", o.ResumeFile, st.Destination, st.From.Format(time.RFC3339), st.To.Format(time.RFC3339))
	}
	return st.LastSeq, nil
}

func writeResume(o Options, seq uint64) error {
	if o.ResumeFile == "" || o.DryRun {
		return nil
	}
	b, _ := json.Marshal(resumeState{Destination: o.Destination, From: o.From, To: o.To, LastSeq: seq})
	tmp := o.ResumeFile + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, o.ResumeFile)
}

// Run replays the window. It returns the summary also when ctx ends
// (Ctrl-C), with Interrupted set; the error is nil then.
func Run(ctx context.Context, js jetstream.JetStream, cfg *config.Config, o Options, progress io.Writer) (*Summary, error) {
	if !o.To.After(o.From) {
		return nil, fmt.Errorf("--to %s is not after --from %s", o.To.Format(time.RFC3339), o.From.Format(time.RFC3339))
	}
	tg, err := newTarget(cfg, o)
	if err != nil {
		return nil, err
	}
	stream, err := js.Stream(ctx, bus.DestStream(o.Destination))
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", bus.DestStream(o.Destination), err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", bus.DestStream(o.Destination), err)
	}
	resumeAfter, err := readResume(o)
	if err != nil {
		return nil, err
	}
	end := info.State.LastSeq
	oc := jetstream.OrderedConsumerConfig{FilterSubjects: []string{bus.DestSubjects(o.Destination)}}
	if resumeAfter > 0 {
		oc.DeliverPolicy, oc.OptStartSeq = jetstream.DeliverByStartSequencePolicy, resumeAfter+1
	} else {
		from := o.From
		oc.DeliverPolicy, oc.OptStartTime = jetstream.DeliverByStartTimePolicy, &from
	}
	r := &replayer{o: o, tg: tg, sum: &Summary{Rejected: map[string]int{}, Skipped: map[string]int{}}, start: time.Now()}
	if o.Rate > 0 {
		r.limiter = rate.NewLimiter(rate.Limit(o.Rate), max(int(o.Rate), tg.queue.MaxItemsPerSend, 1))
	}
	if end == 0 || (resumeAfter > 0 && resumeAfter >= end) || info.State.LastTime.Before(o.From) {
		return r.finish(), nil
	}
	cons, err := js.OrderedConsumer(ctx, bus.DestStream(o.Destination), oc)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", bus.DestStream(o.Destination), err)
	}
	r.endSeq = end
	stopProgress := r.showProgress(progress)
	defer stopProgress()
	if err := r.read(ctx, cons); err != nil && ctx.Err() == nil {
		return nil, err
	}
	if ctx.Err() != nil {
		r.sum.Interrupted = true
		return r.finish(), nil
	}
	if err := r.flush(ctx); err != nil && ctx.Err() == nil {
		return nil, err
	}
	r.sum.Interrupted = ctx.Err() != nil
	r.mu.Lock()
	r.done = !r.sum.Interrupted
	r.mu.Unlock()
	return r.finish(), nil
}

// replayer joins and delivers messages as a writer does.
type replayer struct {
	o       Options
	tg      *target
	sum     *Summary
	limiter *rate.Limiter
	start   time.Time

	// firstSeq and endSeq bound what is read: the first message of the
	// window, and the stream's last when the replay started (the window
	// may end before it, so the ETA is an upper bound).
	firstSeq, endSeq uint64
	seen             uint64 // last sequence read, for the progress line
	done             bool
	// mu guards the fields the progress line reads: firstSeq, seen, done
	// and the summary's counts.
	mu sync.Mutex

	joiner  remotewrite.Joiner
	pending int    // messages (or their chunks) joined, not delivered
	items   int    // in the pending messages
	bytes   int    // uncompressed, pending
	tenant  string // of the pending messages
	lastSeq uint64 // of the last message joined whole
	parts   []remotewrite.Part
}

func (r *replayer) finish() *Summary {
	r.sum.Elapsed = time.Since(r.start)
	return r.sum
}

// read goes through the window in stream order.
func (r *replayer) read(ctx context.Context, cons jetstream.Consumer) error {
	for {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		msg, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) || errors.Is(err, context.Canceled) {
				return ctx.Err()
			}
			if errors.Is(err, nats.ErrTimeout) {
				return nil // nothing more within the window
			}
			return fmt.Errorf("read: %w", err)
		}
		md, err := msg.Metadata()
		if err != nil {
			return fmt.Errorf("read: %w", err)
		}
		seq := md.Sequence.Stream
		if seq > r.endSeq || md.Timestamp.After(r.o.To) {
			return nil
		}
		r.mu.Lock()
		if r.firstSeq == 0 {
			r.firstSeq = seq
		}
		r.seen = seq
		r.mu.Unlock()
		if md.Timestamp.Before(r.o.From) {
			continue
		}
		if err := r.add(ctx, msg, seq); err != nil {
			return err
		}
		if seq == r.endSeq {
			return nil
		}
	}
}

// add joins one message, delivering what is pending first when it would
// not fit the same request.
func (r *replayer) add(ctx context.Context, msg jetstream.Msg, seq uint64) error {
	h := msg.Headers()
	count, err := bus.Count(h)
	if err != nil {
		r.sum.Skipped["bad_header"]++
		return nil
	}
	parts, err := remotewrite.SplitBlock(r.parts[:0], msg.Data(), h.Get(bus.HeaderChunks), count)
	if err != nil && !errors.Is(err, remotewrite.ErrNotSnappy) {
		parts, err = remotewrite.SplitBlock(r.parts[:0], msg.Data(), "", count) // sent whole, as the writer does
	}
	if err != nil {
		r.sum.Skipped["corrupt_payload"] += count
		return nil
	}
	r.parts = parts
	tenant := h.Get(bus.HeaderTenant)
	if r.o.Tenant != "" {
		tenant = r.o.Tenant
	}
	r.mu.Lock()
	r.sum.Messages++
	r.sum.Items += count
	r.sum.Bytes += len(msg.Data())
	r.mu.Unlock()
	q := r.tg.queue
	// A message larger than a request (filled with chunks by a collector)
	// is cut where its chunks met, as the writer cuts it.
	for i, part := range parts {
		if r.pending > 0 && (tenant != r.tenant || over(r.items+part.Items, q.MaxItemsPerSend) || over(r.bytes+part.Decoded, q.MaxBytesPerSend)) {
			if err := r.flush(ctx); err != nil {
				return err
			}
		}
		if r.pending == 0 {
			r.joiner.Reset()
		}
		if err := r.joiner.AddPart(part); err != nil {
			r.mu.Lock()
			r.sum.Skipped["corrupt_payload"] += part.Items
			r.sum.Items -= part.Items
			r.mu.Unlock()
		} else {
			r.pending++
			r.items += part.Items
			r.bytes += part.Decoded
			r.tenant = tenant
		}
		if i == len(parts)-1 {
			// Resuming starts after the last message delivered whole.
			r.lastSeq = seq
		}
	}
	return nil
}

func over(n, limit int) bool { return limit > 0 && n > limit }

// flush delivers the pending request.
func (r *replayer) flush(ctx context.Context) error {
	if r.pending == 0 {
		return nil
	}
	items := r.items
	r.pending, r.items, r.bytes = 0, 0, 0
	if r.limiter != nil {
		if err := r.limiter.WaitN(ctx, min(items, r.limiter.Burst())); err != nil {
			return err
		}
	}
	if r.o.DryRun {
		r.sum.LastSeq = r.lastSeq
		return nil
	}
	r.sum.Requests++
	res, err := httpwriter.Deliver(ctx, r.tg.sender, r.tg.queue, r.tenant, &r.joiner, nil)
	var se *httpwriter.SendError
	switch {
	case err == nil:
		r.sum.Sent += items - res.Rejected
		if res.Rejected > 0 {
			r.sum.Rejected[res.RejectReason] += res.Rejected
		}
	case errors.As(err, &se):
		r.sum.Rejected[se.Reason] += items
	default:
		return err // interrupted: this request is not done, the resume file says so
	}
	r.sum.LastSeq = r.lastSeq
	return writeResume(r.o, r.lastSeq)
}

// showProgress prints a progress line every half second until stopped.
func (r *replayer) showProgress(w io.Writer) (stop func()) {
	if w == nil {
		return func() {}
	}
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				fmt.Fprintln(w, r.progressLine())
				return
			case <-t.C:
				fmt.Fprint(w, "\r"+r.progressLine())
			}
		}
	}()
	return func() { close(done); <-finished }
}

func (r *replayer) progressLine() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	elapsed := time.Since(r.start)
	total, done := uint64(1), uint64(0)
	if r.firstSeq > 0 {
		total, done = r.endSeq-r.firstSeq+1, r.seen-r.firstSeq+1
	}
	if r.done {
		done = total
	}
	itemRate := float64(r.sum.Items) / max(elapsed.Seconds(), 1e-3)
	eta := "?"
	if done > 0 && done < total {
		eta = (time.Duration(float64(elapsed) * float64(total-done) / float64(done))).Round(time.Second).String()
	} else if done >= total {
		eta = "0s"
	}
	pct := 100 * float64(done) / float64(max(total, 1))
	return fmt.Sprintf("[%-30s] %5.1f%%  %d messages  %d items  %s  %.0f items/s  ETA %s",
		strings.Repeat("=", int(pct*30/100)), pct, r.sum.Messages, r.sum.Items, humanBytes(r.sum.Bytes), itemRate, eta)
}

func humanBytes(n int) string {
	switch {
	case n >= 1<<30:
		return strconv.FormatFloat(float64(n)/(1<<30), 'f', 1, 64) + " GiB"
	case n >= 1<<20:
		return strconv.FormatFloat(float64(n)/(1<<20), 'f', 1, 64) + " MiB"
	case n >= 1<<10:
		return strconv.FormatFloat(float64(n)/(1<<10), 'f', 1, 64) + " KiB"
	}
	return strconv.Itoa(n) + " B"
}

// Print writes the summary.
func Print(w io.Writer, o Options, url string, s *Summary) {
	verb := "sent"
	if o.DryRun {
		verb = "would send (dry run)"
	}
	fmt.Fprintf(w, "replay of %s from %s to %s to %s: %s\n", o.Destination, o.From.Format(time.RFC3339), o.To.Format(time.RFC3339), url, map[bool]string{true: "interrupted", false: "done"}[s.Interrupted])
	fmt.Fprintf(w, "  messages %d, items %d, %s read in %s; %d requests\n", s.Messages, s.Items, humanBytes(s.Bytes), s.Elapsed.Round(time.Millisecond), s.Requests)
	if o.DryRun {
		fmt.Fprintf(w, "  %s: %d items\n", verb, s.Items)
	} else {
		fmt.Fprintf(w, "  %s: %d items\n", verb, s.Sent)
	}
	for _, part := range []struct {
		name string
		m    map[string]int
	}{{"refused by the backend", s.Rejected}, {"skipped (unreadable)", s.Skipped}} {
		var keys []string
		for k := range part.m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(w, "  %s: %d items (%s)\n", part.name, part.m[k], k)
		}
	}
	if s.Interrupted && o.ResumeFile != "" {
		fmt.Fprintf(w, "  resume with the same flags and --resume %s (continues after stream sequence %d)\n", o.ResumeFile, s.LastSeq)
	}
}

// URL is where a replay with these options sends.
func URL(cfg *config.Config, o Options) (string, error) {
	tg, err := newTarget(cfg, o)
	if err != nil {
		return "", err
	}
	return tg.url, nil
}
