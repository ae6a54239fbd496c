package bus

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
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
	// HeaderPartitionSeq numbers the messages of one destination
	// partition, 1, 2, 3, ..., as the router stores them. JetStream drops
	// the oldest messages of a full stream (dropOldest) and expired ones
	// without a trace; a writer that sees a gap in these numbers counts
	// what it lost that way.
	HeaderPartitionSeq = "Ws-Partition-Seq"
	// HeaderChunks lists the chunks a metrics message was filled with
	// (remotewrite.FormatChunkTable), so that a writer can cut a message
	// larger than one of its requests where two chunks met. A message
	// without it is one chunk.
	HeaderChunks = "Ws-Chunks"
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

// PartitionSeq reads the partition sequence header; false when absent or
// not a number.
func PartitionSeq(h nats.Header) (uint64, bool) {
	n, err := strconv.ParseUint(h.Get(HeaderPartitionSeq), 10, 64)
	return n, err == nil && n > 0
}

// LastPartitionSeq is the partition sequence of the last message stored
// on subject, 0 when there is none (or it has no number).
func LastPartitionSeq(ctx context.Context, s jetstream.Stream, subject string) (uint64, error) {
	m, err := s.GetLastMsgForSubject(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("last message of %s: %w", subject, err)
	}
	n, _ := PartitionSeq(m.Header)
	return n, nil
}

// MsgPartitionSeq is the partition sequence of the message at stream
// sequence seq, 0 when it is gone (or has no number).
func MsgPartitionSeq(ctx context.Context, s jetstream.Stream, seq uint64) (uint64, error) {
	m, err := s.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("message %d: %w", seq, err)
	}
	n, _ := PartitionSeq(m.Header)
	return n, nil
}

// Count reads the item count header.
func Count(h nats.Header) (int, error) {
	v := h.Get(HeaderCount)
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("header %s=%q is not a count", HeaderCount, v)
	}
	return n, nil
}
