// Package tempowriter is writer-tempo: the Tempo destination's stream
// delivered by platform/httpwriter as OTLP trace exports, over gRPC
// (protocol otlp, the default) or HTTP (protocol otlphttp).
//
// Each bus message holds an ExportTraceServiceRequest; since its resource
// spans are a repeated field at the top, the messages of a batch are
// joined by laying their payloads end to end, and the gRPC exporter sends
// those bytes as they are through a pass-through codec: spans are never
// decoded on their way out. Batches follow receivers.processors.batch
// (size spans, or what arrived within timeout).
//
// Answers are classified as the OTLP specification says: UNAVAILABLE and
// the other transient codes, and HTTP 429/5xx, are retried without acking;
// RESOURCE_EXHAUSTED is retried after its RetryInfo delay when it has one
// and refused for good when it has none (as grpc-go says it of a message
// over the server's size limit, which would fail forever); INVALID_ARGUMENT
// and other permanent answers are counted by reason and acked; the spans a
// partial success rejects are counted, not retried.
package tempowriter
