package logtail

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// position is where the tailing of one path stands.
type position struct {
	Dev uint64 `json:"dev"`
	Ino uint64 `json:"ino"`
	// Gen names this file in message ids; a new file (new inode) gets a
	// new one, so a reused inode is never taken for a duplicate.
	Gen string `json:"gen"`
	// Offset is the end of the bytes JetStream acknowledged.
	Offset int64 `json:"offset"`
	// PendingEnd, when above Offset, is the end of the batch being
	// published: after a crash exactly [Offset, PendingEnd) is sent again
	// under the same message id.
	PendingEnd int64 `json:"pendingEnd,omitempty"`
	// Skipping is set when Offset is inside an over-long line whose rest is
	// skipped.
	Skipping bool `json:"skipping,omitempty"`
	// Tail is the last bytes before Offset: they find the copy of a file
	// truncated (copytruncate) while the collector was down.
	Tail []byte `json:"tail,omitempty"`
	// Cursor is the journal cursor of the last entry acknowledged, and
	// PendingCursor the last of the batch being published (for journals,
	// which have no offsets).
	Cursor        string `json:"cursor,omitempty"`
	PendingCursor string `json:"pendingCursor,omitempty"`
}

// The positions directory holds a snapshot and a log of changes after it.
const (
	positionsFile    = "positions.json"
	positionsLogFile = "positions.log"
	// compactAfter is how many log records trigger a new snapshot.
	compactAfter = 4096
)

type positionsDoc struct {
	Version int `json:"version"`
	// Seq is the last change the snapshot includes.
	Seq   uint64              `json:"seq"`
	Files map[string]position `json:"files"`
}

// logRecord is one change: a path's new position, or its release.
type logRecord struct {
	Seq    uint64    `json:"seq"`
	Path   string    `json:"path"`
	Pos    *position `json:"pos,omitempty"`
	Forget bool      `json:"forget,omitempty"`
}

// positions keeps every path's position on the node: a snapshot
// (positions.json, replaced whole by rename) and an append-only log of the
// changes after it (positions.log, one JSON line per change). A sync
// appends every change not yet written in one write(2), so that waiting
// for a batch's intent costs a system call, not a file rewrite; callers
// that sync at once share it (group commit). A line cut short by a power
// loss is ignored when read back.
type positions struct {
	dir string

	mu        sync.Mutex
	files     map[string]position
	seq       uint64              // of the last change
	pending   map[string]struct{} // paths changed since the last append
	changedAt time.Time           // of the oldest pending change, zero if none

	writeMu    sync.Mutex
	log        *os.File
	logRecords int
	written    uint64 // seq on disk
	writes     func() // counts a write, for metrics
}

// openPositions reads the positions in dir, or starts empty, and compacts
// them into a fresh snapshot.
func openPositions(dir string, onWrite func()) (*positions, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("positions directory: %w", err)
	}
	p := &positions{dir: dir, files: map[string]position{}, pending: map[string]struct{}{}, writes: onWrite}
	if err := p.load(); err != nil {
		return nil, err
	}
	p.writeMu.Lock()
	defer p.writeMu.Unlock()
	if err := p.compact(); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *positions) load() error {
	snap := filepath.Join(p.dir, positionsFile)
	data, err := os.ReadFile(snap)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return fmt.Errorf("read positions: %w", err)
	default:
		var doc positionsDoc
		if err := json.Unmarshal(data, &doc); err != nil {
			return fmt.Errorf("positions file %s: %w", snap, err)
		}
		if doc.Version != 1 {
			return fmt.Errorf("positions file %s: version %d is not 1", snap, doc.Version)
		}
		for k, v := range doc.Files {
			p.files[k] = v
		}
		p.seq = doc.Seq
	}
	snapSeq := p.seq
	data, err = os.ReadFile(filepath.Join(p.dir, positionsLogFile))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("read positions log: %w", err)
	}
	for _, line := range bytes.Split(data, []byte("\n")) {
		var r logRecord
		if len(line) == 0 || json.Unmarshal(line, &r) != nil || r.Seq <= snapSeq {
			continue // empty, cut short, or in the snapshot already
		}
		if r.Forget || r.Pos == nil {
			delete(p.files, r.Path)
		} else {
			p.files[r.Path] = *r.Pos
		}
		p.seq = max(p.seq, r.Seq)
	}
	p.written = p.seq
	return nil
}

func (p *positions) get(path string) (position, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	pos, ok := p.files[path]
	return pos, ok
}

func (p *positions) set(path string, pos position) {
	p.mu.Lock()
	p.files[path] = pos
	p.changed(path)
	p.mu.Unlock()
}

func (p *positions) forget(path string) {
	p.mu.Lock()
	if _, ok := p.files[path]; ok {
		delete(p.files, path)
		p.changed(path)
	}
	p.mu.Unlock()
}

// changed records a change of path; p.mu is held.
func (p *positions) changed(path string) {
	p.seq++
	p.pending[path] = struct{}{}
	if p.changedAt.IsZero() {
		p.changedAt = time.Now()
	}
}

// paths lists the paths with a position.
func (p *positions) paths() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]string, 0, len(p.files))
	for k := range p.files {
		out = append(out, k)
	}
	return out
}

// sync returns once every change made before the call is on disk.
func (p *positions) sync() error {
	p.mu.Lock()
	want := p.seq
	p.mu.Unlock()
	p.writeMu.Lock()
	defer p.writeMu.Unlock()
	if p.written >= want {
		return nil // an append that started after our change covered it
	}
	p.mu.Lock()
	var buf []byte
	n := 0
	for path := range p.pending {
		r := logRecord{Seq: p.seq, Path: path}
		if pos, ok := p.files[path]; ok {
			r.Pos = &pos
		} else {
			r.Forget = true
		}
		line, err := json.Marshal(r)
		if err != nil {
			p.mu.Unlock()
			return err
		}
		buf = append(append(buf, line...), '\n')
		n++
	}
	clear(p.pending)
	seq := p.seq
	p.changedAt = time.Time{}
	p.mu.Unlock()
	if _, err := p.log.Write(buf); err != nil {
		p.mu.Lock()
		p.seq++ // all of them again at the next sync
		for path := range p.files {
			p.pending[path] = struct{}{}
		}
		if p.changedAt.IsZero() {
			p.changedAt = time.Now()
		}
		p.mu.Unlock()
		return fmt.Errorf("write positions log: %w", err)
	}
	p.written = seq
	p.logRecords += n
	if p.writes != nil {
		p.writes()
	}
	if p.logRecords >= compactAfter {
		return p.compact()
	}
	return nil
}

// compact writes a snapshot of what is on disk and starts an empty log;
// p.writeMu is held. A crash between the two leaves records the snapshot
// has, which load skips by their sequence numbers.
func (p *positions) compact() error {
	p.mu.Lock()
	// Changes not appended yet are in the snapshot already; their records
	// come later with higher sequence numbers and say the same or newer.
	doc := positionsDoc{Version: 1, Seq: p.written, Files: make(map[string]position, len(p.files))}
	for k, v := range p.files {
		doc.Files[k] = v
	}
	p.mu.Unlock()
	data, err := json.Marshal(doc)
	if err != nil {
		return err
	}
	snap := filepath.Join(p.dir, positionsFile)
	if err := os.WriteFile(snap+".tmp", data, 0o644); err != nil {
		return fmt.Errorf("write positions: %w", err)
	}
	if err := os.Rename(snap+".tmp", snap); err != nil {
		return fmt.Errorf("write positions: %w", err)
	}
	if p.log != nil {
		_ = p.log.Close()
	}
	log, err := os.OpenFile(filepath.Join(p.dir, positionsLogFile), os.O_CREATE|os.O_TRUNC|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("positions log: %w", err)
	}
	p.log, p.logRecords = log, 0
	return nil
}

// close writes what is pending and closes the log.
func (p *positions) close() error {
	err := p.sync()
	p.writeMu.Lock()
	defer p.writeMu.Unlock()
	if p.log != nil {
		err = errors.Join(err, p.log.Close())
		p.log = nil
	}
	return err
}

// dirtySince is when the oldest change not on disk yet was made, or zero.
func (p *positions) dirtySince() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.changedAt
}
