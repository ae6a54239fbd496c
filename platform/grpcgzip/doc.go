// Package grpcgzip replaces gRPC's "gzip" compressor, in the whole process,
// with klauspost/compress at its fastest level, with pooled writers and
// readers. gRPC's own uses the standard library at the default level: it
// was 28 % of the all-in-one's CPU when writer-tempo exported gzipped OTLP
// (the OpenTelemetry Collector's default, and Watershed's). A faster level
// costs some bytes on the wire, not the CPU of every node. Import it for
// its side effect, in every package that compresses or decompresses gRPC
// with gzip, so that which one a binary gets does not depend on what else
// it links.
package grpcgzip
