// Package lokiwriter is writer-loki: the Loki destination's stream
// delivered by platform/httpwriter as Loki push requests (snappy-compressed
// logproto PushRequests, which join like remote-write requests because
// their streams are a repeated field at the top), with Loki's refusals
// named by reason.
package lokiwriter
