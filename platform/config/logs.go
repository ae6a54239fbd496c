package config

import (
	"errors"
	"flag"
	"time"

	"github.com/grafana/dskit/flagext"
)

// LogsConfig is the logs section.
type LogsConfig struct {
	Enabled       bool                `yaml:"enabled"`
	ClusterEvents ClusterEventsConfig `yaml:"cluster_events"`
}

// ClusterEventsConfig turns Kubernetes Events into log lines.
type ClusterEventsConfig struct {
	Enabled    bool                   `yaml:"enabled"`
	LogFormat  string                 `yaml:"logFormat"`
	Namespaces flagext.StringSliceCSV `yaml:"namespaces"`
	Reasons    flagext.StringSliceCSV `yaml:"reasons"`
}

// RegisterFlagsWithPrefix registers the flags and defaults.
func (c *LogsConfig) RegisterFlagsWithPrefix(prefix string, f *flag.FlagSet) {
	f.BoolVar(&c.Enabled, prefix+"enabled", false, "Collect logs (cluster events today; pod and node logs come with writer-loki).")
	f.BoolVar(&c.ClusterEvents.Enabled, prefix+"cluster_events.enabled", true, "Turn Kubernetes Events into log lines (discovery's leader).")
	f.StringVar(&c.ClusterEvents.LogFormat, prefix+"cluster_events.logFormat", "logfmt", "Format of event log lines: logfmt or json.")
	f.Var(&c.ClusterEvents.Namespaces, prefix+"cluster_events.namespaces", "Only events of these namespaces (comma-separated); empty means all.")
	f.Var(&c.ClusterEvents.Reasons, prefix+"cluster_events.reasons", "Only events with these reasons (comma-separated); empty means all.")
}

// Validate checks the section.
func (c *LogsConfig) Validate() error {
	switch c.ClusterEvents.LogFormat {
	case "logfmt", "json":
		return nil
	}
	return fieldErr("logs.cluster_events.logFormat", "%q is not logfmt or json", c.ClusterEvents.LogFormat)
}

// LokiConfig is the log destination.
type LokiConfig struct {
	Backend `yaml:",inline"`
	Buffer  StreamConfig `yaml:"buffer"`
	Queue   QueueConfig  `yaml:"queue"`
}

// RegisterFlagsWithPrefix registers the flags and defaults.
func (c *LokiConfig) RegisterFlagsWithPrefix(prefix string, f *flag.FlagSet) {
	// Without a host, logs wait in the WS_DEST_LOKI buffer.
	c.Backend.registerFlags(prefix, f, "Loki", "http://loki:3100", "/loki/api/v1/push")
	c.Buffer.registerFlags(prefix+"buffer.", f, 24*time.Hour, 10<<30)
	c.Queue.MaxBytesPerSend = 1 << 20
	f.Var(&c.Queue.MaxBytesPerSend, prefix+"queue.maxBytesPerSend", "Uncompressed bytes per push request, at most (one larger message goes alone).")
	c.Queue.registerRetryFlags(prefix+"queue.", f)
}

// Validate checks the section.
func (c *LokiConfig) Validate() error {
	const p = "externalServices.loki"
	errs := []error{c.Backend.validate(p, false)}
	if c.Queue.MaxBytesPerSend < 1<<10 {
		errs = append(errs, fieldErr(p+".queue.maxBytesPerSend", "%s is below 1KiB", c.Queue.MaxBytesPerSend.String()))
	}
	errs = append(errs, c.Buffer.validate(p+".buffer"), c.Queue.validateRetry(p+".queue"))
	return errors.Join(errs...)
}
