package logtail

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/grafana/dskit/backoff"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/prometheus/model/labels"

	"github.com/watershed-dev/watershed/platform/bus"
	"github.com/watershed-dev/watershed/platform/config"
	"github.com/watershed-dev/watershed/platform/lokipush"
	"github.com/watershed-dev/watershed/platform/remotewrite"
)

// JobJournal is the job label of journal entries.
const JobJournal = "integrations/kubernetes/journal"

// Journal batches: at most this many entries, or what came within
// journalFlushWait of the first.
const (
	journalMaxEntries = 2000
	journalFlushWait  = 250 * time.Millisecond
)

// syslog priorities, the level label.
var priorityLevels = []string{"emerg", "alert", "crit", "error", "warning", "notice", "info", "debug"}

// journalReader follows the systemd journal through journalctl and
// publishes its entries. Its position is the cursor of the last entry
// JetStream acknowledged.
type journalReader struct {
	sh      *shared
	cfg     config.JournalConfig
	cluster string
	key     string // in the positions file

	streams map[string]*lokipush.Stream // by labels
	order   []string
	first   string // cursor of the batch's first entry
	last    string
	counts  counts
}

func newJournalReader(sh *shared, cfg config.JournalConfig, cluster string) *journalReader {
	return &journalReader{sh: sh, cfg: cfg, cluster: cluster, key: "journal:" + cfg.Path, streams: map[string]*lokipush.Stream{}}
}

// journalEntry is one entry as journalctl -o json writes it.
type journalEntry struct {
	cursor  string
	ts      time.Time
	unit    string
	level   string
	bootID  string
	message []byte
}

// run follows the journal until ctx ends, starting journalctl again with
// backoff when it exits.
func (j *journalReader) run(ctx context.Context) {
	bo := backoff.New(ctx, backoff.Config{MinBackoff: time.Second, MaxBackoff: 30 * time.Second})
	for ctx.Err() == nil {
		err := j.follow(ctx)
		if ctx.Err() != nil {
			return
		}
		j.sh.metrics.readErrors.WithLabelValues("journal").Inc()
		j.sh.logger.Warn("reading the journal failed; starting journalctl again", "path", j.cfg.Path, "err", err)
		bo.Wait()
	}
}

func (j *journalReader) args(pos position) []string {
	args := []string{"--directory=" + j.cfg.Path, "--output=json", "--all", "--follow", "--no-pager", "--no-tail"}
	if pos.Cursor != "" {
		args = append(args, "--after-cursor="+pos.Cursor)
	} else {
		args = append(args, fmt.Sprintf("--since=-%ds", int(j.cfg.MaxAge.Seconds())))
	}
	for _, u := range j.cfg.Units {
		args = append(args, "--unit="+u)
	}
	return args
}

// follow runs journalctl once and publishes what it writes, in batches.
func (j *journalReader) follow(ctx context.Context) error {
	pos, _ := j.sh.positions.get(j.key)
	cmd := exec.CommandContext(ctx, j.cfg.Journalctl, j.args(pos)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", j.cfg.Journalctl, err)
	}
	waited := false
	defer func() {
		if !waited {
			_ = cmd.Wait()
		}
	}()
	j.reset() // what an earlier run had not published is read again
	entries := make(chan journalEntry, 256)
	readErr := make(chan error, 1)
	go func() { readErr <- readJournal(ctx, out, entries); close(entries) }()
	// A batch in flight at a crash is read again up to the same cursor and
	// sent under the same id.
	replayUntil := pos.PendingCursor
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
			replayUntil = "" // it did not come: the batch goes as it is
			if err := j.flush(pos.Cursor); err != nil {
				return err
			}
			pos, _ = j.sh.positions.get(j.key)
		case e, ok := <-entries:
			if !ok {
				rerr := <-readErr
				werr := cmd.Wait()
				waited = true
				return fmt.Errorf("journalctl exited (%v, %v): %s", werr, rerr, strings.TrimSpace(stderr.String()))
			}
			n := j.add(e)
			if n == 1 {
				timer.Reset(journalFlushWait)
			}
			switch {
			case replayUntil != "" && e.cursor != replayUntil && n < 4*journalMaxEntries:
				continue
			case replayUntil != "" || n >= journalMaxEntries:
				replayUntil = ""
				timer.Stop()
				if err := j.flush(pos.Cursor); err != nil {
					return err
				}
				pos, _ = j.sh.positions.get(j.key)
			}
		}
	}
}

// readJournal decodes journalctl's JSON lines.
func readJournal(ctx context.Context, r io.Reader, out chan<- journalEntry) error {
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		line, err := br.ReadBytes('\n')
		if len(bytes.TrimSpace(line)) > 0 {
			e, perr := parseJournalEntry(line)
			if perr != nil {
				return perr
			}
			select {
			case out <- e:
			case <-ctx.Done():
				return nil
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func parseJournalEntry(line []byte) (journalEntry, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(line, &fields); err != nil {
		return journalEntry{}, fmt.Errorf("journal entry: %w", err)
	}
	var e journalEntry
	_ = json.Unmarshal(fields["__CURSOR"], &e.cursor)
	if e.cursor == "" {
		return e, errors.New("journal entry without __CURSOR")
	}
	var usec string
	_ = json.Unmarshal(fields["__REALTIME_TIMESTAMP"], &usec)
	if n, err := strconv.ParseInt(usec, 10, 64); err == nil {
		e.ts = time.UnixMicro(n)
	} else {
		e.ts = time.Now()
	}
	_ = json.Unmarshal(fields["_SYSTEMD_UNIT"], &e.unit)
	_ = json.Unmarshal(fields["_BOOT_ID"], &e.bootID)
	var prio string
	if json.Unmarshal(fields["PRIORITY"], &prio) == nil {
		if p, err := strconv.Atoi(prio); err == nil && p >= 0 && p < len(priorityLevels) {
			e.level = priorityLevels[p]
		}
	}
	e.message = journalField(fields["MESSAGE"])
	return e, nil
}

// journalField is a field's bytes: journalctl writes text as a string and
// binary data as an array of byte values.
func journalField(raw json.RawMessage) []byte {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return []byte(s)
	}
	var b []byte
	var ints []int
	if json.Unmarshal(raw, &ints) == nil {
		for _, v := range ints {
			b = append(b, byte(v))
		}
	}
	return b
}

// add puts an entry into the batch and returns the batch's size.
func (j *journalReader) add(e journalEntry) int {
	b := labels.NewScratchBuilder(6)
	if j.cluster != "" {
		b.Add("cluster", j.cluster)
	}
	b.Add("job", JobJournal)
	b.Add("node", j.sh.node)
	if e.unit != "" {
		b.Add("unit", e.unit)
	}
	if e.level != "" {
		b.Add("level", e.level)
	}
	b.Sort()
	key := b.Labels().String()
	s := j.streams[key]
	if s == nil {
		s = &lokipush.Stream{}
		j.streams[key] = s
	}
	if s.Len() == 0 {
		j.order = append(j.order, key)
	}
	var meta []lokipush.Pair
	if e.bootID != "" {
		meta = []lokipush.Pair{{Name: "boot_id", Value: e.bootID}}
	}
	s.Append(e.ts, sanitize(e.message, j.sh.cfg.MaxLineSize, &j.counts), meta)
	j.counts.entries++
	if j.first == "" {
		j.first = e.cursor
	}
	j.last = e.cursor
	return j.counts.entries
}

// flush publishes the batch: its last cursor is on disk as pending before
// the publish, and becomes the position after the ack.
func (j *journalReader) flush(acked string) error {
	if j.counts.entries == 0 {
		return nil
	}
	j.sh.positions.set(j.key, position{Cursor: acked, PendingCursor: j.last})
	if err := j.sh.positions.sync(); err != nil {
		return err
	}
	var body []byte
	for _, key := range j.order {
		body = lokipush.AppendStream(body, key, j.streams[key])
	}
	h := fnv.New64a()
	h.Write([]byte(j.first + "|" + j.last))
	partitionKey := "journal/" + j.sh.node
	msg := nats.NewMsg(bus.RawSubject(bus.SignalLogs, bus.Partition(partitionKey, j.sh.partitions)))
	msg.Data = remotewrite.Compress(nil, body)
	msg.Header.Set(bus.HeaderSignal, bus.SignalLogs)
	msg.Header.Set(bus.HeaderEncoding, bus.EncodingLokiPushSnappy)
	msg.Header.Set(bus.HeaderSource, j.sh.node)
	msg.Header.Set(bus.HeaderPartitionKey, partitionKey)
	msg.Header.Set(bus.HeaderCount, strconv.Itoa(j.counts.entries))
	msg.Header.Set(bus.HeaderTime, strconv.FormatInt(time.Now().UnixMilli(), 10))
	msg.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("journal-%s-%x", j.sh.node, h.Sum64()))
	if _, err := j.sh.pub.Publish(j.sh.flushCtx, msg); err != nil {
		return err
	}
	j.sh.positions.set(j.key, position{Cursor: j.last})
	m := j.sh.metrics
	m.lines.WithLabelValues("journal").Add(float64(j.counts.entries))
	m.truncated.WithLabelValues("journal").Add(float64(j.counts.truncated))
	m.invalidUTF8.WithLabelValues("journal").Add(float64(j.counts.invalidUTF8))
	j.reset()
	return nil
}

func (j *journalReader) reset() {
	for _, s := range j.streams {
		s.Reset()
	}
	j.order, j.first, j.last, j.counts = j.order[:0], "", "", counts{}
}
