// Package router moves raw telemetry from the raw work-queue stream to the
// stream of each destination, partition by partition and in order, reading
// only the message headers: the payload is never decoded. It fills in the
// tenant from the destination's configuration when the producer left it
// empty, and keeps the producer's Nats-Msg-Id so that a message routed
// twice (after a crash before the ack) is stored once.
package router
