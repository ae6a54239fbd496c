// Package collector is the node collector's metrics path: it scrapes its
// targets with the Prometheus scrape library (text, OpenMetrics and protobuf
// exposition, up and scrape_* series, staleness markers, honor_labels,
// sample_limit, timeouts, TLS and bearer tokens) and turns each scrape into
// one bus message: a snappy-compressed remote-write 1.0 WriteRequest,
// encoded straight from the appended samples, published on the raw stream
// under the target's partition. A scrape larger than nats.maxMessageBytes is
// split into several messages.
package collector
