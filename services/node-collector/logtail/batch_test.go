package logtail

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/grafana/loki/pkg/push"
)

func testSource(format int) *source {
	return &source{format: format, kind: "file", streamLabels: [numStreams]string{`{s="out"}`, `{s="err"}`}}
}

// parsed is what one parseRead committed, as Loki would see it.
type parsed struct {
	end      int
	skipping bool
	lines    map[string][]string // by stream labels
	counts   counts
}

func parseOnce(t testing.TB, format int, lim limits, data string, m parseMode) parsed {
	t.Helper()
	b := &batch{src: testSource(format), limits: lim}
	end, skipping := b.parseRead([]byte(data), m)
	var req push.PushRequest
	if err := req.Unmarshal(b.body(nil)); err != nil {
		t.Fatalf("body does not decode: %v", err)
	}
	p := parsed{end: end, skipping: skipping, lines: map[string][]string{}, counts: b.counts}
	for _, s := range req.Streams {
		for _, e := range s.Entries {
			p.lines[s.Labels] = append(p.lines[s.Labels], e.Line)
		}
	}
	return p
}

func cri(stream, tag, content string) string {
	return fmt.Sprintf("2026-11-25T10:00:00.000000001Z %s %s %s\n", stream, tag, content)
}

func TestParseRead(t *testing.T) {
	lim := limits{maxLineSize: 16, maxPartialLines: 3}
	tests := []struct {
		name   string
		format int
		data   string
		mode   parseMode
		want   parsed
	}{
		{
			name: "raw lines, unfinished last line left", format: formatRaw,
			data: "a\nb\nunfinished",
			want: parsed{end: 4, lines: map[string][]string{`{s="out"}`: {"a", "b"}}, counts: counts{entries: 2}},
		},
		{
			name: "raw unfinished last line of a drained file", format: formatRaw,
			data: "a\nlast", mode: parseMode{flush: true},
			want: parsed{end: 6, lines: map[string][]string{`{s="out"}`: {"a", "last"}}, counts: counts{entries: 2}},
		},
		{
			name: "cri partials joined", format: formatCRI,
			data: cri("stdout", "P", "ab") + cri("stderr", "F", "e1") + cri("stdout", "F", "cd"),
			want: parsed{end: 3 * len(cri("stdout", "F", "ab")), lines: map[string][]string{`{s="out"}`: {"abcd"}, `{s="err"}`: {"e1"}}, counts: counts{entries: 2}},
		},
		{
			name: "cri pending partial is not committed", format: formatCRI,
			data: cri("stdout", "F", "x1") + cri("stdout", "P", "ab") + cri("stderr", "F", "e1"),
			want: parsed{end: len(cri("stdout", "F", "x1")), lines: map[string][]string{`{s="out"}`: {"x1"}}, counts: counts{entries: 1}},
		},
		{
			name: "cri maxPartialLines ends a join", format: formatCRI,
			data: cri("stdout", "P", "a") + cri("stdout", "P", "b") + cri("stdout", "P", "c") + cri("stdout", "F", "d"),
			want: parsed{end: 4 * len(cri("stdout", "P", "a")), lines: map[string][]string{`{s="out"}`: {"abc", "d"}}, counts: counts{entries: 2}},
		},
		{
			name: "long line truncated", format: formatCRI,
			data: cri("stdout", "F", strings.Repeat("x", 40)),
			want: parsed{end: len(cri("stdout", "F", strings.Repeat("x", 40))), lines: map[string][]string{`{s="out"}`: {strings.Repeat("x", 16)}}, counts: counts{entries: 1, truncated: 1}},
		},
		{
			name: "truncation does not split a rune", format: formatRaw,
			data: strings.Repeat("x", 15) + "é\n",
			want: parsed{end: 18, lines: map[string][]string{`{s="out"}`: {strings.Repeat("x", 15)}}, counts: counts{entries: 1, truncated: 1}},
		},
		{
			name: "invalid utf-8 replaced", format: formatRaw,
			data: "a\xffb\n",
			want: parsed{end: 4, lines: map[string][]string{`{s="out"}`: {"a\uFFFDb"}}, counts: counts{entries: 1, invalidUTF8: 1}},
		},
		{
			name: "not cri: sent whole", format: formatCRI,
			data: "plain text\n",
			want: parsed{end: 11, lines: map[string][]string{`{s="out"}`: {"plain text"}}, counts: counts{entries: 1, parseErrors: 1}},
		},
		{
			name: "auto tells docker from cri", format: formatAuto,
			data: `{"log":"d\n","stream":"stderr","time":"2026-11-25T10:00:00Z"}` + "\n" + cri("stdout", "F", "c"),
			want: parsed{end: 62 + len(cri("stdout", "F", "c")), lines: map[string][]string{`{s="out"}`: {"c"}, `{s="err"}`: {"d"}}, counts: counts{entries: 2}},
		},
		{
			name: "full read of one over-long line", format: formatRaw,
			data: strings.Repeat("y", 64), mode: parseMode{full: true},
			want: parsed{end: 64, skipping: true, lines: map[string][]string{`{s="out"}`: {strings.Repeat("y", 16)}}, counts: counts{entries: 1, truncated: 1}},
		},
		{
			name: "rest of an over-long line skipped", format: formatRaw,
			data: "yyyy\nnext\n", mode: parseMode{skipping: true},
			want: parsed{end: 10, lines: map[string][]string{`{s="out"}`: {"next"}}, counts: counts{entries: 1}},
		},
		{
			name: "skipping through a whole read", format: formatRaw,
			data: "yyyy", mode: parseMode{skipping: true, full: true},
			want: parsed{end: 4, skipping: true, lines: map[string][]string{}},
		},
		{
			name: "full read of joined parts flushes them", format: formatCRI,
			data: cri("stdout", "P", "a") + cri("stdout", "P", "b") + "2026-11-25T10:00:00Z std", mode: parseMode{full: true},
			want: parsed{end: 2 * len(cri("stdout", "P", "a")), lines: map[string][]string{`{s="out"}`: {"ab"}}, counts: counts{entries: 1}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.mode.now = time.Unix(1, 0)
			got := parseOnce(t, tt.format, lim, tt.data, tt.mode)
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

// FuzzParseRead reads arbitrary file contents the way the tailer does, in
// windows from the committed position, and checks it always makes progress
// and never panics, whatever the bytes.
func FuzzParseRead(f *testing.F) {
	f.Add([]byte(cri("stdout", "P", "a")+cri("stdout", "F", "b")+"garbage\n"), uint8(formatAuto), uint8(24))
	f.Add([]byte(`{"log":"x","stream":"stdout","time":"2026-11-25T10:00:00Z"}`+"\n\xff\xfe\n"), uint8(formatDocker), uint8(8))
	f.Add([]byte(strings.Repeat("z", 100)+"\n"), uint8(formatRaw), uint8(10))
	f.Fuzz(func(t *testing.T, file []byte, format, window uint8) {
		b := &batch{src: testSource(int(format) % (formatAuto + 1)), limits: limits{maxLineSize: 8, maxPartialLines: 3}}
		size := int(window)%64 + 1
		offset, skipping := 0, false
		for steps := 0; offset < len(file); steps++ {
			if steps > len(file)+2 {
				t.Fatalf("no progress at offset %d of %d", offset, len(file))
			}
			data := file[offset:min(offset+size, len(file))]
			full := len(data) == size
			end, skip := b.parseRead(data, parseMode{full: full, flush: !full, skipping: skipping, now: time.Unix(1, 0)})
			if end < 0 || end > len(data) {
				t.Fatalf("end %d outside the read of %d", end, len(data))
			}
			if !full && end != len(data) {
				t.Fatalf("flushed read of %d committed %d", len(data), end)
			}
			var req push.PushRequest
			if err := req.Unmarshal(b.body(nil)); err != nil {
				t.Fatalf("body does not decode: %v", err)
			}
			offset += end
			skipping = skip
		}
	})
}
