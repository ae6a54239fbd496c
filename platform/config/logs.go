package config

import (
	"errors"
	"flag"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/grafana/dskit/flagext"
	"github.com/prometheus/common/model"
)

// LogsConfig is the logs section.
type LogsConfig struct {
	Enabled       bool                `yaml:"enabled"`
	PodLogs       PodLogsConfig       `yaml:"pod_logs"`
	Files         []LogFile           `yaml:"files"`
	Tail          TailConfig          `yaml:"tail"`
	Processing    LogProcessingConfig `yaml:"processing"`
	Journal       JournalConfig       `yaml:"journal"`
	ClusterEvents ClusterEventsConfig `yaml:"cluster_events"`
}

// PodLogsConfig selects the pod logs a node collector tails.
type PodLogsConfig struct {
	Enabled bool `yaml:"enabled"`
	// Discovery is "all" or "annotation" (only pods annotated
	// k8s.grafana.com/logs.autogather: "true").
	Discovery         string                 `yaml:"discovery"`
	GatherMethod      string                 `yaml:"gatherMethod"`
	Namespaces        flagext.StringSliceCSV `yaml:"namespaces"`
	ExcludeNamespaces flagext.StringSliceCSV `yaml:"excludeNamespaces"`
	// Directory is the kubelet's pod log directory, /var/log/pods.
	Directory string `yaml:"directory"`
}

// LogFile is one glob of files tailed in local mode.
type LogFile struct {
	Path   string            `yaml:"path"`
	Labels map[string]string `yaml:"labels"`
	// Format is raw (each line as it is), cri or docker.
	Format string `yaml:"format"`
}

// TailConfig is how files are tailed, for pod logs and logs.files alike.
type TailConfig struct {
	PollInterval       time.Duration `yaml:"pollInterval"`
	MaxLineSize        flagext.Bytes `yaml:"maxLineSize"`
	MaxPartialLines    int           `yaml:"maxPartialLines"`
	MaxBatchBytes      flagext.Bytes `yaml:"maxBatchBytes"`
	PositionsDirectory string        `yaml:"positionsDirectory"`
}

// JournalConfig is the node's systemd journal.
type JournalConfig struct {
	Enabled bool   `yaml:"enabled"`
	Path    string `yaml:"path"`
	// Units limits the journal to these units (journalctl -u); empty means all.
	Units flagext.StringSliceCSV `yaml:"units"`
	// MaxAge is how far back a first start reads.
	MaxAge time.Duration `yaml:"maxAge"`
	// Journalctl is the program that reads the journal files.
	Journalctl string `yaml:"journalctl"`
}

// ClusterEventsConfig turns Kubernetes Events into log lines.
type ClusterEventsConfig struct {
	Enabled    bool                   `yaml:"enabled"`
	LogFormat  string                 `yaml:"logFormat"`
	Namespaces flagext.StringSliceCSV `yaml:"namespaces"`
	Reasons    flagext.StringSliceCSV `yaml:"reasons"`
}

// Log file formats.
const (
	LogFormatRaw    = "raw"
	LogFormatCRI    = "cri"
	LogFormatDocker = "docker"
)

// RegisterFlagsWithPrefix registers the flags and defaults.
func (c *LogsConfig) RegisterFlagsWithPrefix(prefix string, f *flag.FlagSet) {
	f.BoolVar(&c.Enabled, prefix+"enabled", true, "Collect logs: pod logs and logs.files on every node collector, cluster events on discovery.")
	f.BoolVar(&c.PodLogs.Enabled, prefix+"pod_logs.enabled", true, "Tail the logs of the pods on each collector's node.")
	f.StringVar(&c.PodLogs.Discovery, prefix+"pod_logs.discovery", "all", `Which pods: "all", or "annotation" (only pods annotated k8s.grafana.com/logs.autogather: "true").`)
	f.StringVar(&c.PodLogs.GatherMethod, prefix+"pod_logs.gatherMethod", "volumes", `How: "volumes" reads the kubelet's files under pod_logs.directory.`)
	f.Var(&c.PodLogs.Namespaces, prefix+"pod_logs.namespaces", "Only pods of these namespaces (comma-separated); empty means all.")
	f.Var(&c.PodLogs.ExcludeNamespaces, prefix+"pod_logs.excludeNamespaces", "Never pods of these namespaces (comma-separated).")
	f.StringVar(&c.PodLogs.Directory, prefix+"pod_logs.directory", "/var/log/pods", "The kubelet's pod log directory: <namespace>_<pod>_<uid>/<container>/*.log.")
	f.DurationVar(&c.Tail.PollInterval, prefix+"tail.pollInterval", 250*time.Millisecond, "How often files are checked for new lines, new files and rotation.")
	c.Tail.MaxLineSize = 256 << 10
	f.Var(&c.Tail.MaxLineSize, prefix+"tail.maxLineSize", "Longer lines are truncated to this size and counted.")
	f.IntVar(&c.Tail.MaxPartialLines, prefix+"tail.maxPartialLines", 100, "Partial CRI or docker lines joined into one entry, at most.")
	c.Tail.MaxBatchBytes = 512 << 10
	f.Var(&c.Tail.MaxBatchBytes, prefix+"tail.maxBatchBytes", "Bytes of one file read into one bus message, at most.")
	f.StringVar(&c.Tail.PositionsDirectory, prefix+"tail.positionsDirectory", "data/positions", "Where positions (file identity and acknowledged offset) survive a restart; a hostPath in a cluster.")
	f.BoolVar(&c.Journal.Enabled, prefix+"journal.enabled", false, "Read the node's systemd journal (job integrations/kubernetes/journal).")
	f.StringVar(&c.Journal.Path, prefix+"journal.path", "/var/log/journal", "Directory of the journal files.")
	f.Var(&c.Journal.Units, prefix+"journal.units", "Only these units (comma-separated); empty means all.")
	f.DurationVar(&c.Journal.MaxAge, prefix+"journal.maxAge", 8*time.Hour, "How far back the first start reads; later starts go on from the acknowledged cursor.")
	f.StringVar(&c.Journal.Journalctl, prefix+"journal.journalctl", "journalctl", "The journalctl program that reads the journal files.")
	f.IntVar(&c.Processing.MaxLabels, prefix+"processing.maxLabels", 15, "Labels a stream may have after the processing stages (Loki's default limit is 15).")
	f.BoolVar(&c.ClusterEvents.Enabled, prefix+"cluster_events.enabled", true, "Turn Kubernetes Events into log lines (discovery's leader).")
	f.StringVar(&c.ClusterEvents.LogFormat, prefix+"cluster_events.logFormat", "logfmt", "Format of event log lines: logfmt or json.")
	f.Var(&c.ClusterEvents.Namespaces, prefix+"cluster_events.namespaces", "Only events of these namespaces (comma-separated); empty means all.")
	f.Var(&c.ClusterEvents.Reasons, prefix+"cluster_events.reasons", "Only events with these reasons (comma-separated); empty means all.")
}

// Validate checks the section.
func (c *LogsConfig) Validate() error {
	var errs []error
	switch c.ClusterEvents.LogFormat {
	case "logfmt", "json":
	default:
		errs = append(errs, fieldErr("logs.cluster_events.logFormat", "%q is not logfmt or json", c.ClusterEvents.LogFormat))
	}
	switch c.PodLogs.Discovery {
	case "all", "annotation":
	default:
		errs = append(errs, fieldErr("logs.pod_logs.discovery", "%q is not all or annotation", c.PodLogs.Discovery))
	}
	if c.PodLogs.GatherMethod != "volumes" {
		errs = append(errs, fieldErr("logs.pod_logs.gatherMethod", "%q is not supported (volumes is)", c.PodLogs.GatherMethod))
	}
	errs = append(errs, c.Tail.validate("logs.tail"), c.Processing.Validate())
	if c.Journal.Enabled && c.Journal.MaxAge <= 0 {
		errs = append(errs, fieldErr("logs.journal.maxAge", "must be positive"))
	}
	for i, lf := range c.Files {
		errs = append(errs, lf.validate(fmt.Sprintf("logs.files[%d]", i)))
	}
	return errors.Join(errs...)
}

func (t *TailConfig) validate(p string) error {
	var errs []error
	if t.PollInterval < 10*time.Millisecond || t.PollInterval > 10*time.Second {
		errs = append(errs, fieldErr(p+".pollInterval", "%s is not between 10ms and 10s", t.PollInterval))
	}
	if t.MaxLineSize < 1<<10 {
		errs = append(errs, fieldErr(p+".maxLineSize", "%s is below 1KiB", t.MaxLineSize.String()))
	}
	if t.MaxPartialLines < 1 {
		errs = append(errs, fieldErr(p+".maxPartialLines", "must be at least 1"))
	}
	if t.MaxBatchBytes < 4<<10 || t.MaxBatchBytes > 4<<20 {
		errs = append(errs, fieldErr(p+".maxBatchBytes", "%s is not between 4KiB and 4MiB", t.MaxBatchBytes.String()))
	}
	if t.PositionsDirectory == "" {
		errs = append(errs, fieldErr(p+".positionsDirectory", "must be set"))
	}
	return errors.Join(errs...)
}

func (lf *LogFile) validate(p string) error {
	var errs []error
	if lf.Path == "" {
		errs = append(errs, fieldErr(p+".path", "must be set"))
	} else if _, err := filepath.Match(lf.Path, ""); err != nil {
		errs = append(errs, fieldErr(p+".path", "%q is not a valid glob: %v", lf.Path, err))
	}
	switch lf.Format {
	case "", LogFormatRaw, LogFormatCRI, LogFormatDocker:
	default:
		errs = append(errs, fieldErr(p+".format", "%q is not raw, cri or docker", lf.Format))
	}
	for name := range lf.Labels {
		if !model.LabelName(name).IsValidLegacy() || strings.HasPrefix(name, "__") {
			errs = append(errs, fieldErr(p+".labels", "%q is not a valid label name", name))
		}
	}
	return errors.Join(errs...)
}

// LokiConfig is the log destination.
type LokiConfig struct {
	Backend `yaml:",inline"`
	// TenantFromLabel names a stream label whose value is the tenant of
	// the stream (through TenantMapping when that has it); streams without
	// the label get tenantId.
	TenantFromLabel string            `yaml:"tenantFromLabel"`
	TenantMapping   map[string]string `yaml:"tenantMapping"`
	Buffer          StreamConfig      `yaml:"buffer"`
	Queue           QueueConfig       `yaml:"queue"`
}

// RegisterFlagsWithPrefix registers the flags and defaults.
func (c *LokiConfig) RegisterFlagsWithPrefix(prefix string, f *flag.FlagSet) {
	// Without a host, logs wait in the WS_DEST_LOKI buffer.
	c.Backend.registerFlags(prefix, f, "Loki", "http://loki:3100", "/loki/api/v1/push")
	c.Buffer.registerFlags(prefix+"buffer.", f, 24*time.Hour, 10<<30)
	f.StringVar(&c.TenantFromLabel, prefix+"tenantFromLabel", "", "Stream label whose value (mapped through tenantMapping when listed there) is the stream's tenant; without the label, tenantId.")
	c.Queue.MaxBytesPerSend = 1 << 20
	f.Var(&c.Queue.MaxBytesPerSend, prefix+"queue.maxBytesPerSend", "Uncompressed bytes per push request, at most (one larger message goes alone).")
	c.Queue.registerRetryFlags(prefix+"queue.", f)
}

// Validate checks the section.
func (c *LokiConfig) Validate() error {
	const p = "externalServices.loki"
	errs := []error{c.Backend.validate(p, false)}
	if len(c.TenantMapping) > 0 && c.TenantFromLabel == "" {
		errs = append(errs, fieldErr(p+".tenantMapping", "needs tenantFromLabel"))
	}
	if c.Queue.MaxBytesPerSend < 1<<10 {
		errs = append(errs, fieldErr(p+".queue.maxBytesPerSend", "%s is below 1KiB", c.Queue.MaxBytesPerSend.String()))
	}
	errs = append(errs, c.Buffer.validate(p+".buffer"), c.Queue.validateRetry(p+".queue"))
	return errors.Join(errs...)
}
