package logtail

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/watershed-dev/watershed/platform/bus"
	"github.com/watershed-dev/watershed/platform/lokipush"
	"github.com/watershed-dev/watershed/platform/remotewrite"
)

// source is one path to tail and what its lines are labelled with.
type source struct {
	path   string
	format int
	// kind is "pod" or "file", a metrics label.
	kind string
	// streamLabels are the Loki stream labels of stdout and stderr lines
	// (the same for formats without streams).
	streamLabels [numStreams]string
	partitionKey string
	meta         []lokipush.Pair
}

// Formats of a source.
const (
	formatRaw = iota
	formatCRI
	formatDocker
	// formatAuto tells CRI and Docker json-file lines apart by their
	// first byte: pod log files are one or the other, depending on the
	// runtime (cri-dockerd links Docker's files there).
	formatAuto
)

// fileTailer follows one path through rotations until its file is deleted.
type fileTailer struct {
	sh    *shared
	src   *source
	batch batch
	cur   *openFile
	// rotatedAt is when the path was first seen naming another file; the
	// old one is drained a poll later, once its writer let go of it.
	rotatedAt time.Time
	// drained are the files last read to their end, never read again.
	drained []fileID
}

// maxDrained bounds fileTailer.drained.
const maxDrained = 16

func newFileTailer(sh *shared, src *source) *fileTailer {
	t := &fileTailer{sh: sh, src: src}
	t.batch.src, t.batch.limits = src, sh.limits()
	return t
}

// run tails until ctx ends or the file is deleted and drained. It returns
// the error that kept it from opening the file.
func (t *fileTailer) run(ctx context.Context) error {
	done, err := t.resume(ctx)
	if err != nil || done {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	defer func() { t.cur.close() }()
	tick := time.NewTicker(t.sh.cfg.PollInterval)
	defer tick.Stop()
	for {
		res, err := t.readOnce(ctx, t.cur, false)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			t.sh.metrics.readErrors.WithLabelValues(t.src.kind).Inc()
			t.sh.logger.Warn("tail failed", "path", t.cur.name, "err", err)
		case res.rewritten:
			if err := t.truncated(ctx, t.cur); err != nil && ctx.Err() == nil {
				t.sh.logger.Warn("reading the copy of a truncated file failed", "path", t.src.path, "err", err)
			}
			continue
		case res.consumed > 0 && !res.atEOF:
			continue // more is there already
		case res.consumed == 0:
			done, err := t.check(ctx)
			if err != nil && ctx.Err() == nil {
				t.sh.logger.Warn("rotation check failed", "path", t.src.path, "err", err)
			}
			if done {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// resume opens the path where its position says, first draining the file
// it had when that was renamed while the collector was down. done means
// there is nothing to tail (the path is gone).
func (t *fileTailer) resume(ctx context.Context) (done bool, err error) {
	path := t.src.path
	pos, known := t.sh.positions.get(path)
	cur, openErr := openAt(path)
	if openErr != nil && !errors.Is(openErr, os.ErrNotExist) {
		return false, openErr
	}
	if known && (cur == nil || cur.id != (fileID{pos.Dev, pos.Ino})) {
		var next fileID
		if cur != nil {
			next = cur.id
		}
		if err := t.drainRenamed(ctx, pos, next); err != nil {
			cur.close()
			return false, err
		}
	}
	if cur == nil {
		t.sh.positions.forget(path)
		return true, nil
	}
	cur.persist = true
	t.cur = cur
	if known && cur.id == (fileID{pos.Dev, pos.Ino}) {
		cur.gen, cur.offset, cur.pendingEnd, cur.skipping = pos.Gen, pos.Offset, pos.PendingEnd, pos.Skipping
		cur.tail = append(cur.tail[:0], pos.Tail...)
		if fi, err := cur.f.Stat(); err == nil && fi.Size() < cur.offset {
			// Truncated while we were down (copytruncate).
			if err := t.truncated(ctx, cur); err != nil {
				return false, err
			}
		}
	}
	t.sh.positions.set(path, cur.position())
	return false, nil
}

// drainRenamed finds the file a position names beside its path (a
// rotation renamed it while the collector was down) and reads it to the end.
func (t *fileTailer) drainRenamed(ctx context.Context, pos position, next fileID) error {
	want := fileID{pos.Dev, pos.Ino}
	old := findSibling(t.src.path, func(name string, fi os.FileInfo) bool { return idOf(fi) == want })
	if old == nil {
		t.sh.metrics.rotations.WithLabelValues(t.src.kind, "rotated_away_while_down").Inc()
		t.sh.logger.Warn("file rotated away while the collector was down; its unread lines are lost", "path", t.src.path, "offset", pos.Offset)
		return nil
	}
	defer old.close()
	old.gen, old.offset, old.pendingEnd, old.skipping, old.persist = pos.Gen, pos.Offset, pos.PendingEnd, pos.Skipping, true
	old.tail = append(old.tail, pos.Tail...)
	t.sh.metrics.rotations.WithLabelValues(t.src.kind, "renamed_while_down").Inc()
	if err := t.drain(ctx, old); err != nil {
		return err
	}
	return t.drainBetween(ctx, old, next)
}

// drainBetween reads the files rotated after old and before the file next
// now at the path: two rotations within one poll (or while the collector
// was down) leave one that was never at the path when we looked. They are
// the siblings other than old and next written after old's last write,
// read whole in the order they were written.
func (t *fileTailer) drainBetween(ctx context.Context, old *openFile, next fileID) error {
	ofi, err := old.f.Stat()
	if err != nil {
		return err
	}
	since := ofi.ModTime()
	var between []*openFile
	defer func() {
		for _, o := range between {
			o.close()
		}
	}()
	for {
		o := findSibling(t.src.path, func(name string, fi os.FileInfo) bool {
			id := idOf(fi)
			// Equal times count: file times tick coarsely (a few ms).
			if id == old.id || id == next || fi.ModTime().Before(since) || slices.Contains(t.drained, id) {
				return false
			}
			for _, b := range between {
				if b.id == id {
					return false
				}
			}
			return true
		})
		if o == nil {
			break
		}
		between = append(between, o)
	}
	// In the order written; equal times by inode, which filesystems
	// mostly hand out in increasing order.
	slices.SortFunc(between, func(a, b *openFile) int {
		if c := a.modTime().Compare(b.modTime()); c != 0 {
			return c
		}
		return cmp.Compare(a.id.ino, b.id.ino)
	})
	for _, o := range between {
		o.persist = true
		t.sh.metrics.rotations.WithLabelValues(t.src.kind, "renamed_between_polls").Inc()
		if err := t.drain(ctx, o); err != nil {
			return err
		}
	}
	return nil
}

// check looks at the path and the open file once caught up: a truncated
// file starts over, a renamed one is drained and the new one opened, a
// deleted one is drained and released (done).
func (t *fileTailer) check(ctx context.Context) (done bool, err error) {
	ofi, err := t.cur.f.Stat()
	if err != nil {
		return false, err
	}
	if ofi.Size() < t.cur.offset {
		return false, t.truncated(ctx, t.cur)
	}
	fi, err := os.Stat(t.src.path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if nlink(ofi) > 0 {
			return false, nil // renamed, the new file is not there yet
		}
		if err := t.drain(ctx, t.cur); err != nil {
			return false, err
		}
		t.sh.positions.forget(t.src.path)
		t.sh.metrics.released.WithLabelValues(t.src.kind).Inc()
		return true, nil
	case err != nil:
		return false, err
	case idOf(fi) == t.cur.id:
		t.rotatedAt = time.Time{}
		return false, nil
	case t.rotatedAt.IsZero():
		t.rotatedAt = time.Now()
		return false, nil
	}
	// Renamed and replaced, and the old file had a poll to settle.
	if err := t.drain(ctx, t.cur); err != nil {
		return false, err
	}
	next, err := openAt(t.src.path)
	if err != nil {
		return false, err
	}
	if err := t.drainBetween(ctx, t.cur, next.id); err != nil {
		next.close()
		return false, err
	}
	t.cur.close()
	next.persist = true
	t.cur, t.rotatedAt = next, time.Time{}
	t.sh.positions.set(t.src.path, next.position())
	t.sh.metrics.rotations.WithLabelValues(t.src.kind, "renamed").Inc()
	t.sh.logger.Debug("file rotated by rename", "path", t.src.path, "inode", next.id.ino)
	return false, nil
}

// truncated handles a copytruncate of o: the lines between the position
// and the truncation are read from the copy when one beside the path ends
// with the bytes read last, then o is read from its start.
func (t *fileTailer) truncated(ctx context.Context, o *openFile) error {
	outcome := "copytruncate_no_copy"
	if len(o.tail) > 0 {
		cp := findSibling(t.src.path, func(name string, fi os.FileInfo) bool {
			return idOf(fi) != o.id && fi.Size() >= o.offset && endsAt(name, o.offset, o.tail)
		})
		if cp != nil {
			// The copy has the file's bytes at the file's offsets: it goes
			// on under the file's name in message ids, so a batch in flight
			// at a crash is recognised as the same one.
			cp.offset, cp.pendingEnd, cp.gen, cp.skipping = o.offset, o.pendingEnd, o.gen, o.skipping
			err := t.drain(ctx, cp)
			cp.close()
			if err != nil {
				return err
			}
			outcome = "copytruncate"
		}
	}
	t.sh.metrics.rotations.WithLabelValues(t.src.kind, outcome).Inc()
	t.sh.logger.Debug("file truncated", "path", t.src.path, "outcome", outcome, "offset", o.offset)
	o.offset, o.pendingEnd, o.skipping, o.tail, o.gen = 0, 0, false, o.tail[:0], newGen()
	if o.persist {
		t.sh.positions.set(t.src.path, o.position())
	}
	return nil
}

// drain reads o to its end, flushing the last line even without its
// newline: nothing more will be written to it.
func (t *fileTailer) drain(ctx context.Context, o *openFile) error {
	for {
		res, err := t.readOnce(ctx, o, true)
		switch {
		case err != nil:
			return err
		case res.rewritten:
			if err := t.truncated(ctx, o); err != nil {
				return err
			}
		case res.consumed == 0:
			if len(t.drained) == maxDrained {
				t.drained = t.drained[1:]
			}
			t.drained = append(t.drained, o.id)
			return nil
		}
	}
}

// findSibling opens the first regular file beside path, other than path
// and compressed rotations, that match accepts.
func findSibling(path string, match func(name string, fi os.FileInfo) bool) *openFile {
	// A pod log path may be a link to the runtime's own file (cri-dockerd
	// links Docker's json-file logs): rotations happen beside the target.
	if target, err := filepath.EvalSymlinks(path); err == nil {
		path = target
	}
	dir, base := filepath.Split(path)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	stem := strings.TrimSuffix(base, filepath.Ext(base))
	for _, e := range entries {
		name := e.Name()
		if name == base || !strings.HasPrefix(name, stem) || strings.HasSuffix(name, ".gz") || !e.Type().IsRegular() {
			continue
		}
		full := filepath.Join(dir, name)
		fi, err := os.Stat(full)
		if err != nil || !match(full, fi) {
			continue
		}
		if o, err := openAt(full); err == nil {
			return o
		}
	}
	return nil
}

// endsAt reports whether the bytes of name just before offset are tail.
func endsAt(name string, offset int64, tail []byte) bool {
	f, err := os.Open(name)
	if err != nil {
		return false
	}
	defer f.Close()
	got := make([]byte, len(tail))
	if _, err := f.ReadAt(got, offset-int64(len(tail))); err != nil {
		return false
	}
	return bytes.Equal(got, tail)
}

func nlink(fi os.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Nlink)
	}
	return 1
}

// publish sends the committed entries of the batch, the bytes [start, end)
// of o, and returns once JetStream acknowledged them. The message id names
// the file and the range, so the same range is stored once.
func (t *fileTailer) publish(o *openFile, start, end int64) error {
	raw := t.sh.getBuf(0)
	defer func() { t.sh.putBuf(raw) }()
	raw = t.batch.body(raw[:0])
	comp := t.sh.getBuf(0)
	defer func() { t.sh.putBuf(comp) }()
	comp = remotewrite.Compress(comp[:0], raw)

	msg := nats.NewMsg(bus.RawSubject(bus.SignalLogs, bus.Partition(t.src.partitionKey, t.sh.partitions)))
	msg.Data = comp
	msg.Header.Set(bus.HeaderSignal, bus.SignalLogs)
	msg.Header.Set(bus.HeaderEncoding, bus.EncodingLokiPushSnappy)
	msg.Header.Set(bus.HeaderSource, t.sh.node)
	msg.Header.Set(bus.HeaderPartitionKey, t.src.partitionKey)
	msg.Header.Set(bus.HeaderCount, strconv.Itoa(t.batch.counts.entries))
	msg.Header.Set(bus.HeaderTime, strconv.FormatInt(time.Now().UnixMilli(), 10))
	msg.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("log-%s-%s-%d-%d", t.sh.node, o.gen, start, end))
	// Not ctx: a publish under way at shutdown may finish within the
	// flush timeout; flushCtx ends after it.
	if _, err := t.sh.pub.Publish(t.sh.flushCtx, msg); err != nil {
		return err
	}
	c := t.batch.counts
	m := t.sh.metrics
	m.lines.WithLabelValues(t.src.kind).Add(float64(c.entries))
	m.truncated.WithLabelValues(t.src.kind).Add(float64(c.truncated))
	m.invalidUTF8.WithLabelValues(t.src.kind).Add(float64(c.invalidUTF8))
	m.parseErrors.WithLabelValues(t.src.kind).Add(float64(c.parseErrors))
	return nil
}
