// Package remotewrite writes Prometheus remote-write 1.0 WriteRequests in
// wire format straight from scraped samples, with no intermediate structs,
// and joins several compressed requests into one.
//
// Joining works because protobuf concatenates repeated fields: the bytes of
// two WriteRequests one after the other are one WriteRequest holding the
// series of both. So the writer never decodes a payload: it decompresses,
// appends and compresses once.
package remotewrite
