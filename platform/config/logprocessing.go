package config

import (
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/prometheus/common/model"
)

// LogProcessingConfig is the router's log processing, in the spirit of
// Alloy's loki.process: stages run in order on every entry.
type LogProcessingConfig struct {
	Stages []LogStage `yaml:"stages"`
	// MaxLabels bounds a stream's labels after the labels stages; a label
	// beyond it is not added, and counted.
	MaxLabels int `yaml:"maxLabels"`
}

// LogStage is one stage: exactly one of its fields is set.
type LogStage struct {
	JSON               *ParseStage     `yaml:"json,omitempty"`
	Logfmt             *ParseStage     `yaml:"logfmt,omitempty"`
	Regex              *RegexStage     `yaml:"regex,omitempty"`
	Labels             *ValuesStage    `yaml:"labels,omitempty"`
	StructuredMetadata *ValuesStage    `yaml:"structured_metadata,omitempty"`
	Timestamp          *TimestampStage `yaml:"timestamp,omitempty"`
	Drop               *DropStage      `yaml:"drop,omitempty"`
	StaticLabels       *ValuesStage    `yaml:"static_labels,omitempty"`
	TraceID            *TraceIDStage   `yaml:"trace_id,omitempty"`
}

// ParseStage extracts fields of a JSON or logfmt line (or of an extracted
// field named by Source): Expressions maps the name to extract into to the
// key in the data (dotted for nested JSON objects; empty means the same
// name).
type ParseStage struct {
	Expressions map[string]string `yaml:"expressions"`
	Source      string            `yaml:"source"`
}

// RegexStage extracts the named groups of an RE2 expression.
type RegexStage struct {
	Expression string `yaml:"expression"`
	Source     string `yaml:"source"`
}

// ValuesStage maps names to values: for labels and structured_metadata,
// the name of the label to the extracted field (empty means the same
// name); for static_labels, the label to its value.
type ValuesStage struct {
	Values map[string]string `yaml:"values"`
}

// TimestampStage sets an entry's time from an extracted field.
type TimestampStage struct {
	Source string `yaml:"source"`
	// Format is RFC3339, RFC3339Nano, Unix, UnixMs, UnixUs, UnixNs or a Go
	// time layout.
	Format string `yaml:"format"`
}

// DropStage drops entries: those whose Source (or line) matches Expression
// or equals Value, those older than OlderThan, those longer than
// LongerThan bytes. Dropped entries are counted under Reason.
type DropStage struct {
	Source     string        `yaml:"source"`
	Expression string        `yaml:"expression"`
	Value      *string       `yaml:"value"`
	OlderThan  time.Duration `yaml:"olderThan"`
	LongerThan int           `yaml:"longerThan"`
	Reason     string        `yaml:"reason"`
}

// TraceIDStage copies a trace id from the extracted fields (by default
// traceID, trace_id or traceId) into the structured metadata trace_id, so
// logs link to traces.
type TraceIDStage struct {
	Sources []string `yaml:"sources"`
}

// Validate checks the section.
func (c *LogProcessingConfig) Validate() error {
	var errs []error
	if c.MaxLabels < 1 {
		errs = append(errs, fieldErr("logs.processing.maxLabels", "must be at least 1"))
	}
	for i, s := range c.Stages {
		errs = append(errs, s.validate(fmt.Sprintf("logs.processing.stages[%d]", i)))
	}
	return errors.Join(errs...)
}

func (s *LogStage) validate(p string) error {
	set := 0
	for _, v := range []bool{s.JSON != nil, s.Logfmt != nil, s.Regex != nil, s.Labels != nil, s.StructuredMetadata != nil,
		s.Timestamp != nil, s.Drop != nil, s.StaticLabels != nil, s.TraceID != nil} {
		if v {
			set++
		}
	}
	if set != 1 {
		return fieldErr(p, "has %d stages, want exactly one of json, logfmt, regex, labels, structured_metadata, timestamp, drop, static_labels, trace_id", set)
	}
	switch {
	case s.Regex != nil:
		if _, err := compileNamedRegex(s.Regex.Expression); err != nil {
			return fieldErr(p+".regex.expression", "%v", err)
		}
	case s.Labels != nil:
		return validLabelNames(p+".labels.values", s.Labels.Values)
	case s.StaticLabels != nil:
		return validLabelNames(p+".static_labels.values", s.StaticLabels.Values)
	case s.Timestamp != nil:
		if s.Timestamp.Source == "" {
			return fieldErr(p+".timestamp.source", "must be set")
		}
	case s.Drop != nil:
		d := s.Drop
		if d.Expression != "" {
			if _, err := regexp.Compile(d.Expression); err != nil {
				return fieldErr(p+".drop.expression", "%v", err)
			}
		}
		if d.Expression == "" && d.Value == nil && d.OlderThan <= 0 && d.LongerThan <= 0 {
			return fieldErr(p+".drop", "needs expression, value, olderThan or longerThan")
		}
	}
	return nil
}

func compileNamedRegex(expr string) (*regexp.Regexp, error) {
	re, err := regexp.Compile(expr)
	if err != nil {
		return nil, err
	}
	for _, n := range re.SubexpNames() {
		if n != "" {
			return re, nil
		}
	}
	return nil, fmt.Errorf("%q has no named group (?P<name>...)", expr)
}

func validLabelNames(p string, values map[string]string) error {
	if len(values) == 0 {
		return fieldErr(p, "must name at least one label")
	}
	for name := range values {
		if !model.LabelName(name).IsValidLegacy() || len(name) > 1 && name[:2] == "__" {
			return fieldErr(p, "%q is not a valid label name", name)
		}
	}
	return nil
}
