package receiver

import (
	"context"
	"testing"

	"github.com/apache/thrift/lib/go/thrift"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
)

// afterDecode runs what the pipeline does with any decoded request that
// does not need the bus: the attribute limit, splitting, encoding. None
// may panic, and the parts must hold every span.
func afterDecode(t *testing.T, td ptrace.Traces) {
	_ = checkTraceAttributes(td, 128)
	total := 0
	for _, part := range splitTraces(td, 4096) {
		raw, err := marshaler.MarshalTraces(part)
		if err != nil {
			t.Fatalf("decoded request does not encode: %v", err)
		}
		back, err := (&ptrace.ProtoUnmarshaler{}).UnmarshalTraces(raw)
		if err != nil {
			t.Fatalf("encoded part does not decode: %v", err)
		}
		total += back.SpanCount()
	}
	if total != td.SpanCount() {
		t.Fatalf("parts hold %d spans, the request %d", total, td.SpanCount())
	}
}

func FuzzOTLPJSON(f *testing.F) {
	for _, name := range []string{"a", "b"} {
		b, _ := ptraceotlp.NewExportRequestFromTraces(oneSpan("svc", name)).MarshalJSON()
		f.Add(b)
	}
	f.Add([]byte(`{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"x"}}]},"scopeSpans":[{"spans":[{"traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"0102030405060708","name":"s","kind":2,"startTimeUnixNano":"1","endTimeUnixNano":"2","events":[{"name":"e","attributes":[{"key":"k","value":{"intValue":"3"}}]}]}]}]}]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		req := ptraceotlp.NewExportRequest()
		if err := req.UnmarshalJSON(body); err != nil {
			return
		}
		afterDecode(t, req.Traces())
	})
}

func FuzzZipkinJSON(f *testing.F) {
	f.Add(zipkinJSON("svc", "op"))
	f.Add([]byte(`[{"traceId":"463ac35c9f6413ad48485a3953bb6124","id":"a2fb4a1d1a96d312","parentId":"0020000000000001","name":"get","kind":"CLIENT","timestamp":1472470996199000,"duration":207000,"localEndpoint":{"serviceName":"frontend","ipv6":"7::80:807f"},"remoteEndpoint":{"serviceName":"backend","ipv4":"192.168.99.101","port":9000},"annotations":[{"timestamp":1472470996238000,"value":"foo"}],"tags":{"http.path":"/api","clnt/finagle.version":"6.45.0"},"shared":true,"debug":true}]`))
	f.Fuzz(func(t *testing.T, body []byte) {
		td, err := zipkinV2JSON.UnmarshalTraces(body)
		if err != nil {
			return
		}
		afterDecode(t, td)
	})
}

func FuzzJaegerThrift(f *testing.F) {
	b, err := thrift.NewTSerializer().Write(context.Background(), jaegerBatch("svc", "op"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add([]byte("\x0f\x00\x01\x7f\xff\xff\xff"))
	f.Fuzz(func(t *testing.T, body []byte) {
		td, err := decodeJaegerThrift(context.Background(), body)
		if err != nil {
			return
		}
		afterDecode(t, td)
	})
}
