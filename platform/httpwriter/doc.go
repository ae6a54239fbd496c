// Package httpwriter delivers a destination's stream to its backend,
// whatever the protocol (Prometheus remote write, Loki push, OTLP): the
// part all writers share. The transport is an HTTP POST of the
// snappy-compressed request unless the writer brings its own Sender
// (writer-tempo's OTLP gRPC and OTLP HTTP exporters).
//
// Each partition has its own durable consumer and is written by one
// goroutine, one request at a time, so a series or a log stream reaches the
// backend in the order it was collected. Messages are joined into requests
// of at most Queue.MaxItemsPerSend items and Queue.MaxBytesPerSend bytes,
// or what arrived within Queue.BatchSendDeadline, without decoding:
// payloads are decompressed, appended and compressed once, which works
// because every protocol's request is a repeated field at the top. A
// message is acked only once the backend answered 2xx, or answered that it
// will never take it (a permanent 4xx, counted by reason). Everything else
// is retried with backoff, honouring Retry-After, while the messages stay
// unacked on the bus.
package httpwriter
