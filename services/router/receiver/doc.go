// Package receiver is the router's ingest gateway: the protocols that
// applications send telemetry to (OTLP over gRPC and HTTP, Zipkin, Jaeger
// gRPC and Thrift over HTTP), as Alloy's receivers do for the
// k8s-monitoring chart.
//
// Every protocol decodes into pdata with the OpenTelemetry libraries, except
// OTLP protobuf traces, which are walked in wire format and only their
// resources decoded (rawtraces.go: the spans go to the bus as they came),
// then goes through one pipeline: the request's limits are checked (size,
// decompressed size, attributes per element), the memory limiter may refuse
// it with the protocol's retryable answer, each resource is enriched with
// Kubernetes attributes of the sender's pod (from discovery's pod metadata
// on the bus), resources are grouped by tenant and partition, encoded once
// as OTLP protobuf and published to the raw stream. The client gets its
// success answer only once JetStream has stored every message of the
// request, so an acknowledged span is never lost; when the bus cannot take
// it in time, the client is told to retry.
package receiver
