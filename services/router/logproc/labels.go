package logproc

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// label is one stream label.
type label struct{ name, value string }

// labelSet is a stream's labels, sorted by name.
type labelSet []label

// parseLabels reads Loki's stream selector form, `{name="value", ...}`,
// with Go-quoted values, as the collectors and Prometheus write it.
func parseLabels(s string) (labelSet, error) {
	rest := strings.TrimSpace(s)
	if !strings.HasPrefix(rest, "{") || !strings.HasSuffix(rest, "}") {
		return nil, fmt.Errorf("labels %q: not in braces", s)
	}
	rest = strings.TrimSpace(rest[1 : len(rest)-1])
	var out labelSet
	for rest != "" {
		eq := strings.IndexByte(rest, '=')
		if eq <= 0 {
			return nil, fmt.Errorf("labels %q: no name=value at %q", s, rest)
		}
		name := strings.TrimSpace(rest[:eq])
		rest = strings.TrimSpace(rest[eq+1:])
		quoted, err := strconv.QuotedPrefix(rest)
		if err != nil {
			return nil, fmt.Errorf("labels %q: value of %s is not quoted", s, name)
		}
		value, err := strconv.Unquote(quoted)
		if err != nil {
			return nil, fmt.Errorf("labels %q: value of %s: %w", s, name, err)
		}
		out = append(out, label{name, value})
		rest = strings.TrimSpace(rest[len(quoted):])
		if rest != "" {
			if rest[0] != ',' {
				return nil, fmt.Errorf("labels %q: expected ',' at %q", s, rest)
			}
			rest = strings.TrimSpace(rest[1:])
		}
	}
	slices.SortFunc(out, func(a, b label) int { return strings.Compare(a.name, b.name) })
	return out, nil
}

func (ls labelSet) get(name string) string {
	for _, l := range ls {
		if l.name == name {
			return l.value
		}
	}
	return ""
}

// set adds or replaces a label and keeps the set sorted.
func (ls labelSet) set(name, value string) labelSet {
	i, found := slices.BinarySearchFunc(ls, name, func(l label, n string) int { return strings.Compare(l.name, n) })
	if found {
		ls[i].value = value
		return ls
	}
	return slices.Insert(ls, i, label{name, value})
}

func (ls labelSet) has(name string) bool {
	_, found := slices.BinarySearchFunc(ls, name, func(l label, n string) int { return strings.Compare(l.name, n) })
	return found
}

// String renders the set the way Prometheus's labels.Labels does.
func (ls labelSet) String() string {
	var b strings.Builder
	b.WriteByte('{')
	for i, l := range ls {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(l.name)
		b.WriteByte('=')
		b.WriteString(strconv.Quote(l.value))
	}
	b.WriteByte('}')
	return b.String()
}
