// Package lokipush encodes Loki push requests (logproto.PushRequest) in
// protobuf wire format straight from the bytes a tailer read: a log line
// is copied once, into the request, with no string or struct per entry.
// The result decodes with github.com/grafana/loki/pkg/push.
package lokipush
