package logtail

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"
)

// fileID identifies a file across renames.
type fileID struct{ dev, ino uint64 }

func idOf(fi os.FileInfo) fileID {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileID{}
	}
	return fileID{dev: uint64(st.Dev), ino: st.Ino}
}

func newGen() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// fingerprintSize is how many bytes before the position are kept to
// recognise the copy a copytruncate made.
const fingerprintSize = 128

// openFile is one open file being read: the file at a source's path, or a
// rotated one being drained.
type openFile struct {
	f          *os.File
	name       string // where it was opened
	id         fileID
	gen        string
	offset     int64 // acknowledged
	pendingEnd int64 // replayed exactly after a restart
	skipping   bool
	tail       []byte // the bytes before offset, up to fingerprintSize
	persist    bool   // its position is kept under the source's path
}

func (o *openFile) close() {
	if o.f != nil {
		_ = o.f.Close()
		o.f = nil
	}
}

func (o *openFile) modTime() time.Time {
	if fi, err := o.f.Stat(); err == nil {
		return fi.ModTime()
	}
	return time.Time{}
}

func (o *openFile) position() position {
	return position{Dev: o.id.dev, Ino: o.id.ino, Gen: o.gen, Offset: o.offset, PendingEnd: o.pendingEnd, Skipping: o.skipping, Tail: o.tail}
}

// open opens name and checks it is the file whose identity it had.
func openAt(name string) (*openFile, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		_ = f.Close()
		return nil, fmt.Errorf("%s is not a regular file", name)
	}
	return &openFile{f: f, name: name, id: idOf(fi), gen: newGen()}, nil
}

// readResult is what one read of a file did.
type readResult struct {
	consumed  int  // bytes the position advanced
	atEOF     bool // the read reached the end of the file
	rewritten bool // the bytes before the position changed: truncated
}

// readOnce reads from the position, publishes the complete entries and
// advances the position once JetStream acknowledged them. final flushes
// what is left at the end of the file (a drained file gets no more lines).
func (t *fileTailer) readOnce(ctx context.Context, o *openFile, final bool) (readResult, error) {
	size := t.sh.cfg.MaxBatchBytes
	exact := o.pendingEnd > o.offset
	if exact {
		size = int(o.pendingEnd - o.offset)
	}
	// The bytes before the position are read again with the new ones: if
	// they changed, the file was truncated and written again in place
	// (copytruncate), however long it is now.
	k := 0
	if int64(len(o.tail)) <= o.offset {
		k = len(o.tail)
	}
	buf := t.sh.getBuf(k + size)
	defer t.sh.putBuf(buf)
	n, err := o.f.ReadAt(buf[:k+size], o.offset-int64(k))
	if err != nil && !errors.Is(err, io.EOF) {
		return readResult{}, fmt.Errorf("read %s: %w", o.name, err)
	}
	if n < k || !bytes.Equal(buf[:k], o.tail[len(o.tail)-k:]) {
		return readResult{rewritten: true}, nil
	}
	data := buf[k:n]
	n -= k
	res := readResult{atEOF: n < size}
	if n == 0 {
		return res, nil
	}
	if exact && n < size {
		// The file lost bytes it had before the restart (truncated while
		// we were down): forget the batch, the caller sees the truncation.
		o.pendingEnd = 0
		return readResult{atEOF: true}, nil
	}
	end, skipping := t.batch.parseRead(data, parseMode{
		full: n == size, flush: exact || (final && res.atEOF), skipping: o.skipping, now: time.Now(),
	})
	return t.advance(o, data, end, res, skipping)
}

// parseMode is how a read is to be parsed.
type parseMode struct {
	full     bool // the read filled its buffer: more may follow
	flush    bool // nothing follows: end the last line and joined lines
	skipping bool // the read starts inside an over-long line
	now      time.Time
}

// parseRead parses one read of a file into the batch. It returns how many
// bytes the committed entries cover (the position's advance) and whether
// the next read starts inside an over-long line.
func (b *batch) parseRead(data []byte, m parseMode) (end int, skipping bool) {
	b.reset(m.now)
	n := len(data)
	start := 0
	if m.skipping {
		i := indexNewline(data)
		if i < 0 {
			return n, true
		}
		start = i + 1
		b.markClean(start)
	}
	pos := start
	for {
		i := indexNewline(data[pos:])
		if i < 0 {
			break
		}
		b.line(data[pos:pos+i], pos+i+1)
		pos += i + 1
	}
	switch {
	case m.flush:
		if pos < n {
			b.line(data[pos:], n)
		}
		b.flushJoins(n)
	case b.cleanAt == 0 && m.full:
		// A full read without a clean point: a line longer than a read,
		// or joined parts that fill one.
		pending := b.joins[streamStdout].parts > 0 || b.joins[streamStderr].parts > 0
		if !pending && pos < n {
			b.line(data[pos:], n)
			skipping = true
		}
		b.flushJoins(n)
		if pending && pos < n {
			b.cleanAt = pos // the unfinished line after the parts is read again
		}
	}
	return b.commit(), skipping
}

// advance publishes the committed entries, then moves the position to end.
func (t *fileTailer) advance(o *openFile, data []byte, end int, res readResult, skipping bool) (readResult, error) {
	if end == 0 {
		return res, nil
	}
	if t.batch.counts.entries > 0 {
		o.pendingEnd = o.offset + int64(end)
		if o.persist {
			t.sh.positions.set(t.src.path, o.position())
			if err := t.sh.positions.sync(); err != nil {
				return res, err
			}
		}
		if err := t.publish(o, o.offset, o.pendingEnd); err != nil {
			return res, err
		}
	}
	o.tail = appendTail(o.tail, data[:end])
	o.offset += int64(end)
	o.pendingEnd = 0
	o.skipping = skipping
	if o.persist {
		t.sh.positions.set(t.src.path, o.position())
	}
	t.sh.metrics.bytesRead.WithLabelValues(t.src.kind).Add(float64(end))
	res.consumed = end
	return res, nil
}

// appendTail keeps the last fingerprintSize bytes of tail+data.
func appendTail(tail, data []byte) []byte {
	if len(data) >= fingerprintSize {
		return append(tail[:0], data[len(data)-fingerprintSize:]...)
	}
	tail = append(tail, data...)
	if over := len(tail) - fingerprintSize; over > 0 {
		tail = append(tail[:0], tail[over:]...)
	}
	return tail
}

func indexNewline(b []byte) int { return bytes.IndexByte(b, '\n') }
