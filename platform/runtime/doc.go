// Package runtime is what every Watershed process shares around its
// services: JSON logging with log/slog, the one HTTP server per process
// (/metrics, /-/healthy, /-/ready, /debug/pprof and the services' own
// endpoints), and running a set of dskit services until a signal, with a
// bounded shutdown.
package runtime
