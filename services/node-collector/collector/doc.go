// Package collector is the node collector's metrics path: it scrapes its
// targets with the Prometheus scrape library (text, OpenMetrics and protobuf
// exposition, up and scrape_* series, staleness markers, honor_labels,
// sample_limit, timeouts, TLS and bearer tokens) and publishes the scrapes
// as snappy-compressed remote-write 1.0 WriteRequests, encoded straight
// from the appended samples, on the raw stream under the target's
// partition. The scrapes of one partition finished within
// metrics.batchLinger share bus messages, filled chunk by chunk up to
// nats.maxMessageBytes, with a table of the chunks in the Ws-Chunks header
// that the writer cuts them into requests of maxSamplesPerSend by
// (joiner.go); a scrape larger than maxSamplesPerSend goes alone, split
// into messages of up to nats.maxMessageBytes.
package collector
