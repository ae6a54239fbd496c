// Package mimirwriter delivers the Prometheus destination's stream to a
// remote-write backend (Mimir, Prometheus, Grafana Cloud).
//
// Each partition has its own durable consumer and is written by one
// goroutine, one request at a time, so a series' samples reach the backend
// in the order they were scraped. Messages are joined into requests of at
// most queue.maxSamplesPerSend samples, or what arrived within
// queue.batchSendDeadline, without decoding: payloads are decompressed,
// appended and compressed once. A message is acked only once the backend
// answered 2xx, or answered that it will never take it (a permanent 4xx,
// counted by reason). Everything else is retried with backoff, honouring
// Retry-After, while the messages stay unacked on the bus.
package mimirwriter
