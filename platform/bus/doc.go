// Package bus is Watershed's message bus on NATS JetStream: it starts the
// embedded server or connects to an external one, creates the streams and
// consumers idempotently, names the subjects and headers every service
// agrees on, and publishes with a bounded number of messages in flight.
//
// Streams: WS_RAW is a work queue of raw telemetry from collectors and
// receivers, consumed by the router. WS_DEST_<NAME> is one retained stream
// per destination (PROMETHEUS, later LOKI and TEMPO), consumed by that
// destination's writer and kept after acks for replay. Subjects carry a
// partition number so that each series stays on one partition.
package bus
