// Package logproc is the router's log processing: the stages of
// logs.processing (json, logfmt, regex, labels, structured_metadata,
// timestamp, drop, static_labels, trace_id), run in order on every entry of
// a Loki push request, in the spirit of Alloy's loki.process, and the
// tenant of each stream from a label. The router uses it only when stages
// or a tenant label are configured; otherwise logs pass through without
// being decoded.
package logproc
