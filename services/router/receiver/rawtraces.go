package receiver

import (
	"errors"
	"fmt"

	"go.opentelemetry.io/collector/pdata/ptrace"
	"google.golang.org/protobuf/encoding/protowire"
)

// OTLP protobuf trace requests are published without decoding their spans.
// The bus carries ExportTraceServiceRequest bytes and writer-tempo sends
// them on as they are, so decoding every span into pdata and encoding it
// again only to read its resource cost the receiver most of its CPU and
// allocations (a third of the all-in-one's CPU for traces, GC included).
// The request is walked in wire format instead: every span, event, link
// and attribute is checked as the pdata decoder would check it (wire types,
// lengths, ids, attribute counts), and only each resource is decoded, to be
// enriched, partitioned and re-encoded in front of its scope spans' bytes.
// What this path does not handle (the deprecated instrumentation library
// spans, a resource given twice, a group over maxMessageBytes) goes the
// pdata way.

// errDecodeFully sends a request down the pdata path.
var errDecodeFully = errors.New("request needs a full decode")

// maxAnyValueDepth bounds the nesting of attribute values (arrays and
// key-value lists), which the stack would otherwise pay for.
const maxAnyValueDepth = 64

// Field numbers of the OTLP trace protos (opentelemetry/proto/trace/v1).
const (
	fieldRequestResourceSpans = 1

	fieldRSResource           = 1
	fieldRSScopeSpans         = 2
	fieldRSSchemaURL          = 3
	fieldRSDeprecatedLibSpans = 1000

	fieldSSScope     = 1
	fieldSSSpans     = 2
	fieldSSSchemaURL = 3

	fieldScopeAttributes = 3

	fieldSpanTraceID    = 1
	fieldSpanSpanID     = 2
	fieldSpanParentID   = 4
	fieldSpanName       = 5
	fieldSpanAttributes = 9
	fieldSpanEvents     = 11
	fieldSpanLinks      = 13
	fieldSpanStatus     = 15

	fieldEventName       = 2
	fieldEventAttributes = 3

	fieldLinkTraceID    = 1
	fieldLinkSpanID     = 2
	fieldLinkAttributes = 4
)

// rawCheck carries the attribute limit through a walk, and the first
// request it finds over it: a request that decodes but breaks a limit is
// refused with its spans counted, one that does not decode is not counted.
type rawCheck struct {
	maxAttributes int
	violation     error
}

// attributes records n attributes of something described by what.
func (c *rawCheck) attributes(n int, what func() string) {
	if n > c.maxAttributes && c.violation == nil {
		c.violation = invalidf("%s has %d attributes, more than receivers.limits.maxAttributes (%d)", what(), n, c.maxAttributes)
	}
}

// rawResourceSpans is one ResourceSpans of a request, in wire format.
type rawResourceSpans struct {
	body     []byte // the ResourceSpans message
	resource []byte // its resource, nil when absent
	// resStart and resEnd bound the resource field (tag to end) in body;
	// both are 0 when there is none.
	resStart, resEnd int
	spans            int
}

// parseRawTraces walks an ExportTraceServiceRequest (or TracesData: the
// same wire format) and checks it. Input that does not decode is an
// ErrInvalid naming what is wrong; errDecodeFully asks for the pdata path;
// c.violation is set when the request decodes but breaks a limit.
func parseRawTraces(body []byte, c *rawCheck) ([]rawResourceSpans, error) {
	var out []rawResourceSpans
	err := walkFields(body, func(num protowire.Number, typ protowire.Type, v []byte) error {
		if num != fieldRequestResourceSpans {
			return nil // unknown: dropped, as the pdata decoder does
		}
		if typ != protowire.BytesType {
			return wrongType("resource_spans", typ)
		}
		rs, err := parseResourceSpans(v, len(out), c)
		if err != nil {
			return err
		}
		out = append(out, rs)
		return nil
	})
	return out, err
}

func parseResourceSpans(body []byte, i int, c *rawCheck) (rawResourceSpans, error) {
	rs := rawResourceSpans{body: body}
	j := 0
	err := walkFieldsAt(body, func(num protowire.Number, typ protowire.Type, v []byte, start, end int) error {
		switch num {
		case fieldRSResource:
			if typ != protowire.BytesType {
				return wrongType("resource", typ)
			}
			if rs.resEnd > 0 {
				return errDecodeFully // fields of both are merged: let pdata do it
			}
			if err := checkResource(v); err != nil {
				return err
			}
			rs.resource, rs.resStart, rs.resEnd = v, start, end
		case fieldRSScopeSpans:
			if typ != protowire.BytesType {
				return wrongType("scope_spans", typ)
			}
			n, err := checkScopeSpans(v, i, j, c)
			if err != nil {
				return err
			}
			rs.spans += n
			j++
		case fieldRSSchemaURL:
			if typ != protowire.BytesType {
				return wrongType("schema_url", typ)
			}
		case fieldRSDeprecatedLibSpans:
			return errDecodeFully
		}
		return nil
	})
	return rs, err
}

// checkScopeSpans checks a ScopeSpans and returns its number of spans.
func checkScopeSpans(body []byte, i, j int, c *rawCheck) (int, error) {
	spans := 0
	err := walkFields(body, func(num protowire.Number, typ protowire.Type, v []byte) error {
		switch num {
		case fieldSSScope:
			if typ != protowire.BytesType {
				return wrongType("scope", typ)
			}
			if err := checkTypes("scope", v, scopeFieldTypes); err != nil {
				return err
			}
			n, err := countAttributes(v, fieldScopeAttributes)
			if err != nil {
				return err
			}
			c.attributes(n, func() string { return fmt.Sprintf("scope %d of resource %d", j, i) })
		case fieldSSSpans:
			if typ != protowire.BytesType {
				return wrongType("span", typ)
			}
			if err := checkSpan(v, c); err != nil {
				return err
			}
			spans++
		case fieldSSSchemaURL:
			if typ != protowire.BytesType {
				return wrongType("schema_url", typ)
			}
		}
		return nil
	})
	return spans, err
}

func checkSpan(body []byte, c *rawCheck) error {
	var name string
	attrs, events, links := 0, [][]byte(nil), [][]byte(nil)
	err := walkFields(body, func(num protowire.Number, typ protowire.Type, v []byte) error {
		if spanFieldTypes.wrong(num, typ) {
			return wrongType(fmt.Sprintf("span field %d", num), typ)
		}
		switch num {
		case fieldSpanTraceID:
			return checkID("trace_id", v, 16)
		case fieldSpanSpanID, fieldSpanParentID:
			return checkID("span_id", v, 8)
		case fieldSpanName:
			name = string(v)
		case fieldSpanAttributes:
			attrs++
			return checkKeyValue(v, 0)
		case fieldSpanEvents:
			events = append(events, v)
		case fieldSpanLinks:
			links = append(links, v)
		case fieldSpanStatus:
			return checkTypes("span status", v, statusFieldTypes)
		}
		return nil
	})
	if err != nil {
		return err
	}
	c.attributes(attrs, func() string { return fmt.Sprintf("span %q", name) })
	for _, e := range events {
		if err := checkEvent(e, name, c); err != nil {
			return err
		}
	}
	for _, l := range links {
		if err := checkLink(l, name, c); err != nil {
			return err
		}
	}
	return nil
}

// wireTypes are the wire types of a message's known fields, by number, as
// the pdata decoder insists on them (an array: the walk looks one up for
// every field of every span).
type wireTypes [17]int8 // type+1; 0 for a field it does not know

func fieldTypes(m map[protowire.Number]protowire.Type) *wireTypes {
	var w wireTypes
	for n, t := range m {
		w[n] = int8(t) + 1
	}
	return &w
}

// wrong reports whether a known field has another wire type than typ.
func (w *wireTypes) wrong(num protowire.Number, typ protowire.Type) bool {
	return num > 0 && int(num) < len(w) && w[num] != 0 && w[num] != int8(typ)+1
}

// spanFieldTypes are the wire types of Span's fields.
var spanFieldTypes = fieldTypes(map[protowire.Number]protowire.Type{
	1: protowire.BytesType, 2: protowire.BytesType, 3: protowire.BytesType, 4: protowire.BytesType,
	5: protowire.BytesType, 6: protowire.VarintType, 7: protowire.Fixed64Type, 8: protowire.Fixed64Type,
	9: protowire.BytesType, 10: protowire.VarintType, 11: protowire.BytesType, 12: protowire.VarintType,
	13: protowire.BytesType, 14: protowire.VarintType, 15: protowire.BytesType, 16: protowire.Fixed32Type,
})

// Wire types of the fields of Status, Span.Event, Span.Link and
// InstrumentationScope.
var (
	statusFieldTypes = fieldTypes(map[protowire.Number]protowire.Type{2: protowire.BytesType, 3: protowire.VarintType})
	eventFieldTypes  = fieldTypes(map[protowire.Number]protowire.Type{1: protowire.Fixed64Type, 2: protowire.BytesType, 3: protowire.BytesType, 4: protowire.VarintType})
	linkFieldTypes   = fieldTypes(map[protowire.Number]protowire.Type{1: protowire.BytesType, 2: protowire.BytesType, 3: protowire.BytesType,
		4: protowire.BytesType, 5: protowire.VarintType, 6: protowire.Fixed32Type})
	scopeFieldTypes = fieldTypes(map[protowire.Number]protowire.Type{1: protowire.BytesType, 2: protowire.BytesType, 3: protowire.BytesType, 4: protowire.VarintType})
)

var (
	resourceFieldTypes  = fieldTypes(map[protowire.Number]protowire.Type{1: protowire.BytesType, 2: protowire.VarintType, 3: protowire.BytesType})
	entityRefFieldTypes = fieldTypes(map[protowire.Number]protowire.Type{1: protowire.BytesType, 2: protowire.BytesType, 3: protowire.BytesType, 4: protowire.BytesType})
)

// checkResource checks a Resource: its attributes and entity references.
// (The pipeline decodes it with pdata afterwards, but a request that does
// not decode must be told apart before anything is counted.)
func checkResource(body []byte) error {
	return walkFields(body, func(num protowire.Number, typ protowire.Type, v []byte) error {
		if resourceFieldTypes.wrong(num, typ) {
			return wrongType(fmt.Sprintf("resource field %d", num), typ)
		}
		switch num {
		case 1:
			return checkKeyValue(v, 0)
		case 3:
			return checkTypes("entity reference", v, entityRefFieldTypes)
		}
		return nil
	})
}

// checkTypes checks that the known fields of a message have their wire types.
func checkTypes(what string, body []byte, types *wireTypes) error {
	return walkFields(body, func(num protowire.Number, typ protowire.Type, _ []byte) error {
		if types.wrong(num, typ) {
			return wrongType(fmt.Sprintf("%s field %d", what, num), typ)
		}
		return nil
	})
}

func checkEvent(body []byte, span string, c *rawCheck) error {
	var name string
	attrs := 0
	err := walkFields(body, func(num protowire.Number, typ protowire.Type, v []byte) error {
		if eventFieldTypes.wrong(num, typ) {
			return wrongType(fmt.Sprintf("event field %d", num), typ)
		}
		switch num {
		case fieldEventName:
			name = string(v)
		case fieldEventAttributes:
			attrs++
			return checkKeyValue(v, 0)
		}
		return nil
	})
	c.attributes(attrs, func() string { return fmt.Sprintf("event %q of span %q", name, span) })
	return err
}

func checkLink(body []byte, span string, c *rawCheck) error {
	attrs := 0
	err := walkFields(body, func(num protowire.Number, typ protowire.Type, v []byte) error {
		if linkFieldTypes.wrong(num, typ) {
			return wrongType(fmt.Sprintf("link field %d", num), typ)
		}
		switch num {
		case fieldLinkTraceID:
			return checkID("link trace_id", v, 16)
		case fieldLinkSpanID:
			return checkID("link span_id", v, 8)
		case fieldLinkAttributes:
			attrs++
			return checkKeyValue(v, 0)
		}
		return nil
	})
	c.attributes(attrs, func() string { return fmt.Sprintf("a link of span %q", span) })
	return err
}

// countAttributes counts and checks the KeyValues of field num of a message
// (a scope's or a resource's attributes).
func countAttributes(body []byte, num protowire.Number) (int, error) {
	n := 0
	err := walkFields(body, func(f protowire.Number, typ protowire.Type, v []byte) error {
		if f != num {
			return nil
		}
		if typ != protowire.BytesType {
			return wrongType("attributes", typ)
		}
		n++
		return checkKeyValue(v, 0)
	})
	return n, err
}

// keyValueFieldTypes: key, value (an AnyValue), key_strindex.
var keyValueFieldTypes = fieldTypes(map[protowire.Number]protowire.Type{1: protowire.BytesType, 2: protowire.BytesType, 3: protowire.VarintType})

// checkKeyValue checks a KeyValue.
func checkKeyValue(body []byte, depth int) error {
	return walkFields(body, func(num protowire.Number, typ protowire.Type, v []byte) error {
		if keyValueFieldTypes.wrong(num, typ) {
			return wrongType("attribute", typ)
		}
		if num == 2 {
			return checkAnyValue(v, depth+1)
		}
		return nil
	})
}

// anyValueTypes are the wire types of AnyValue's fields: string, bool,
// int, double, array, key-value list, bytes, string_value_strindex.
var anyValueTypes = [9]protowire.Type{0, protowire.BytesType, protowire.VarintType, protowire.VarintType,
	protowire.Fixed64Type, protowire.BytesType, protowire.BytesType, protowire.BytesType, protowire.VarintType}

func checkAnyValue(body []byte, depth int) error {
	if depth > maxAnyValueDepth {
		return invalidf("an attribute value nests deeper than %d levels", maxAnyValueDepth)
	}
	return walkFields(body, func(num protowire.Number, typ protowire.Type, v []byte) error {
		if num < 1 || num > 8 {
			return nil
		}
		if typ != anyValueTypes[num] {
			return wrongType("attribute value", typ)
		}
		switch num {
		case 5: // ArrayValue
			return eachValue(v, "array value", func(e []byte) error { return checkAnyValue(e, depth+1) })
		case 6: // KeyValueList
			return eachValue(v, "key-value list", func(e []byte) error { return checkKeyValue(e, depth+1) })
		}
		return nil
	})
}

// eachValue checks each element (field 1) of an ArrayValue or a
// KeyValueList with check.
func eachValue(body []byte, what string, check func([]byte) error) error {
	return walkFields(body, func(n protowire.Number, t protowire.Type, e []byte) error {
		if n != 1 {
			return nil
		}
		if t != protowire.BytesType {
			return wrongType(what, t)
		}
		return check(e)
	})
}

func checkID(what string, v []byte, size int) error {
	if len(v) != 0 && len(v) != size {
		return invalidf("a span's %s has %d bytes, not %d", what, len(v), size)
	}
	return nil
}

func wrongType(field string, typ protowire.Type) error {
	return invalidf("cannot decode the OTLP traces request: %s has wire type %d", field, typ)
}

// walkFields calls f for every field of a message, with the value's bytes
// (for a varint or fixed field, its encoding).
func walkFields(body []byte, f func(num protowire.Number, typ protowire.Type, v []byte) error) error {
	return walkFieldsAt(body, func(num protowire.Number, typ protowire.Type, v []byte, _, _ int) error {
		return f(num, typ, v)
	})
}

// walkFieldsAt is walkFields that also gives where each field starts and
// ends in body. It reads the wire format exactly as the pdata decoder
// does (which is laxer than protowire about field numbers and varints),
// so that both accept the same requests.
func walkFieldsAt(body []byte, f func(num protowire.Number, typ protowire.Type, v []byte, start, end int) error) error {
	for pos := 0; pos < len(body); {
		start := pos
		tag, next, ok := consumeVarint(body, pos)
		if !ok || int32(tag>>3) <= 0 {
			return invalidf("cannot decode the OTLP traces request: bad field tag at byte %d", pos)
		}
		num, typ := protowire.Number(int32(tag>>3)), protowire.Type(tag&7)
		pos = next
		var v []byte
		switch typ {
		case protowire.VarintType:
			if _, next, ok = consumeVarint(body, pos); !ok {
				return invalidf("cannot decode the OTLP traces request: field %d: bad varint", num)
			}
			v, pos = body[pos:next], next
		case protowire.Fixed64Type, protowire.Fixed32Type:
			size := 8
			if typ == protowire.Fixed32Type {
				size = 4
			}
			if pos+size > len(body) {
				return invalidf("cannot decode the OTLP traces request: field %d: unexpected end", num)
			}
			v, pos = body[pos:pos+size], pos+size
		case protowire.BytesType:
			n, next, ok := consumeVarint(body, pos)
			end := next + int(n)
			if !ok || int(n) < 0 || end < next || end > len(body) {
				return invalidf("cannot decode the OTLP traces request: field %d: bad length", num)
			}
			v, pos = body[next:end], end
		case protowire.StartGroupType, protowire.EndGroupType:
			// Groups are long deprecated and the pdata decoder has its own
			// idea of them (it ends a group at its first field): its way.
			return errDecodeFully
		default:
			return invalidf("cannot decode the OTLP traces request: field %d: illegal wire type %d", num, typ)
		}
		if err := f(num, typ, v, start, pos); err != nil {
			return err
		}
	}
	return nil
}

// consumeVarint reads a varint at pos as the pdata decoder does.
func consumeVarint(b []byte, pos int) (uint64, int, bool) {
	var v uint64
	for shift := uint(0); shift < 64; shift += 7 {
		if pos >= len(b) {
			return 0, 0, false
		}
		c := b[pos]
		pos++
		v |= uint64(c&0x7f) << shift
		if c < 0x80 {
			return v, pos, true
		}
	}
	return 0, 0, false
}

// resourceOf decodes a resource given in wire format, wrapped in a
// TracesData of one ResourceSpans so that pdata can read it.
func resourceOf(resource []byte) (ptrace.Traces, error) {
	rs := protowire.AppendTag(nil, fieldRSResource, protowire.BytesType)
	rs = protowire.AppendBytes(rs, resource)
	wrapped := protowire.AppendTag(make([]byte, 0, len(rs)+8), fieldRequestResourceSpans, protowire.BytesType)
	wrapped = protowire.AppendBytes(wrapped, rs)
	td, err := (&ptrace.ProtoUnmarshaler{}).UnmarshalTraces(wrapped)
	if err != nil {
		return td, invalidf("cannot decode a resource of the OTLP traces request: %v", err)
	}
	return td, nil
}

// resourceField encodes the resource of td (made by resourceOf) as the
// resource field of a ResourceSpans.
func resourceField(td ptrace.Traces) ([]byte, error) {
	b, err := marshaler.MarshalTraces(td)
	if err != nil {
		return nil, fmt.Errorf("encode resource: %w", err)
	}
	// b is TracesData{resource_spans: ResourceSpans{resource}}: the field
	// wanted is the inner message's body.
	_, _, n := protowire.ConsumeTag(b)
	if n < 0 {
		return nil, errors.New("encode resource: no resource_spans")
	}
	inner, m := protowire.ConsumeBytes(b[n:])
	if m < 0 {
		return nil, errors.New("encode resource: bad resource_spans")
	}
	return inner, nil
}
