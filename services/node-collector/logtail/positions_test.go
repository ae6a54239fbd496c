package logtail

import (
	"os"
	"path/filepath"
	"testing"
)

func TestPositionsSurviveRestartAndCompaction(t *testing.T) {
	tests := []struct {
		name    string
		changes int
		cut     bool // the log's last line cut short, as by a power loss
	}{
		{"few changes", 10, false},
		{"past compaction", compactAfter + 10, false},
		{"last line cut short", 10, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			p, err := openPositions(dir, nil)
			if err != nil {
				t.Fatal(err)
			}
			for i := range tt.changes {
				p.set("a", position{Offset: int64(i)})
				p.set("b", position{Offset: int64(2 * i)})
				if i == 3 {
					p.forget("b")
					p.set("c", position{Cursor: "x"})
				}
				if err := p.sync(); err != nil {
					t.Fatal(err)
				}
			}
			// No close: a SIGKILL leaves what was synced.
			if tt.cut {
				f, err := os.OpenFile(filepath.Join(dir, positionsLogFile), os.O_APPEND|os.O_WRONLY, 0)
				if err != nil {
					t.Fatal(err)
				}
				_, _ = f.WriteString(`{"seq":999999,"path":"a","pos":{"off`)
				f.Close()
			}
			again, err := openPositions(dir, nil)
			if err != nil {
				t.Fatal(err)
			}
			last := int64(tt.changes - 1)
			if pos, _ := again.get("a"); pos.Offset != last {
				t.Errorf("a at %d, want %d", pos.Offset, last)
			}
			if pos, _ := again.get("b"); pos.Offset != 2*last {
				t.Errorf("b at %d, want %d", pos.Offset, 2*last)
			}
			if pos, ok := again.get("c"); !ok || pos.Cursor != "x" {
				t.Errorf("c = %+v, %v", pos, ok)
			}
			again.forget("c")
			if err := again.close(); err != nil {
				t.Fatal(err)
			}
			third, err := openPositions(dir, nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := third.get("c"); ok {
				t.Error("forgotten position came back")
			}
		})
	}
}

func BenchmarkPositionsSync(b *testing.B) {
	p, err := openPositions(b.TempDir(), nil)
	if err != nil {
		b.Fatal(err)
	}
	for i := range 100 {
		p.set(filepath.Join("/var/log/pods", string(rune('a'+i%26)), "0.log"), position{Offset: int64(i), Gen: "0123456789abcdef", Tail: make([]byte, fingerprintSize)})
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		p.set("/var/log/pods/x/0.log", position{Offset: int64(i), Gen: "0123456789abcdef", Tail: make([]byte, fingerprintSize)})
		if err := p.sync(); err != nil {
			b.Fatal(err)
		}
	}
}
