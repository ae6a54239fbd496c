package receiver

import (
	"context"
	"net"
	"net/http"
	"time"

	"go.opentelemetry.io/collector/pdata/plog/plogotlp"
	"go.opentelemetry.io/collector/pdata/pmetric/pmetricotlp"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// OTLP HTTP content types.
const (
	contentTypeProtobuf = "application/x-protobuf"
	contentTypeJSON     = "application/json"
)

// otlpMetrics is the OTLP gRPC metrics service.
type otlpMetrics struct {
	pmetricotlp.UnimplementedGRPCServer
	p *Pipeline
}

func (s *otlpMetrics) Export(ctx context.Context, req pmetricotlp.ExportRequest) (pmetricotlp.ExportResponse, error) {
	err := s.p.Metrics(ctx, Source{Protocol: protoOTLPGRPC, PeerIP: grpcPeerIP(ctx)}, req.Metrics())
	return pmetricotlp.NewExportResponse(), grpcStatus(err)
}

// otlpLogs is the OTLP gRPC logs service.
type otlpLogs struct {
	plogotlp.UnimplementedGRPCServer
	p *Pipeline
}

func (s *otlpLogs) Export(ctx context.Context, req plogotlp.ExportRequest) (plogotlp.ExportResponse, error) {
	err := s.p.Logs(ctx, Source{Protocol: protoOTLPGRPC, PeerIP: grpcPeerIP(ctx)}, req.Logs())
	return plogotlp.NewExportResponse(), grpcStatus(err)
}

// otlpTraces is the OTLP gRPC trace service. Its requests reach it in wire
// format (rawTracesRequest), for Pipeline.TracesProto.
type otlpTraces struct {
	p *Pipeline
}

// registerOTLPTraces registers the trace service on s by hand: the
// generated registration would decode every span into pdata.
func registerOTLPTraces(s *grpc.Server, srv *otlpTraces) {
	s.RegisterService(&grpc.ServiceDesc{
		ServiceName: "opentelemetry.proto.collector.trace.v1.TraceService",
		HandlerType: (*any)(nil),
		Methods:     []grpc.MethodDesc{{MethodName: "Export", Handler: srv.export}},
		Metadata:    "opentelemetry/proto/collector/trace/v1/trace_service.proto",
	}, srv)
}

func (s *otlpTraces) export(_ any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
	// The request's body is copied out of the codec's buffer into a pooled
	// one, given back once the export is answered: TracesProto has then
	// published (or refused) it, and nothing refers to it.
	buf := s.p.body()
	req := &rawTracesRequest{body: *buf}
	defer func() {
		*buf = req.body // its capacity, grown for this request; body() empties it
		s.p.putBody(buf)
	}()
	if err := dec(req); err != nil {
		return nil, err
	}
	handle := func(ctx context.Context, _ any) (any, error) {
		err := s.p.TracesProto(ctx, Source{Protocol: protoOTLPGRPC, PeerIP: grpcPeerIP(ctx)}, req.body)
		return &rawTracesRequest{}, grpcStatus(err) // an empty ExportTraceServiceResponse
	}
	if interceptor == nil {
		return handle(ctx, req)
	}
	return interceptor(ctx, req, &grpc.UnaryServerInfo{Server: s, FullMethod: "/opentelemetry.proto.collector.trace.v1.TraceService/Export"}, handle)
}

// rawTracesRequest is a message kept in wire format. It has the methods
// by which the OTLP gRPC codec that pdata registers reads and writes its
// own messages, so the codec hands it the bytes.
type rawTracesRequest struct{ body []byte }

// UnmarshalProto keeps a copy of the message: the codec reuses buf.
func (r *rawTracesRequest) UnmarshalProto(buf []byte) error {
	r.body = append(r.body[:0], buf...)
	return nil
}

// SizeProto is the size of the encoded message.
func (r *rawTracesRequest) SizeProto() int { return len(r.body) }

// MarshalProto encodes the message into buf, at least SizeProto long.
func (r *rawTracesRequest) MarshalProto(buf []byte) int { return copy(buf, r.body) }

// grpcPeerIP is the sender's IP address, "" when unknown.
func grpcPeerIP(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return ""
	}
	return hostOf(p.Addr.String())
}

// hostOf is the host of host:port, or the address itself.
func hostOf(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}

// otlpHTTP serves /v1/traces, /v1/metrics and /v1/logs, each when its
// signal is on.
type otlpHTTP struct {
	p       *Pipeline
	limits  Limits
	signals Signals
}

func (h *otlpHTTP) register(mux *http.ServeMux) {
	if h.signals.Traces {
		mux.HandleFunc("/v1/traces", h.traces)
	}
	if h.signals.Metrics {
		mux.HandleFunc("/v1/metrics", h.metrics)
	}
	if h.signals.Logs {
		mux.HandleFunc("/v1/logs", h.logs)
	}
}

func (h *otlpHTTP) metrics(w http.ResponseWriter, r *http.Request) {
	req := pmetricotlp.NewExportRequest()
	ct, ok := h.decode(w, r, signalMetrics, req)
	if !ok {
		return
	}
	err := h.p.Metrics(r.Context(), Source{Protocol: protoOTLPHTTP, PeerIP: hostOf(r.RemoteAddr)}, req.Metrics())
	h.answer(w, ct, err, pmetricotlp.NewExportResponse())
}

func (h *otlpHTTP) logs(w http.ResponseWriter, r *http.Request) {
	req := plogotlp.NewExportRequest()
	ct, ok := h.decode(w, r, signalLogs, req)
	if !ok {
		return
	}
	err := h.p.Logs(r.Context(), Source{Protocol: protoOTLPHTTP, PeerIP: hostOf(r.RemoteAddr)}, req.Logs())
	h.answer(w, ct, err, plogotlp.NewExportResponse())
}

// exportRequest is what every OTLP request type can do.
type exportRequest interface {
	UnmarshalProto([]byte) error
	UnmarshalJSON([]byte) error
}

// decode reads an OTLP HTTP request into req. It writes the error answer
// itself and returns false when the request cannot be read.
func (h *otlpHTTP) decode(w http.ResponseWriter, r *http.Request, signal string, req exportRequest) (string, bool) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeOTLPError(w, contentTypeJSON, http.StatusMethodNotAllowed, 0, "only POST is allowed")
		return "", false
	}
	ct := mediaType(r)
	if ct != contentTypeProtobuf && ct != contentTypeJSON {
		writeOTLPError(w, contentTypeJSON, http.StatusUnsupportedMediaType, 0, "Content-Type "+ct+" is not application/x-protobuf or application/json")
		return "", false
	}
	body, err := readBody(r, h.limits)
	if err == nil {
		if ct == contentTypeJSON {
			err = req.UnmarshalJSON(body)
		} else {
			err = req.UnmarshalProto(body)
		}
		if err != nil {
			err = invalidf("cannot decode the OTLP %s request (%s): %v", signal, ct, err)
		}
	}
	if err != nil {
		h.p.metrics.undecodable(protoOTLPHTTP, signal, err)
		code, retry := httpStatus(err)
		writeOTLPError(w, ct, code, retry, err.Error())
		return "", false
	}
	return ct, true
}

func (h *otlpHTTP) traces(w http.ResponseWriter, r *http.Request) {
	src := Source{Protocol: protoOTLPHTTP, PeerIP: hostOf(r.RemoteAddr)}
	if r.Method == http.MethodPost && mediaType(r) == contentTypeProtobuf {
		// Published in wire format, without decoding the spans.
		body, err := readBody(r, h.limits)
		if err != nil {
			h.p.metrics.undecodable(protoOTLPHTTP, signalTraces, err)
			code, retry := httpStatus(err)
			writeOTLPError(w, contentTypeProtobuf, code, retry, err.Error())
			return
		}
		err = h.p.TracesProto(r.Context(), src, body)
		h.answer(w, contentTypeProtobuf, err, ptraceotlp.NewExportResponse())
		return
	}
	req := ptraceotlp.NewExportRequest()
	ct, ok := h.decode(w, r, signalTraces, req)
	if !ok {
		return
	}
	err := h.p.Traces(r.Context(), src, req.Traces())
	h.answer(w, ct, err, ptraceotlp.NewExportResponse())
}

// exportResponse is what every OTLP response type can do.
type exportResponse interface {
	MarshalProto() ([]byte, error)
	MarshalJSON() ([]byte, error)
}

// answer writes the OTLP HTTP answer of a request in its content type.
func (h *otlpHTTP) answer(w http.ResponseWriter, ct string, err error, resp exportResponse) {
	if err != nil {
		code, retry := httpStatus(err)
		writeOTLPError(w, ct, code, retry, err.Error())
		return
	}
	var body []byte
	if ct == contentTypeJSON {
		body, err = resp.MarshalJSON()
	} else {
		body, err = resp.MarshalProto()
	}
	if err != nil {
		writeOTLPError(w, ct, http.StatusInternalServerError, 0, err.Error())
		return
	}
	w.Header().Set("Content-Type", ct)
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}

// writeOTLPError answers with a google.rpc.Status in the request's
// encoding, as the OTLP specification asks.
func writeOTLPError(w http.ResponseWriter, ct string, code int, retryAfter time.Duration, msg string) {
	st := status.New(httpToGRPC(code), msg).Proto()
	var body []byte
	if ct == contentTypeProtobuf {
		body, _ = proto.Marshal(st)
	} else {
		ct = contentTypeJSON
		body, _ = protojson.Marshal(st)
	}
	setRetryAfter(w, retryAfter)
	w.Header().Set("Content-Type", ct)
	w.WriteHeader(code)
	_, _ = w.Write(body)
}

func httpToGRPC(code int) codes.Code {
	switch code {
	case http.StatusBadRequest, http.StatusUnsupportedMediaType, http.StatusMethodNotAllowed:
		return codes.InvalidArgument
	case http.StatusRequestEntityTooLarge:
		return codes.ResourceExhausted
	case http.StatusTooManyRequests, http.StatusServiceUnavailable:
		return codes.Unavailable
	}
	return codes.Internal
}
