package bus

import (
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"
)

// Header names of a telemetry message. Routing reads only these, never the
// payload.
const (
	// HeaderSignal is metrics, logs or traces.
	HeaderSignal = "Ws-Signal"
	// HeaderEncoding names the payload format, for example EncodingPRW1Snappy.
	HeaderEncoding = "Ws-Encoding"
	// HeaderTenant is the backend tenant (X-Scope-OrgID); the router fills it in.
	HeaderTenant = "Ws-Tenant"
	// HeaderSource is the producing process (collector or receiver instance).
	HeaderSource = "Ws-Source"
	// HeaderPartitionKey is the key the partition was computed from.
	HeaderPartitionKey = "Ws-Partition-Key"
	// HeaderCount is the number of items (samples, lines, spans) in the payload.
	HeaderCount = "Ws-Count"
	// HeaderTime is the collection time in Unix milliseconds.
	HeaderTime = "Ws-Time"
)

// EncodingPRW1Snappy is a Prometheus remote-write 1.0 WriteRequest, snappy
// block-compressed: exactly a remote-write request body.
const EncodingPRW1Snappy = "prw1+snappy"

// EncodingLokiPushSnappy is a Loki PushRequest (logproto), snappy
// block-compressed: exactly a Loki push request body.
const EncodingLokiPushSnappy = "loki-push+snappy"

// EncodingOTLPTracesSnappy is an OTLP ExportTraceServiceRequest, snappy
// block-compressed. Its resource spans are a repeated field at the top, so
// payloads join by concatenation like the two above.
const EncodingOTLPTracesSnappy = "otlp-traces+snappy"

// Count reads the item count header.
func Count(h nats.Header) (int, error) {
	v := h.Get(HeaderCount)
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("header %s=%q is not a count", HeaderCount, v)
	}
	return n, nil
}
