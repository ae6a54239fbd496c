package receiver

import (
	"context"
	"errors"
	"slices"

	"go.opentelemetry.io/collector/pdata/ptrace"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/watershed-dev/watershed/platform/bus"
)

// TracesProto publishes one OTLP protobuf trace request (an
// ExportTraceServiceRequest) as the bus carries it, decoding only its
// resources (rawtraces.go). It answers as Traces does.
func (p *Pipeline) TracesProto(ctx context.Context, src Source, body []byte) error {
	check := rawCheck{maxAttributes: p.cfg.MaxAttributes}
	rss, err := parseRawTraces(body, &check)
	if errors.Is(err, errDecodeFully) {
		td, derr := (&ptrace.ProtoUnmarshaler{}).UnmarshalTraces(body)
		if derr != nil {
			err = invalidf("cannot decode the OTLP traces request: %v", derr)
			p.metrics.undecodable(src.Protocol, signalTraces, err)
			return err
		}
		return p.Traces(ctx, src, td)
	}
	if err != nil {
		p.metrics.undecodable(src.Protocol, signalTraces, err)
		return err
	}
	spans := 0
	for _, rs := range rss {
		spans += rs.spans
	}
	err = check.violation
	if err == nil {
		err = p.tracesProto(ctx, src, rss)
	}
	p.metrics.observe(src.Protocol, signalTraces, spans, err)
	return err
}

func (p *Pipeline) tracesProto(ctx context.Context, src Source, rss []rawResourceSpans) error {
	if err := p.admit(); err != nil {
		return err
	}
	groups := map[group]*rawGroup{}
	// Published or not, no bus message refers to a group's body: publish
	// sends a compressed copy.
	defer func() {
		for _, rg := range groups {
			p.putBody(rg.buf)
		}
	}()
	var order []group
	for i := range rss {
		rs := &rss[i]
		g, resource, err := p.enrichRaw(rs, i, src)
		if err != nil {
			return err
		}
		rg := groups[g]
		if rg == nil {
			// Most requests are one group: room for all of it at once.
			buf := p.body()
			*buf = slices.Grow(*buf, len(rs.body)*(len(rss)-i)+len(resource)+16)
			rg = &rawGroup{buf: buf}
			groups[g] = rg
			order = append(order, g)
		}
		// The ResourceSpans again, its resource field replaced.
		size := len(rs.body) - (rs.resEnd - rs.resStart) + len(resource)
		b := protowire.AppendTag(*rg.buf, fieldRequestResourceSpans, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(size))
		b = append(b, rs.body[:rs.resStart]...)
		b = append(b, resource...)
		*rg.buf = append(b, rs.body[rs.resEnd:]...)
		rg.spans += rs.spans
	}
	ctx, cancel := context.WithTimeout(ctx, p.cfg.PublishTimeout)
	defer cancel()
	for _, g := range order {
		rg := groups[g]
		body := *rg.buf
		if len(body) > p.cfg.MaxMessageBytes {
			if err := p.publishSplit(ctx, g, body); err != nil {
				return err
			}
			continue
		}
		if err := p.publish(ctx, bus.SignalTraces, bus.EncodingOTLPTracesSnappy, g, rg.spans, body); err != nil {
			return err
		}
	}
	return nil
}

// rawGroup is the request of one bus message, in wire format.
type rawGroup struct {
	buf   *[]byte // its body, from Pipeline.bodies
	spans int
}

// enrichRaw decodes a resource, checks and enriches it, and returns its
// group and its resource field as it is to be sent.
func (p *Pipeline) enrichRaw(rs *rawResourceSpans, i int, src Source) (group, []byte, error) {
	td, err := resourceOf(rs.resource)
	if err != nil {
		return group{}, nil, err
	}
	attrs := td.ResourceSpans().At(0).Resource().Attributes()
	if err := checkAttrs(attrs, p.cfg.MaxAttributes, "resource", i, -1); err != nil {
		return group{}, nil, err
	}
	before := attrs.Len()
	p.k8s.Enrich(attrs, src.PeerIP)
	g := group{partition: bus.Partition(resourceKey(attrs), p.cfg.Partitions), tenant: p.cfg.TraceTenant.tenant(attrs)}
	if attrs.Len() == before {
		return g, rs.body[rs.resStart:rs.resEnd], nil // the enricher only adds: nothing changed
	}
	field, err := resourceField(td)
	if err != nil {
		return group{}, nil, err
	}
	return g, field, nil
}

// publishSplit publishes a group larger than a bus message the pdata way,
// which splits it between spans.
func (p *Pipeline) publishSplit(ctx context.Context, g group, body []byte) error {
	td, err := (&ptrace.ProtoUnmarshaler{}).UnmarshalTraces(body)
	if err != nil {
		return invalidf("cannot decode the OTLP traces request: %v", err)
	}
	for _, chunk := range splitTraces(td, p.cfg.MaxMessageBytes) {
		if err := p.publishTraces(ctx, g, chunk); err != nil {
			return err
		}
	}
	return nil
}
