package logtail

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
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

const positionsFile = "positions.json"

type positionsDoc struct {
	Version int                 `json:"version"`
	Files   map[string]position `json:"files"`
}

// positions keeps every path's position in one file, written whole
// (temporary file and rename) with group commit: callers that must wait
// for their change to be on disk call Sync, and one write covers every
// change made before it.
type positions struct {
	path string

	mu      sync.Mutex
	files   map[string]position
	version uint64 // of the in-memory state

	writeMu sync.Mutex
	written uint64 // version on disk
	writes  func() // counts a write, for metrics
}

// openPositions reads the positions file in dir, or starts empty.
func openPositions(dir string, onWrite func()) (*positions, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("positions directory: %w", err)
	}
	p := &positions{path: filepath.Join(dir, positionsFile), files: map[string]position{}, writes: onWrite}
	data, err := os.ReadFile(p.path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return p, nil
	case err != nil:
		return nil, fmt.Errorf("read positions: %w", err)
	}
	var doc positionsDoc
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("positions file %s: %w", p.path, err)
	}
	if doc.Version != 1 {
		return nil, fmt.Errorf("positions file %s: version %d is not 1", p.path, doc.Version)
	}
	for k, v := range doc.Files {
		p.files[k] = v
	}
	return p, nil
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
	p.version++
	p.mu.Unlock()
}

func (p *positions) forget(path string) {
	p.mu.Lock()
	if _, ok := p.files[path]; ok {
		delete(p.files, path)
		p.version++
	}
	p.mu.Unlock()
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
	want := p.version
	p.mu.Unlock()
	p.writeMu.Lock()
	defer p.writeMu.Unlock()
	if p.written >= want {
		return nil // a write that started after our change covered it
	}
	p.mu.Lock()
	doc := positionsDoc{Version: 1, Files: make(map[string]position, len(p.files))}
	for k, v := range p.files {
		doc.Files[k] = v
	}
	version := p.version
	p.mu.Unlock()
	data, err := json.Marshal(doc)
	if err != nil {
		return err
	}
	tmp := p.path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return fmt.Errorf("write positions: %w", err)
	}
	if err := os.Rename(tmp, p.path); err != nil {
		return fmt.Errorf("write positions: %w", err)
	}
	p.written = version
	if p.writes != nil {
		p.writes()
	}
	return nil
}

// dirty reports whether a change is not on disk yet.
func (p *positions) dirty() bool {
	p.mu.Lock()
	v := p.version
	p.mu.Unlock()
	p.writeMu.Lock()
	defer p.writeMu.Unlock()
	return p.written < v
}
