package app

import (
	"io"
	"log/slog"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/watershed-dev/watershed/platform/config"
	"github.com/watershed-dev/watershed/platform/runtime"
)

// TestWritersRunForTheirSignals: a writer runs only where its signal is on
// and has a backend, so a process of some signals holds no idle consumers
// of the others.
func TestWritersRunForTheirSignals(t *testing.T) {
	for _, c := range []struct {
		name    string
		target  string
		edit    func(*config.Config)
		running bool
	}{
		{name: "mimir with metrics on", target: "writer-mimir", running: true},
		{name: "mimir with metrics off", target: "writer-mimir", edit: func(c *config.Config) { c.Metrics.Enabled = false }},
		{name: "loki with logs on", target: "writer-loki", running: true},
		{name: "loki with logs off", target: "writer-loki", edit: func(c *config.Config) { c.Logs.Enabled = false }},
		{name: "loki without a host", target: "writer-loki", edit: func(c *config.Config) { c.ExternalServices.Loki.Host = "" }},
		{name: "tempo with traces on", target: "writer-tempo", running: true},
		{name: "tempo with traces off", target: "writer-tempo", edit: func(c *config.Config) { c.Traces.Enabled = false }},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := config.Default()
			cfg.Cluster.Name = "test"
			cfg.ExternalServices.Prometheus.Host = "http://127.0.0.1:9090"
			cfg.ExternalServices.Loki.Host = "http://127.0.0.1:3100"
			cfg.ExternalServices.Tempo.Host = "http://127.0.0.1:4317"
			cfg.Metrics.Enabled, cfg.Logs.Enabled, cfg.Traces.Enabled = true, true, true
			if c.edit != nil {
				c.edit(cfg)
			}
			env := &runtime.Env{Config: cfg, Registry: prometheus.NewRegistry(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
			groups, err := Build([]string{c.target})(env)
			if err != nil {
				t.Fatal(err)
			}
			if got := len(groups) == 1; got != c.running {
				t.Errorf("%s runs: %v, want %v (%d groups)", c.target, got, c.running, len(groups))
			}
		})
	}
}
