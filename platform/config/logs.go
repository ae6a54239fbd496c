package config

import (
	"errors"
	"flag"
	"net/url"
	"strings"
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
	Host          string `yaml:"host"`
	WriteEndpoint string `yaml:"writeEndpoint"`
	TenantID      string `yaml:"tenantId"`
	HTTPAuth      `yaml:",inline"`
	Buffer        StreamConfig `yaml:"buffer"`
	Queue         QueueConfig  `yaml:"queue"`
}

// URL is the full push URL.
func (c *LokiConfig) URL() string {
	return strings.TrimSuffix(c.Host, "/") + c.WriteEndpoint
}

// RegisterFlagsWithPrefix registers the flags and defaults.
func (c *LokiConfig) RegisterFlagsWithPrefix(prefix string, f *flag.FlagSet) {
	f.StringVar(&c.Host, prefix+"host", "", "Base URL of the Loki push endpoint, for example http://loki:3100. Until writer-loki runs, logs wait in the WS_DEST_LOKI buffer.")
	f.StringVar(&c.WriteEndpoint, prefix+"writeEndpoint", "/loki/api/v1/push", "Path of the push endpoint, appended to host.")
	f.StringVar(&c.TenantID, prefix+"tenantId", "", "Tenant sent as X-Scope-OrgID; empty sends none.")
	c.HTTPAuth.registerFlags(prefix, f, "Loki")
	c.Buffer.registerFlags(prefix+"buffer.", f, 24*time.Hour, 10<<30)
	c.Queue.MaxBytesPerSend = 1 << 20
	f.Var(&c.Queue.MaxBytesPerSend, prefix+"queue.maxBytesPerSend", "Uncompressed bytes per push request, at most (one larger message goes alone).")
	c.Queue.registerRetryFlags(prefix+"queue.", f)
}

// Validate checks the section.
func (c *LokiConfig) Validate() error {
	const p = "externalServices.loki"
	var errs []error
	if c.Host != "" {
		if u, err := url.Parse(c.Host); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fieldErr(p+".host", "%q is not an http(s) URL", c.Host))
		}
	}
	if !strings.HasPrefix(c.WriteEndpoint, "/") {
		errs = append(errs, fieldErr(p+".writeEndpoint", "%q must start with /", c.WriteEndpoint))
	}
	if c.Queue.MaxBytesPerSend < 1<<10 {
		errs = append(errs, fieldErr(p+".queue.maxBytesPerSend", "%s is below 1KiB", c.Queue.MaxBytesPerSend.String()))
	}
	errs = append(errs, c.HTTPAuth.validate(p), c.Buffer.validate(p+".buffer"), c.Queue.validateRetry(p+".queue"))
	return errors.Join(errs...)
}
