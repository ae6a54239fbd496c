package receiver

import (
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// splitTraces cuts td into parts whose encoding stays under limit bytes,
// keeping each span with a copy of its resource and scope. One span larger
// than limit goes alone (the bus takes up to 8 MiB). td itself comes back
// when it fits.
func splitTraces(td ptrace.Traces, limit int) []ptrace.Traces {
	if marshaler.TracesSize(td) <= limit {
		return []ptrace.Traces{td}
	}
	var (
		out  []ptrace.Traces
		cur  = ptrace.NewTraces()
		size int
	)
	flush := func() {
		if cur.ResourceSpans().Len() > 0 {
			out = append(out, cur)
		}
		cur, size = ptrace.NewTraces(), 0
	}
	rss := td.ResourceSpans()
	for i := 0; i < rss.Len(); i++ {
		rs := rss.At(i)
		if n := marshaler.ResourceSpansSize(rs); size+n <= limit {
			rs.CopyTo(cur.ResourceSpans().AppendEmpty())
			size += n + 8
			continue
		}
		// The resource does not fit whole: its spans go one by one, each
		// part repeating the resource and scope.
		var (
			dstRS          ptrace.ResourceSpans
			dstSS          ptrace.ScopeSpans
			haveRS, haveSS bool
			header         = marshaler.ResourceSpansSize(emptyLike(rs))
		)
		sss := rs.ScopeSpans()
		for j := 0; j < sss.Len(); j++ {
			ss := sss.At(j)
			haveSS = false
			for k := 0; k < ss.Spans().Len(); k++ {
				span := ss.Spans().At(k)
				n := marshaler.SpanSize(span) + 8
				if size > 0 && size+n > limit {
					flush()
					haveRS, haveSS = false, false
				}
				if !haveRS {
					dstRS = cur.ResourceSpans().AppendEmpty()
					rs.Resource().CopyTo(dstRS.Resource())
					dstRS.SetSchemaUrl(rs.SchemaUrl())
					size += header
					haveRS = true
				}
				if !haveSS {
					dstSS = dstRS.ScopeSpans().AppendEmpty()
					ss.Scope().CopyTo(dstSS.Scope())
					dstSS.SetSchemaUrl(ss.SchemaUrl())
					haveSS = true
				}
				span.CopyTo(dstSS.Spans().AppendEmpty())
				size += n
			}
		}
		flush()
	}
	flush()
	return out
}

// emptyLike is rs's resource without spans, to size the header every
// part repeats.
func emptyLike(rs ptrace.ResourceSpans) ptrace.ResourceSpans {
	e := ptrace.NewResourceSpans()
	rs.Resource().CopyTo(e.Resource())
	e.SetSchemaUrl(rs.SchemaUrl())
	return e
}

// checkTraceAttributes refuses a request with an element that carries
// more than max attributes, naming where.
func checkTraceAttributes(td ptrace.Traces, limit int) error {
	rss := td.ResourceSpans()
	for i := 0; i < rss.Len(); i++ {
		rs := rss.At(i)
		if err := checkAttrs(rs.Resource().Attributes(), limit, "resource", i, -1); err != nil {
			return err
		}
		sss := rs.ScopeSpans()
		for j := 0; j < sss.Len(); j++ {
			ss := sss.At(j)
			if err := checkAttrs(ss.Scope().Attributes(), limit, "scope", i, j); err != nil {
				return err
			}
			for k := 0; k < ss.Spans().Len(); k++ {
				if err := checkSpanAttributes(ss.Spans().At(k), limit); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func checkSpanAttributes(s ptrace.Span, limit int) error {
	if n := s.Attributes().Len(); n > limit {
		return invalidf("span %q has %d attributes, more than receivers.limits.maxAttributes (%d)", s.Name(), n, limit)
	}
	for e := 0; e < s.Events().Len(); e++ {
		if n := s.Events().At(e).Attributes().Len(); n > limit {
			return invalidf("event %q of span %q has %d attributes, more than receivers.limits.maxAttributes (%d)", s.Events().At(e).Name(), s.Name(), n, limit)
		}
	}
	for l := 0; l < s.Links().Len(); l++ {
		if n := s.Links().At(l).Attributes().Len(); n > limit {
			return invalidf("a link of span %q has %d attributes, more than receivers.limits.maxAttributes (%d)", s.Name(), n, limit)
		}
	}
	return nil
}

func checkAttrs(m pcommon.Map, limit int, what string, i, j int) error {
	if n := m.Len(); n > limit {
		if j >= 0 {
			return invalidf("%s %d of resource %d has %d attributes, more than receivers.limits.maxAttributes (%d)", what, j, i, n, limit)
		}
		return invalidf("%s %d has %d attributes, more than receivers.limits.maxAttributes (%d)", what, i, n, limit)
	}
	return nil
}
