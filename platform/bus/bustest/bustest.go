// Package bustest starts real embedded JetStream servers for tests: random
// port, storage in the test's temporary directory.
package bustest

import (
	"context"
	"log/slog"
	"testing"

	"github.com/watershed-dev/watershed/platform/bus"
	"github.com/watershed-dev/watershed/platform/config"
)

// NATSConfig is the default bus configuration with an embedded server on a
// random loopback port, storing under dir.
func NATSConfig(dir string) config.NATSConfig {
	cfg := config.Default().NATS
	cfg.StoreDir = dir
	cfg.ListenAddress = "127.0.0.1:-1"
	cfg.Partitions = 4
	return cfg
}

// Open starts an embedded JetStream server and connects to it; it is
// closed when the test ends.
func Open(t testing.TB, cfg config.NATSConfig) *bus.Bus {
	t.Helper()
	b, err := bus.Open(context.Background(), cfg, t.Name(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("open bus: %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// Shared starts an embedded JetStream server for several replicas and
// returns it with the configuration by which each replica connects to it
// on a connection of its own (see Connect), as separate processes do.
func Shared(t testing.TB, cfg config.NATSConfig) (server *bus.Bus, client config.NATSConfig) {
	t.Helper()
	server = Open(t, cfg)
	client = cfg
	client.URL = server.ClientURL()
	return server, client
}

// Connect opens a replica's own connection to a Shared server; it is
// closed when the test ends (or earlier, to simulate a crash).
func Connect(t testing.TB, client config.NATSConfig, name string) *bus.Bus {
	t.Helper()
	b, err := bus.Open(context.Background(), client, name, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("connect %s: %v", name, err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}
