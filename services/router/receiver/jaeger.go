package receiver

import (
	"context"
	"fmt"
	"math"
	"net/http"

	"github.com/apache/thrift/lib/go/thrift"
	"github.com/jaegertracing/jaeger-idl/model/v1"
	"github.com/jaegertracing/jaeger-idl/proto-gen/api_v2"
	"github.com/jaegertracing/jaeger-idl/thrift-gen/jaeger"
	jaegertranslator "github.com/open-telemetry/opentelemetry-collector-contrib/pkg/translator/jaeger"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// jaegerGRPC is the Jaeger collector's gRPC API (api_v2.CollectorService).
type jaegerGRPC struct {
	p *Pipeline
}

func (s *jaegerGRPC) PostSpans(ctx context.Context, req *api_v2.PostSpansRequest) (*api_v2.PostSpansResponse, error) {
	src := Source{Protocol: protoJaegerGRPC, PeerIP: grpcPeerIP(ctx)}
	td, err := jaegertranslator.ProtoToTraces([]*model.Batch{&req.Batch})
	if err != nil {
		err = invalidf("cannot translate the Jaeger batch: %v", err)
		s.p.metrics.undecodable(src.Protocol, signalTraces, err)
		return nil, grpcStatus(err)
	}
	if err := s.p.Traces(ctx, src, td); err != nil {
		return nil, grpcStatus(err)
	}
	return &api_v2.PostSpansResponse{}, nil
}

// jaegerThriftHTTP serves the Jaeger collector's /api/traces: one Thrift
// (binary protocol) jaeger.Batch per request.
type jaegerThriftHTTP struct {
	p      *Pipeline
	limits Limits
}

func (h *jaegerThriftHTTP) register(mux *http.ServeMux) {
	mux.HandleFunc("/api/traces", h.traces)
}

func (h *jaegerThriftHTTP) traces(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "only POST is allowed", http.StatusMethodNotAllowed)
		return
	}
	switch ct := mediaType(r); ct {
	case "application/x-thrift", "application/vnd.apache.thrift.binary":
	default:
		http.Error(w, fmt.Sprintf("Content-Type %q is not application/x-thrift or application/vnd.apache.thrift.binary", ct), http.StatusUnsupportedMediaType)
		return
	}
	td, err := h.decode(r)
	if err != nil {
		h.p.metrics.undecodable(protoJaegerThrift, signalTraces, err)
		writePlainError(w, err)
		return
	}
	if err := h.p.Traces(r.Context(), Source{Protocol: protoJaegerThrift, PeerIP: hostOf(r.RemoteAddr)}, td); err != nil {
		writePlainError(w, err)
		return
	}
	w.WriteHeader(http.StatusAccepted)
}

func (h *jaegerThriftHTTP) decode(r *http.Request) (ptrace.Traces, error) {
	body, err := readBody(r, h.limits)
	if err != nil {
		return ptrace.Traces{}, err
	}
	return decodeJaegerThrift(r.Context(), body)
}

// decodeJaegerThrift decodes a Thrift binary jaeger.Batch. Thrift's own
// limits keep a lying length from allocating more than the body.
func decodeJaegerThrift(ctx context.Context, body []byte) (ptrace.Traces, error) {
	size := int32(min(len(body), math.MaxInt32))
	conf := &thrift.TConfiguration{MaxMessageSize: size, MaxFrameSize: size}
	buf := thrift.NewTMemoryBufferLen(len(body))
	_, _ = buf.Write(body)
	batch := &jaeger.Batch{}
	if err := batch.Read(ctx, thrift.NewTBinaryProtocolConf(buf, conf)); err != nil {
		return ptrace.Traces{}, invalidf("cannot decode the Jaeger Thrift batch: %v", err)
	}
	td, err := jaegertranslator.ThriftToTraces(batch)
	if err != nil {
		return ptrace.Traces{}, invalidf("cannot translate the Jaeger Thrift batch: %v", err)
	}
	return td, nil
}
