// Package status is `watershed status`: what the bus holds for each
// destination (messages, bytes, how full, the oldest message, what the
// writers have not received or not acknowledged) and each collector's last
// heartbeat, read from JetStream without disturbing any consumer.
package status
