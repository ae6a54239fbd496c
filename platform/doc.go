// Package platform is the root of Watershed's shared module: the code every
// service needs and none owns. Its packages are config (the one YAML schema
// all services read), bus (NATS JetStream: the embedded server, streams,
// subjects, headers and the bounded publisher), runtime (the HTTP server,
// logging and the dskit service lifecycle) and remotewrite (the Prometheus
// remote-write 1.0 encoder and the payload joiner).
package platform
