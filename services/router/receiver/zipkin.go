package receiver

import (
	"net/http"

	"github.com/open-telemetry/opentelemetry-collector-contrib/pkg/translator/zipkin/zipkinv1"
	"github.com/open-telemetry/opentelemetry-collector-contrib/pkg/translator/zipkin/zipkinv2"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// zipkinHTTP serves Zipkin's span API: /api/v2/spans (JSON and protobuf)
// and /api/v1/spans (JSON and Thrift), answering 202 as Zipkin does.
type zipkinHTTP struct {
	p      *Pipeline
	limits Limits
}

var (
	zipkinV2JSON   = zipkinv2.NewJSONTracesUnmarshaler(false)
	zipkinV1JSON   = zipkinv1.NewJSONTracesUnmarshaler(false)
	zipkinV1Thrift = zipkinv1.NewThriftTracesUnmarshaler()
)

func (h *zipkinHTTP) register(mux *http.ServeMux) {
	mux.HandleFunc("/api/v2/spans", h.v2)
	mux.HandleFunc("/api/v1/spans", h.v1)
}

func (h *zipkinHTTP) v2(w http.ResponseWriter, r *http.Request) {
	h.serve(w, r, func(ct string) (ptrace.Unmarshaler, bool) {
		switch ct {
		case "", contentTypeJSON:
			return zipkinV2JSON, true
		case contentTypeProtobuf:
			// X-B3-Flags: 1 asks for debug spans, as Zipkin's own server reads it.
			return zipkinv2.NewProtobufTracesUnmarshaler(r.Header.Get("X-B3-Flags") == "1", false), true
		}
		return nil, false
	})
}

func (h *zipkinHTTP) v1(w http.ResponseWriter, r *http.Request) {
	h.serve(w, r, func(ct string) (ptrace.Unmarshaler, bool) {
		switch ct {
		case "", contentTypeJSON:
			return zipkinV1JSON, true
		case "application/x-thrift":
			return zipkinV1Thrift, true
		}
		return nil, false
	})
}

func (h *zipkinHTTP) serve(w http.ResponseWriter, r *http.Request, pick func(ct string) (ptrace.Unmarshaler, bool)) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "only POST is allowed", http.StatusMethodNotAllowed)
		return
	}
	ct := mediaType(r)
	u, ok := pick(ct)
	if !ok {
		http.Error(w, "Content-Type "+ct+" is not supported on "+r.URL.Path, http.StatusUnsupportedMediaType)
		return
	}
	td, err := decodeSpans(r, h.limits, u)
	if err != nil {
		h.p.metrics.undecodable(protoZipkin, signalTraces, err)
		writePlainError(w, err)
		return
	}
	if err := h.p.Traces(r.Context(), Source{Protocol: protoZipkin, PeerIP: hostOf(r.RemoteAddr)}, td); err != nil {
		writePlainError(w, err)
		return
	}
	w.WriteHeader(http.StatusAccepted)
}

// decodeSpans reads a body within the limits and decodes it.
func decodeSpans(r *http.Request, l Limits, u ptrace.Unmarshaler) (ptrace.Traces, error) {
	body, err := readBody(r, l)
	if err != nil {
		return ptrace.Traces{}, err
	}
	td, err := u.UnmarshalTraces(body)
	if err != nil {
		return ptrace.Traces{}, invalidf("cannot decode the spans of %s: %v", r.URL.Path, err)
	}
	return td, nil
}

// writePlainError answers a non-OTLP HTTP request with the error's status
// and text.
func writePlainError(w http.ResponseWriter, err error) {
	code, retry := httpStatus(err)
	setRetryAfter(w, retry)
	http.Error(w, err.Error(), code)
}
