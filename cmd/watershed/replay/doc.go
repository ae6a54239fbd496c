// Package replay is `watershed replay`: it sends a time window of a
// destination's buffer (its WS_DEST_<NAME> stream, retained after
// delivery) again, to the same backend or another, through the writers'
// own request shaping and delivery (httpwriter.Deliver with the
// destination's sender), so that retries, throttling and the refusal
// reasons are those of the live writers.
//
// It reads with an ordered, ephemeral consumer that acknowledges nothing,
// so the live writers' durable consumers are never disturbed, and it stops
// at the last message the stream held when it started, so it does not
// chase live data. Messages go in stream order, which keeps every series
// and log stream in order. Progress (messages, items, bytes, rate, ETA) is
// printed while it runs; a summary (sent, refused by reason, skipped) at
// the end, also after Ctrl-C. With a resume file, the stream sequence of
// the last delivered request is kept there, and a later run with the same
// destination and window continues after it.
package replay
