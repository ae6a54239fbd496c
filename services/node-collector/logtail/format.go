package logtail

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Output streams of a container.
const (
	streamStdout = iota
	streamStderr
	numStreams
)

var streamNames = [numStreams]string{"stdout", "stderr"}

// record is one physical line of a log file, parsed.
type record struct {
	ts     time.Time
	stream int
	// content is the log line without the runtime's framing or newline.
	content []byte
	// partial is set when the runtime split a long line and more follows.
	partial bool
}

var (
	errNoTimestamp = errors.New("no timestamp")
	errBadStream   = errors.New("stream is not stdout or stderr")
	errNoTag       = errors.New("no P/F tag")
)

// parseCRI parses `<RFC3339Nano> <stdout|stderr> <P|F>[:tags] <content>`,
// the format the kubelet's CRI runtimes write.
func parseCRI(line []byte) (record, error) {
	var r record
	sp := bytes.IndexByte(line, ' ')
	if sp <= 0 {
		return r, errNoTimestamp
	}
	ts, ok := parseRFC3339(line[:sp])
	if !ok {
		var err error
		if ts, err = time.Parse(time.RFC3339Nano, string(line[:sp])); err != nil {
			return r, fmt.Errorf("timestamp: %w", err)
		}
	}
	r.ts = ts
	rest := line[sp+1:]
	switch {
	case bytes.HasPrefix(rest, []byte("stdout ")):
		r.stream, rest = streamStdout, rest[len("stdout "):]
	case bytes.HasPrefix(rest, []byte("stderr ")):
		r.stream, rest = streamStderr, rest[len("stderr "):]
	default:
		return r, errBadStream
	}
	sp = bytes.IndexByte(rest, ' ')
	tags := rest
	if sp >= 0 {
		tags, r.content = rest[:sp], rest[sp+1:]
	}
	// The first tag is P (partial) or F (full); more may follow after ':'.
	if i := bytes.IndexByte(tags, ':'); i >= 0 {
		tags = tags[:i]
	}
	switch string(tags) {
	case "P":
		r.partial = true
	case "F":
	default:
		return r, errNoTag
	}
	return r, nil
}

// dockerLine is one line of Docker's json-file driver.
type dockerLine struct {
	Log    string    `json:"log"`
	Stream string    `json:"stream"`
	Time   time.Time `json:"time"`
}

// parseDocker parses `{"log":"...\n","stream":"stdout","time":"..."}`; a
// log without its trailing newline is a part of a longer line.
func parseDocker(line []byte) (record, error) {
	var r record
	var d dockerLine
	if err := json.Unmarshal(line, &d); err != nil {
		return r, err
	}
	switch d.Stream {
	case "stdout":
		r.stream = streamStdout
	case "stderr":
		r.stream = streamStderr
	default:
		return r, errBadStream
	}
	if d.Time.IsZero() {
		return r, errNoTimestamp
	}
	r.ts = d.Time
	content, full := bytes.CutSuffix([]byte(d.Log), []byte("\n"))
	r.content, r.partial = content, !full
	return r, nil
}

// parseRFC3339 is a fast path for the timestamps runtimes write,
// 2006-01-02T15:04:05[.999999999](Z|±07:00), without the string
// time.Parse needs. It reports false for anything else.
func parseRFC3339(b []byte) (time.Time, bool) {
	if len(b) < len("2006-01-02T15:04:05Z") || b[4] != '-' || b[7] != '-' || b[10] != 'T' || b[13] != ':' || b[16] != ':' {
		return time.Time{}, false
	}
	year, ok1 := digits(b[0:4])
	month, ok2 := digits(b[5:7])
	day, ok3 := digits(b[8:10])
	hour, ok4 := digits(b[11:13])
	minute, ok5 := digits(b[14:16])
	sec, ok6 := digits(b[17:19])
	if !(ok1 && ok2 && ok3 && ok4 && ok5 && ok6) || month < 1 || month > 12 || day < 1 || day > 31 || hour > 23 || minute > 59 || sec > 59 {
		return time.Time{}, false
	}
	rest := b[19:]
	nanos := 0
	if len(rest) > 0 && rest[0] == '.' {
		n := 1
		for n < len(rest) && n <= 9 && rest[n] >= '0' && rest[n] <= '9' {
			nanos = nanos*10 + int(rest[n]-'0')
			n++
		}
		if n == 1 || (n < len(rest) && rest[n] >= '0' && rest[n] <= '9') {
			return time.Time{}, false
		}
		for i := n; i <= 9; i++ {
			nanos *= 10
		}
		rest = rest[n:]
	}
	loc := time.UTC
	switch {
	case len(rest) == 1 && rest[0] == 'Z':
	case len(rest) == 6 && (rest[0] == '+' || rest[0] == '-') && rest[3] == ':':
		oh, ok1 := digits(rest[1:3])
		om, ok2 := digits(rest[4:6])
		if !ok1 || !ok2 || oh > 23 || om > 59 {
			return time.Time{}, false
		}
		off := oh*3600 + om*60
		if rest[0] == '-' {
			off = -off
		}
		loc = time.FixedZone("", off)
	default:
		return time.Time{}, false
	}
	t := time.Date(year, time.Month(month), day, hour, minute, sec, nanos, loc)
	if t.Day() != day {
		return time.Time{}, false // February 30th and friends
	}
	return t, true
}

func digits(b []byte) (int, bool) {
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}
