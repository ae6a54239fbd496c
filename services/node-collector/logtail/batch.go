package logtail

import (
	"bytes"
	"time"
	"unicode/utf8"

	"github.com/watershed-dev/watershed/platform/lokipush"
)

// batch collects the entries of one read of one file, per output stream,
// and remembers the last point where no partial line was pending, so that
// what is published ends at a byte offset the next read can start from.
type batch struct {
	src     *source
	limits  limits
	streams [numStreams]lokipush.Stream
	joins   [numStreams]join
	clean   [numStreams]int // entry count per stream at the last clean point
	cleanAt int             // byte offset in the read where that was
	now     time.Time       // timestamp of lines that carry none

	counts      counts // of everything appended
	cleanCounts counts // at the last clean point
}

// counts are what a batch tells the metrics.
type counts struct{ entries, truncated, invalidUTF8, parseErrors int }

type limits struct {
	maxLineSize     int
	maxPartialLines int
}

// join accumulates the parts of a line the runtime split.
type join struct {
	ts    time.Time
	buf   []byte
	parts int
}

func (b *batch) reset(now time.Time) {
	for i := range b.streams {
		b.streams[i].Reset()
		b.joins[i].parts = 0
		b.joins[i].buf = b.joins[i].buf[:0]
		b.clean[i] = 0
	}
	b.cleanAt, b.now = 0, now
	b.counts, b.cleanCounts = counts{}, counts{}
}

// line takes one physical line (without its newline) that ends at byte
// offset end of the read.
func (b *batch) line(raw []byte, end int) {
	rec, ok := b.parse(raw)
	if !ok {
		b.emit(streamStdout, b.now, raw)
	} else if rec.partial || b.joins[rec.stream].parts > 0 {
		j := &b.joins[rec.stream]
		if j.parts == 0 {
			j.ts = rec.ts
		}
		if len(j.buf) <= b.limits.maxLineSize {
			j.buf = append(j.buf, rec.content...)
		}
		j.parts++
		if !rec.partial || j.parts >= b.limits.maxPartialLines {
			b.flushJoin(rec.stream)
		}
	} else {
		b.emit(rec.stream, rec.ts, rec.content)
	}
	if b.joins[streamStdout].parts == 0 && b.joins[streamStderr].parts == 0 {
		b.markClean(end)
	}
}

func (b *batch) parse(raw []byte) (record, bool) {
	var rec record
	var err error
	format := b.src.format
	if format == formatAuto {
		format = formatCRI
		if len(raw) > 0 && raw[0] == '{' {
			format = formatDocker
		}
	}
	switch format {
	case formatCRI:
		rec, err = parseCRI(raw)
	case formatDocker:
		rec, err = parseDocker(raw)
	default:
		return record{ts: b.now, content: raw}, true
	}
	if err != nil || rec.ts.Year() < 1 || rec.ts.Year() > 9999 {
		// Outside 0001..9999 a protobuf Timestamp is invalid, and one
		// such entry would make the whole push request undecodable.
		b.counts.parseErrors++
		return rec, false
	}
	return rec, true
}

func (b *batch) flushJoin(stream int) {
	j := &b.joins[stream]
	b.emit(stream, j.ts, j.buf)
	j.parts, j.buf = 0, j.buf[:0]
}

// flushJoins ends every pending joined line where it stands: at the end of
// a drained file, or when one read holds nothing else.
func (b *batch) flushJoins(end int) {
	for s := range b.joins {
		if b.joins[s].parts > 0 {
			b.flushJoin(s)
		}
	}
	b.markClean(end)
}

func (b *batch) markClean(end int) {
	for s := range b.streams {
		b.clean[s] = b.streams[s].Len()
	}
	b.cleanAt = end
	b.cleanCounts = b.counts
}

func (b *batch) emit(stream int, ts time.Time, content []byte) {
	content = sanitize(content, b.limits.maxLineSize, &b.counts)
	b.streams[stream].Append(ts, content, b.src.meta)
	b.counts.entries++
}

// sanitize cuts a line to maxSize bytes (not inside a character) and
// replaces invalid UTF-8, counting both.
func sanitize(content []byte, maxSize int, c *counts) []byte {
	if len(content) > maxSize {
		cut := maxSize
		for cut > 0 && !utf8.RuneStart(content[cut]) {
			cut--
		}
		content = content[:cut]
		c.truncated++
	}
	if !utf8.Valid(content) {
		content = bytes.ToValidUTF8(content, []byte("\uFFFD"))
		c.invalidUTF8++
	}
	return content
}

// commit drops what was appended after the last clean point: those lines
// are read again, whole, next time.
func (b *batch) commit() (end int) {
	for s := range b.streams {
		b.streams[s].Truncate(b.clean[s])
	}
	b.counts = b.cleanCounts
	return b.cleanAt
}

// body appends the PushRequest of the committed entries to dst.
func (b *batch) body(dst []byte) []byte {
	for s := range b.streams {
		dst = lokipush.AppendStream(dst, b.src.streamLabels[s], &b.streams[s])
	}
	return dst
}
