package logtail

import (
	"strings"
	"testing"
	"time"
)

func TestParseCRI(t *testing.T) {
	ts := time.Date(2026, 11, 25, 10, 1, 2, 123456789, time.UTC)
	tests := []struct {
		name    string
		line    string
		want    record
		wantErr string
	}{
		{"full stdout", "2026-11-25T10:01:02.123456789Z stdout F hello world", record{ts: ts, stream: streamStdout, content: []byte("hello world")}, ""},
		{"partial stderr", "2026-11-25T10:01:02.123456789Z stderr P part", record{ts: ts, stream: streamStderr, content: []byte("part"), partial: true}, ""},
		{"empty content", "2026-11-25T10:01:02.123456789Z stdout F ", record{ts: ts, stream: streamStdout, content: []byte{}}, ""},
		{"no content field", "2026-11-25T10:01:02.123456789Z stdout F", record{ts: ts, stream: streamStdout}, ""},
		{"more tags", "2026-11-25T10:01:02.123456789Z stdout F:x:y a b", record{ts: ts, stream: streamStdout, content: []byte("a b")}, ""},
		{"offset timestamp", "2026-11-25T11:01:02.123456789+01:00 stdout F x", record{ts: ts, stream: streamStdout, content: []byte("x")}, ""},
		{"short fraction", "2026-11-25T10:01:02.1Z stdout F x", record{ts: time.Date(2026, 11, 25, 10, 1, 2, 100000000, time.UTC), stream: streamStdout, content: []byte("x")}, ""},
		{"no fraction", "2026-11-25T10:01:02Z stdout F x", record{ts: time.Date(2026, 11, 25, 10, 1, 2, 0, time.UTC), stream: streamStdout, content: []byte("x")}, ""},
		{"bad timestamp", "yesterday stdout F x", record{}, "timestamp"},
		{"impossible date", "2026-02-30T10:01:02Z stdout F x", record{}, "timestamp"},
		{"bad stream", "2026-11-25T10:01:02Z stdin F x", record{}, "stream"},
		{"bad tag", "2026-11-25T10:01:02Z stdout X x", record{}, "P/F"},
		{"nothing", "", record{}, "timestamp"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseCRI([]byte(tt.line))
			checkRecord(t, got, err, tt.want, tt.wantErr)
		})
	}
}

func TestParseDocker(t *testing.T) {
	ts := time.Date(2026, 11, 25, 10, 1, 2, 123456789, time.UTC)
	tests := []struct {
		name    string
		line    string
		want    record
		wantErr string
	}{
		{"full", `{"log":"hello\n","stream":"stdout","time":"2026-11-25T10:01:02.123456789Z"}`, record{ts: ts, stream: streamStdout, content: []byte("hello")}, ""},
		{"partial", `{"log":"hel","stream":"stderr","time":"2026-11-25T10:01:02.123456789Z"}`, record{ts: ts, stream: streamStderr, content: []byte("hel"), partial: true}, ""},
		{"escapes", `{"log":"a\"b\u00e9\t\n","stream":"stdout","time":"2026-11-25T10:01:02.123456789Z"}`, record{ts: ts, stream: streamStdout, content: []byte("a\"b\u00e9\t")}, ""},
		{"not json", `hello`, record{}, "invalid character"},
		{"no time", `{"log":"x\n","stream":"stdout"}`, record{}, "timestamp"},
		{"bad stream", `{"log":"x\n","stream":"other","time":"2026-11-25T10:01:02Z"}`, record{}, "stream"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseDocker([]byte(tt.line))
			checkRecord(t, got, err, tt.want, tt.wantErr)
		})
	}
}

func checkRecord(t *testing.T, got record, err error, want record, wantErr string) {
	t.Helper()
	if wantErr != "" {
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Fatalf("err = %v, want one containing %q", err, wantErr)
		}
		return
	}
	if err != nil {
		t.Fatalf("unexpected error: %v", err)
	}
	if !got.ts.Equal(want.ts) || got.stream != want.stream || string(got.content) != string(want.content) || got.partial != want.partial {
		t.Errorf("got %+v (content %q), want %+v (content %q)", got, got.content, want, want.content)
	}
}

// The fast timestamp path agrees with time.Parse wherever it answers.
func FuzzParseRFC3339(f *testing.F) {
	for _, s := range []string{"2026-11-25T10:01:02.123456789Z", "2026-11-25T10:01:02Z", "2026-11-25T10:01:02.5+05:30", "2026-02-29T00:00:00Z", "0000-01-01T00:00:00-00:00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, ok := parseRFC3339([]byte(s))
		if !ok {
			return
		}
		want, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatalf("fast path accepted %q, time.Parse refuses it: %v", s, err)
		}
		if !got.Equal(want) {
			t.Fatalf("%q: fast path %v, time.Parse %v", s, got, want)
		}
	})
}

// No input makes the CRI parser panic, and what it accepts has a stream
// and content inside the line.
func FuzzParseCRI(f *testing.F) {
	for _, s := range []string{"2026-11-25T10:01:02.123456789Z stdout F hello", "2026-11-25T10:01:02Z stderr P ", "x y z", ""} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		r, err := parseCRI(line)
		if err != nil {
			return
		}
		if r.stream != streamStdout && r.stream != streamStderr {
			t.Fatalf("stream %d", r.stream)
		}
		if len(r.content) > len(line) {
			t.Fatalf("content longer than the line")
		}
	})
}

// No input makes the Docker parser panic.
func FuzzParseDocker(f *testing.F) {
	for _, s := range []string{`{"log":"hello\n","stream":"stdout","time":"2026-11-25T10:01:02.123456789Z"}`, `{"log":"x"}`, `{`, ``} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		r, err := parseDocker(line)
		if err == nil && r.ts.IsZero() {
			t.Fatalf("accepted %q without a timestamp", line)
		}
	})
}
