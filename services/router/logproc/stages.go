package logproc

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/go-logfmt/logfmt"
	"github.com/grafana/loki/pkg/push"

	"github.com/watershed-dev/watershed/platform/config"
)

// entry is one log entry going through the stages.
type entry struct {
	labels    labelSet
	ts        time.Time
	line      string
	meta      push.LabelsAdapter
	extracted map[string]string
}

// source is the text a stage reads: the line, or an extracted field.
func (e *entry) source(name string) (string, bool) {
	if name == "" {
		return e.line, true
	}
	v, ok := e.extracted[name]
	return v, ok
}

func (e *entry) setMeta(name, value string) {
	for i := range e.meta {
		if e.meta[i].Name == name {
			e.meta[i].Value = value
			return
		}
	}
	e.meta = append(e.meta, push.LabelAdapter{Name: name, Value: value})
}

// stage is one processing step; false drops the entry.
type stage interface {
	apply(p *Processor, e *entry) bool
}

// Maximum length of a label value Loki accepts by default.
const maxLabelValueLength = 2048

func compileStage(s config.LogStage) (stage, error) {
	switch {
	case s.JSON != nil:
		return &jsonStage{*s.JSON}, nil
	case s.Logfmt != nil:
		return &logfmtStage{*s.Logfmt}, nil
	case s.Regex != nil:
		re, err := regexp.Compile(s.Regex.Expression)
		if err != nil {
			return nil, err
		}
		return &regexStage{re: re, source: s.Regex.Source}, nil
	case s.Labels != nil:
		return &labelsStage{values: s.Labels.Values}, nil
	case s.StaticLabels != nil:
		return &labelsStage{values: s.StaticLabels.Values, static: true}, nil
	case s.StructuredMetadata != nil:
		return &metadataStage{values: s.StructuredMetadata.Values}, nil
	case s.Timestamp != nil:
		return &timestampStage{*s.Timestamp}, nil
	case s.Drop != nil:
		return newDropStage(*s.Drop)
	case s.TraceID != nil:
		sources := s.TraceID.Sources
		if len(sources) == 0 {
			sources = []string{"traceID", "trace_id", "traceId"}
		}
		return &traceIDStage{sources: sources}, nil
	}
	return nil, fmt.Errorf("empty stage")
}

// jsonStage extracts fields of a JSON object.
type jsonStage struct{ cfg config.ParseStage }

func (s *jsonStage) apply(p *Processor, e *entry) bool {
	text, ok := e.source(s.cfg.Source)
	if !ok {
		return true
	}
	var obj map[string]any
	if err := json.Unmarshal([]byte(text), &obj); err != nil {
		p.metrics.stageErrors.WithLabelValues("json").Inc()
		return true
	}
	if len(s.cfg.Expressions) == 0 {
		for k, v := range obj {
			e.extracted[k] = jsonString(v)
		}
		return true
	}
	for name, path := range s.cfg.Expressions {
		if path == "" {
			path = name
		}
		if v, ok := lookupJSON(obj, path); ok {
			e.extracted[name] = jsonString(v)
		}
	}
	return true
}

// lookupJSON follows a dotted path through nested objects.
func lookupJSON(obj map[string]any, path string) (any, bool) {
	if v, ok := obj[path]; ok {
		return v, true
	}
	head, rest, found := strings.Cut(path, ".")
	if !found {
		return nil, false
	}
	inner, ok := obj[head].(map[string]any)
	if !ok {
		return nil, false
	}
	return lookupJSON(inner, rest)
}

func jsonString(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case nil:
		return ""
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	case bool:
		return strconv.FormatBool(x)
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// logfmtStage extracts key=value pairs.
type logfmtStage struct{ cfg config.ParseStage }

func (s *logfmtStage) apply(p *Processor, e *entry) bool {
	text, ok := e.source(s.cfg.Source)
	if !ok {
		return true
	}
	want := map[string]string{} // key in the line -> name to extract into
	for name, key := range s.cfg.Expressions {
		if key == "" {
			key = name
		}
		want[key] = name
	}
	dec := logfmt.NewDecoder(strings.NewReader(text))
	for dec.ScanRecord() {
		for dec.ScanKeyval() {
			key := string(dec.Key())
			if len(want) == 0 {
				e.extracted[key] = string(dec.Value())
			} else if name, ok := want[key]; ok {
				e.extracted[name] = string(dec.Value())
			}
		}
	}
	if dec.Err() != nil {
		p.metrics.stageErrors.WithLabelValues("logfmt").Inc()
	}
	return true
}

// regexStage extracts the named groups of a match.
type regexStage struct {
	re     *regexp.Regexp
	source string
}

func (s *regexStage) apply(p *Processor, e *entry) bool {
	text, ok := e.source(s.source)
	if !ok {
		return true
	}
	m := s.re.FindStringSubmatch(text)
	if m == nil {
		p.metrics.stageErrors.WithLabelValues("regex").Inc()
		return true
	}
	for i, name := range s.re.SubexpNames() {
		if name != "" && i < len(m) {
			e.extracted[name] = m[i]
		}
	}
	return true
}

// labelsStage promotes extracted fields (or static values) to stream
// labels, within the label limits.
type labelsStage struct {
	values map[string]string
	static bool
}

func (s *labelsStage) apply(p *Processor, e *entry) bool {
	for name, src := range s.values {
		value := src
		if !s.static {
			if src == "" {
				src = name
			}
			v, ok := e.extracted[src]
			if !ok || v == "" {
				continue
			}
			value = v
		}
		switch {
		case len(value) > maxLabelValueLength:
			p.metrics.labelsRefused.WithLabelValues("value_too_long").Inc()
		case !e.labels.has(name) && len(e.labels) >= p.maxLabels:
			p.metrics.labelsRefused.WithLabelValues("max_labels").Inc()
		default:
			e.labels = e.labels.set(name, value)
		}
	}
	return true
}

// metadataStage copies extracted fields into structured metadata.
type metadataStage struct{ values map[string]string }

func (s *metadataStage) apply(_ *Processor, e *entry) bool {
	for name, src := range s.values {
		if src == "" {
			src = name
		}
		if v, ok := e.extracted[src]; ok && v != "" {
			e.setMeta(name, v)
		}
	}
	return true
}

// timestampStage sets the entry's time from a field.
type timestampStage struct{ cfg config.TimestampStage }

func (s *timestampStage) apply(p *Processor, e *entry) bool {
	v, ok := e.extracted[s.cfg.Source]
	if !ok {
		return true
	}
	ts, err := parseTime(v, s.cfg.Format)
	if err != nil || ts.Year() < 1 || ts.Year() > 9999 {
		p.metrics.stageErrors.WithLabelValues("timestamp").Inc()
		return true
	}
	e.ts = ts
	return true
}

func parseTime(v, format string) (time.Time, error) {
	unit := map[string]int64{"Unix": 1e9, "UnixMs": 1e6, "UnixUs": 1e3, "UnixNs": 1}
	if mult, ok := unit[format]; ok {
		if format == "Unix" && strings.Contains(v, ".") {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return time.Time{}, err
			}
			return time.Unix(0, int64(f*1e9)), nil
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return time.Time{}, err
		}
		return time.Unix(0, n*mult), nil
	}
	layout := map[string]string{"": time.RFC3339Nano, "RFC3339": time.RFC3339, "RFC3339Nano": time.RFC3339Nano}[format]
	if layout == "" {
		layout = format
	}
	return time.Parse(layout, v)
}

// dropStage drops the entries that meet every condition it has.
type dropStage struct {
	cfg    config.DropStage
	re     *regexp.Regexp
	reason string
}

func newDropStage(cfg config.DropStage) (*dropStage, error) {
	s := &dropStage{cfg: cfg, reason: cfg.Reason}
	if s.reason == "" {
		s.reason = "drop_stage"
	}
	if cfg.Expression != "" {
		re, err := regexp.Compile(cfg.Expression)
		if err != nil {
			return nil, err
		}
		s.re = re
	}
	return s, nil
}

func (s *dropStage) apply(p *Processor, e *entry) bool {
	text, ok := e.source(s.cfg.Source)
	if s.re != nil || s.cfg.Value != nil {
		if !ok || (s.re != nil && !s.re.MatchString(text)) || (s.cfg.Value != nil && text != *s.cfg.Value) {
			return true
		}
	}
	if s.cfg.OlderThan > 0 && p.now().Sub(e.ts) <= s.cfg.OlderThan {
		return true
	}
	if s.cfg.LongerThan > 0 && len(e.line) <= s.cfg.LongerThan {
		return true
	}
	p.metrics.dropped.WithLabelValues(s.reason).Inc()
	return false
}

// traceIDStage puts the first trace id found into structured metadata.
type traceIDStage struct{ sources []string }

func (s *traceIDStage) apply(_ *Processor, e *entry) bool {
	for _, src := range s.sources {
		if v := e.extracted[src]; v != "" && isHex(v) {
			e.setMeta("trace_id", v)
			return true
		}
	}
	return true
}

func isHex(s string) bool {
	return len(s) <= 64 && bytes.IndexFunc([]byte(s), func(r rune) bool {
		return !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f' || r >= 'A' && r <= 'F')
	}) < 0
}
