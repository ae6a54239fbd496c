package config

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/grafana/dskit/flagext"
	"github.com/prometheus/common/model"
)

// Config is the whole Watershed configuration file.
type Config struct {
	Cluster          ClusterConfig          `yaml:"cluster"`
	Server           ServerConfig           `yaml:"server"`
	NATS             NATSConfig             `yaml:"nats"`
	ExternalServices ExternalServicesConfig `yaml:"externalServices"`
	Metrics          MetricsConfig          `yaml:"metrics"`
	Logs             LogsConfig             `yaml:"logs"`
	Traces           TracesConfig           `yaml:"traces"`
	Receivers        ReceiversConfig        `yaml:"receivers"`
}

// RegisterFlags registers every section's flags, with the defaults.
func (c *Config) RegisterFlags(f *flag.FlagSet) {
	c.Cluster.RegisterFlagsWithPrefix("cluster.", f)
	c.Server.RegisterFlagsWithPrefix("server.", f)
	c.NATS.RegisterFlagsWithPrefix("nats.", f)
	c.ExternalServices.RegisterFlagsWithPrefix("externalServices.", f)
	c.Metrics.RegisterFlagsWithPrefix("metrics.", f)
	c.Logs.RegisterFlagsWithPrefix("logs.", f)
	c.Traces.RegisterFlagsWithPrefix("traces.", f)
	c.Receivers.RegisterFlagsWithPrefix("receivers.", f)
}

// Validate checks every section. Errors are *FieldError values naming the key.
func (c *Config) Validate() error {
	return errors.Join(
		c.Cluster.Validate(),
		c.Server.Validate(),
		c.NATS.Validate(),
		c.ExternalServices.Validate(),
		c.Metrics.Validate(),
		c.Logs.Validate(),
		c.Receivers.Validate(),
	)
}

// FieldError is a validation error about one configuration key.
type FieldError struct {
	// Path is the key as written in the file, for example "metrics.staticTargets[0].job".
	Path string
	Err  error
	// Line is the file line of the key, 0 when the value did not come from the file.
	Line int
}

func (e *FieldError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("line %d: %s: %v", e.Line, e.Path, e.Err)
	}
	return fmt.Sprintf("%s: %v", e.Path, e.Err)
}

func (e *FieldError) Unwrap() error { return e.Err }

func fieldErr(path string, format string, args ...any) error {
	return &FieldError{Path: path, Err: fmt.Errorf(format, args...)}
}

// ClusterConfig names the cluster; it becomes the `cluster` label.
type ClusterConfig struct {
	Name string `yaml:"name"`
}

// RegisterFlagsWithPrefix registers the flags and defaults.
func (c *ClusterConfig) RegisterFlagsWithPrefix(prefix string, f *flag.FlagSet) {
	f.StringVar(&c.Name, prefix+"name", "", "Cluster name, added as the cluster label to everything collected.")
}

// Validate checks the section.
func (c *ClusterConfig) Validate() error {
	if strings.TrimSpace(c.Name) == "" {
		return fieldErr("cluster.name", "must not be empty")
	}
	return nil
}

// ServerConfig is the per-process HTTP server and process settings.
type ServerConfig struct {
	HTTPListenAddress string        `yaml:"httpListenAddress"`
	LogLevel          string        `yaml:"logLevel"`
	ShutdownTimeout   time.Duration `yaml:"shutdownTimeout"`
	GCPercent         int           `yaml:"gcPercent"`
}

// RegisterFlagsWithPrefix registers the flags and defaults.
func (c *ServerConfig) RegisterFlagsWithPrefix(prefix string, f *flag.FlagSet) {
	f.StringVar(&c.HTTPListenAddress, prefix+"httpListenAddress", "127.0.0.1:12345", "Address of the HTTP server (/metrics, /-/healthy, /-/ready, /debug/pprof).")
	f.StringVar(&c.LogLevel, prefix+"logLevel", "info", "Log level: debug, info, warn or error.")
	f.DurationVar(&c.ShutdownTimeout, prefix+"shutdownTimeout", 30*time.Second, "How long SIGTERM may take to flush in-flight work before the rest is cancelled and counted as dropped.")
	f.IntVar(&c.GCPercent, prefix+"gcPercent", 50, "Go garbage collector target (as GOGC, which wins when set): the heap may grow this many percent over the live data before a collection. Lower uses less memory and more CPU.")
}

// Validate checks the section.
func (c *ServerConfig) Validate() error {
	var errs []error
	if _, _, err := net.SplitHostPort(c.HTTPListenAddress); err != nil {
		errs = append(errs, fieldErr("server.httpListenAddress", "not host:port: %v", err))
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fieldErr("server.logLevel", "%q is not one of debug, info, warn, error", c.LogLevel))
	}
	if c.ShutdownTimeout <= 0 {
		errs = append(errs, fieldErr("server.shutdownTimeout", "must be positive"))
	}
	if c.GCPercent < 10 || c.GCPercent > 1000 {
		errs = append(errs, fieldErr("server.gcPercent", "%d is outside 10..1000", c.GCPercent))
	}
	return errors.Join(errs...)
}

// NATSConfig is the bus: an embedded JetStream server or an external one.
type NATSConfig struct {
	URL             string               `yaml:"url"`
	StoreDir        string               `yaml:"storeDir"`
	ListenAddress   string               `yaml:"listenAddress"`
	Partitions      int                  `yaml:"partitions"`
	MaxMessageBytes flagext.Bytes        `yaml:"maxMessageBytes"`
	MaxPending      int                  `yaml:"maxPending"`
	RawStream       StreamConfig         `yaml:"rawStream"`
	DuplicateWindow time.Duration        `yaml:"duplicateWindow"`
	Credentials     NATSCredential       `yaml:"credentials"`
	Groups          PartitionGroupConfig `yaml:"groups"`
}

// PartitionGroupConfig is how the replicas of the router and of each
// writer share the partitions of their stream.
type PartitionGroupConfig struct {
	Lease        time.Duration `yaml:"lease"`
	DrainTimeout time.Duration `yaml:"drainTimeout"`
}

// NATSCredential authenticates to an external NATS server.
type NATSCredential struct {
	User     string         `yaml:"user"`
	Password flagext.Secret `yaml:"password"`
}

// RegisterFlagsWithPrefix registers the flags and defaults.
func (c *NATSConfig) RegisterFlagsWithPrefix(prefix string, f *flag.FlagSet) {
	f.StringVar(&c.URL, prefix+"url", "", "NATS server or cluster URL. Empty starts an embedded JetStream server in this process.")
	f.StringVar(&c.StoreDir, prefix+"storeDir", "./data/nats", "JetStream file storage of the embedded server.")
	f.StringVar(&c.ListenAddress, prefix+"listenAddress", "127.0.0.1:4222", "Client address of the embedded server, for watershed subcommands and the nats CLI.")
	f.IntVar(&c.Partitions, prefix+"partitions", 16, "Partitions per stream; each series stays on one partition.")
	c.MaxMessageBytes = 1 << 20
	f.Var(&c.MaxMessageBytes, prefix+"maxMessageBytes", "Largest uncompressed payload of one bus message; larger scrapes are split.")
	f.IntVar(&c.MaxPending, prefix+"maxPending", 256, "Publishes in flight per process before publishers wait.")
	c.RawStream.registerFlags(prefix+"rawStream.", f, time.Hour, 1<<30)
	f.DurationVar(&c.DuplicateWindow, prefix+"duplicateWindow", 2*time.Minute, "Window in which a republished Nats-Msg-Id is stored once.")
	f.StringVar(&c.Credentials.User, prefix+"credentials.user", "", "User for an external NATS server.")
	f.Var(&c.Credentials.Password, prefix+"credentials.password", "Password for an external NATS server.")
	f.DurationVar(&c.Groups.Lease, prefix+"groups.lease", 6*time.Second, "How long the heartbeat and partition claims of a router or writer replica last unrenewed: a replica that dies hands its partitions to the others after this.")
	f.DurationVar(&c.Groups.DrainTimeout, prefix+"groups.drainTimeout", 10*time.Second, "How long a router or writer replica giving a partition up (rebalance or shutdown) may take to finish the work in hand; after it the work is cancelled and the next owner does it again.")
}

// Embedded reports whether this process runs its own JetStream server.
func (c *NATSConfig) Embedded() bool { return c.URL == "" }

// Validate checks the section.
func (c *NATSConfig) Validate() error {
	var errs []error
	if c.Embedded() {
		if c.StoreDir == "" {
			errs = append(errs, fieldErr("nats.storeDir", "must be set when nats.url is empty (embedded server)"))
		}
		if _, _, err := net.SplitHostPort(c.ListenAddress); err != nil {
			errs = append(errs, fieldErr("nats.listenAddress", "not host:port: %v", err))
		}
	} else {
		for _, u := range strings.Split(c.URL, ",") {
			if _, err := url.Parse(strings.TrimSpace(u)); err != nil {
				errs = append(errs, fieldErr("nats.url", "%v", err))
			}
		}
	}
	if c.Partitions < 1 || c.Partitions > 1024 {
		errs = append(errs, fieldErr("nats.partitions", "%d is outside 1..1024", c.Partitions))
	}
	if c.MaxMessageBytes < 64<<10 || c.MaxMessageBytes > 8<<20 {
		errs = append(errs, fieldErr("nats.maxMessageBytes", "%s is outside 64KiB..8MiB", c.MaxMessageBytes.String()))
	}
	if c.MaxPending < 1 {
		errs = append(errs, fieldErr("nats.maxPending", "must be at least 1"))
	}
	if c.DuplicateWindow <= 0 {
		errs = append(errs, fieldErr("nats.duplicateWindow", "must be positive"))
	}
	if c.Groups.Lease < time.Second || c.Groups.Lease > 5*time.Minute {
		errs = append(errs, fieldErr("nats.groups.lease", "%s is outside 1s..5m", c.Groups.Lease))
	}
	if c.Groups.DrainTimeout <= 0 {
		errs = append(errs, fieldErr("nats.groups.drainTimeout", "must be positive"))
	}
	errs = append(errs, c.RawStream.validate("nats.rawStream"))
	return errors.Join(errs...)
}

// Discard policies of a full stream.
const (
	DiscardDropOldest = "dropOldest"
	DiscardBlock      = "block"
)

// StreamConfig is the retention of one JetStream stream.
type StreamConfig struct {
	MaxAge   time.Duration `yaml:"maxAge"`
	MaxBytes flagext.Bytes `yaml:"maxBytes"`
	Replicas int           `yaml:"replicas"`
	Discard  string        `yaml:"discard"`
}

func (c *StreamConfig) registerFlags(prefix string, f *flag.FlagSet, maxAge time.Duration, maxBytes flagext.Bytes) {
	f.DurationVar(&c.MaxAge, prefix+"maxAge", maxAge, "Oldest message the stream keeps.")
	c.MaxBytes = maxBytes
	f.Var(&c.MaxBytes, prefix+"maxBytes", "Largest size of the stream on disk.")
	f.IntVar(&c.Replicas, prefix+"replicas", 1, "Stream replicas (3 on a 3-node JetStream cluster).")
	f.StringVar(&c.Discard, prefix+"discard", DiscardDropOldest, "When full: dropOldest removes the oldest messages, delivered or not (undelivered ones are counted as dropped); block never removes undelivered data: the raw stream refuses publishes so that collectors and receivers slow down, and routing to a destination waits while its undelivered data is at 90% of maxBytes (delivered messages make room).")
}

func (c *StreamConfig) validate(path string) error {
	var errs []error
	if c.MaxAge <= 0 {
		errs = append(errs, fieldErr(path+".maxAge", "must be positive"))
	}
	if c.MaxBytes < 1<<20 {
		errs = append(errs, fieldErr(path+".maxBytes", "%s is below 1MiB", c.MaxBytes.String()))
	}
	if c.Replicas != 1 && c.Replicas != 3 && c.Replicas != 5 {
		errs = append(errs, fieldErr(path+".replicas", "%d is not 1, 3 or 5", c.Replicas))
	}
	if c.Discard != DiscardDropOldest && c.Discard != DiscardBlock {
		errs = append(errs, fieldErr(path+".discard", "%q is not %s or %s", c.Discard, DiscardDropOldest, DiscardBlock))
	}
	return errors.Join(errs...)
}

// ExternalServicesConfig holds the backends, keyed as in k8s-monitoring.
type ExternalServicesConfig struct {
	Prometheus PrometheusConfig `yaml:"prometheus"`
	Loki       LokiConfig       `yaml:"loki"`
	Tempo      TempoConfig      `yaml:"tempo"`
}

// RegisterFlagsWithPrefix registers the flags and defaults.
func (c *ExternalServicesConfig) RegisterFlagsWithPrefix(prefix string, f *flag.FlagSet) {
	c.Prometheus.RegisterFlagsWithPrefix(prefix+"prometheus.", f)
	c.Loki.RegisterFlagsWithPrefix(prefix+"loki.", f)
	c.Tempo.RegisterFlagsWithPrefix(prefix+"tempo.", f)
}

// Validate checks the section.
func (c *ExternalServicesConfig) Validate() error {
	return errors.Join(c.Prometheus.Validate(), c.Loki.Validate(), c.Tempo.Validate())
}

// PrometheusConfig is the remote-write destination (Mimir, Prometheus, Grafana Cloud).
type PrometheusConfig struct {
	Backend `yaml:",inline"`
	Buffer  StreamConfig `yaml:"buffer"`
	Queue   QueueConfig  `yaml:"queue"`
}

// Backend is where a writer sends and how it authenticates: a bearer
// token or basic auth, not both.
type Backend struct {
	Host          string         `yaml:"host"`
	WriteEndpoint string         `yaml:"writeEndpoint"`
	TenantID      string         `yaml:"tenantId"`
	BearerToken   flagext.Secret `yaml:"bearerToken"`
	BasicAuth     BasicAuth      `yaml:"basicAuth"`
}

func (b *Backend) registerFlags(prefix string, f *flag.FlagSet, name, hostExample, path string) {
	f.StringVar(&b.Host, prefix+"host", "", "Base URL of "+name+", for example "+hostExample+".")
	f.StringVar(&b.WriteEndpoint, prefix+"writeEndpoint", path, "Path of the write endpoint, appended to host.")
	f.StringVar(&b.TenantID, prefix+"tenantId", "", "Tenant sent as X-Scope-OrgID; empty sends none.")
	f.Var(&b.BearerToken, prefix+"bearerToken", "Bearer token for "+name+".")
	f.StringVar(&b.BasicAuth.Username, prefix+"basicAuth.username", "", "Basic-auth user for "+name+".")
	f.Var(&b.BasicAuth.Password, prefix+"basicAuth.password", "Basic-auth password for "+name+".")
}

// URL is the full write URL.
func (b *Backend) URL() string {
	return strings.TrimSuffix(b.Host, "/") + b.WriteEndpoint
}

func (b *Backend) validate(path string, hostRequired bool) error {
	var errs []error
	if b.Host == "" {
		if hostRequired {
			errs = append(errs, fieldErr(path+".host", "must be set"))
		}
	} else if u, err := url.Parse(b.Host); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, fieldErr(path+".host", "%q is not an http(s) URL", b.Host))
	}
	if !strings.HasPrefix(b.WriteEndpoint, "/") {
		errs = append(errs, fieldErr(path+".writeEndpoint", "%q must start with /", b.WriteEndpoint))
	}
	if b.BearerToken.String() != "" && b.BasicAuth.Username != "" {
		errs = append(errs, fieldErr(path+".bearerToken", "set bearerToken or basicAuth, not both"))
	}
	return errors.Join(errs...)
}

// BasicAuth is HTTP basic authentication.
type BasicAuth struct {
	Username string         `yaml:"username"`
	Password flagext.Secret `yaml:"password"`
}

// QueueConfig shapes the writer's requests and retries.
type QueueConfig struct {
	MaxSamplesPerSend int           `yaml:"maxSamplesPerSend,omitempty"`
	MaxBytesPerSend   flagext.Bytes `yaml:"maxBytesPerSend,omitempty"`
	BatchSendDeadline time.Duration `yaml:"batchSendDeadline"`
	RemoteTimeout     time.Duration `yaml:"remoteTimeout"`
	MinBackoff        time.Duration `yaml:"minBackoff"`
	MaxBackoff        time.Duration `yaml:"maxBackoff"`
	AckWait           time.Duration `yaml:"ackWait"`
}

// RegisterFlagsWithPrefix registers the flags and defaults.
func (c *PrometheusConfig) RegisterFlagsWithPrefix(prefix string, f *flag.FlagSet) {
	c.Backend.registerFlags(prefix, f, "the remote-write backend", "http://mimir:8080", "/api/v1/push")
	c.Buffer.registerFlags(prefix+"buffer.", f, 24*time.Hour, 10<<30)
	f.IntVar(&c.Queue.MaxSamplesPerSend, prefix+"queue.maxSamplesPerSend", 2000, "Samples per remote-write request, at most (one scrape larger than this goes alone).")
	c.Queue.registerRetryFlags(prefix+"queue.", f)
}

// Validate checks the section.
func (c *PrometheusConfig) Validate() error {
	const p = "externalServices.prometheus"
	errs := []error{c.Backend.validate(p, true)}
	if c.Queue.MaxSamplesPerSend < 1 {
		errs = append(errs, fieldErr(p+".queue.maxSamplesPerSend", "must be at least 1"))
	}
	errs = append(errs, c.Queue.validateRetry(p+".queue"))
	errs = append(errs, c.Buffer.validate(p+".buffer"))
	return errors.Join(errs...)
}

// MetricsConfig is the metrics collection section.
type MetricsConfig struct {
	Enabled        bool           `yaml:"enabled"`
	ScrapeInterval time.Duration  `yaml:"scrapeInterval"`
	ScrapeTimeout  time.Duration  `yaml:"scrapeTimeout"`
	BodySizeLimit  flagext.Bytes  `yaml:"bodySizeLimit"`
	BatchLinger    time.Duration  `yaml:"batchLinger"`
	StaticTargets  []StaticTarget `yaml:"staticTargets"`

	AutoDiscover     AutoDiscoverConfig `yaml:"autoDiscover"`
	Kubelet          JobConfig          `yaml:"kubelet"`
	Cadvisor         JobConfig          `yaml:"cadvisor"`
	KubeStateMetrics JobConfig          `yaml:"kube-state-metrics"`
	NodeExporter     JobConfig          `yaml:"node-exporter"`
	Apiserver        JobConfig          `yaml:"apiserver"`
	ServiceMonitors  MonitorsConfig     `yaml:"serviceMonitors"`
	PodMonitors      MonitorsConfig     `yaml:"podMonitors"`
}

// StaticTarget is a scrape job with fixed targets, for local mode.
type StaticTarget struct {
	Job             string            `yaml:"job"`
	Targets         []string          `yaml:"targets"`
	Labels          map[string]string `yaml:"labels"`
	MetricsPath     string            `yaml:"metricsPath"`
	Scheme          string            `yaml:"scheme"`
	ScrapeInterval  time.Duration     `yaml:"scrapeInterval"`
	ScrapeTimeout   time.Duration     `yaml:"scrapeTimeout"`
	HonorLabels     bool              `yaml:"honorLabels"`
	ScrapeProtocols []string          `yaml:"scrapeProtocols"`
	SampleLimit     int               `yaml:"sampleLimit"`
	BearerToken     flagext.Secret    `yaml:"bearerToken"`
	BearerFile      string            `yaml:"bearerTokenFile"`
	TLS             TLSConfig         `yaml:"tls"`
}

// scrapeProtocols are the exposition formats a scrape may negotiate.
var scrapeProtocols = map[string]bool{
	"PrometheusProto": true, "OpenMetricsText1.0.0": true, "OpenMetricsText0.0.1": true,
	"PrometheusText1.0.0": true, "PrometheusText0.0.4": true,
}

// TLSConfig is the client TLS of a scrape.
type TLSConfig struct {
	CAFile             string `yaml:"caFile"`
	CertFile           string `yaml:"certFile"`
	KeyFile            string `yaml:"keyFile"`
	ServerName         string `yaml:"serverName"`
	InsecureSkipVerify bool   `yaml:"insecureSkipVerify"`
}

// RegisterFlagsWithPrefix registers the flags and defaults.
func (c *MetricsConfig) RegisterFlagsWithPrefix(prefix string, f *flag.FlagSet) {
	f.BoolVar(&c.Enabled, prefix+"enabled", true, "Collect metrics.")
	f.DurationVar(&c.ScrapeInterval, prefix+"scrapeInterval", 60*time.Second, "Default scrape interval.")
	f.DurationVar(&c.ScrapeTimeout, prefix+"scrapeTimeout", 10*time.Second, "Default scrape timeout (capped at the interval).")
	c.BodySizeLimit = 32 << 20
	f.Var(&c.BodySizeLimit, prefix+"bodySizeLimit", "Largest uncompressed scrape body; a larger one fails the scrape (up 0). 0 means no limit.")
	f.DurationVar(&c.BatchLinger, prefix+"batchLinger", 500*time.Millisecond, "How long a finished scrape waits for others of its bus partition to fill a bus message with it (up to nats.maxMessageBytes; a scrape may span two messages, and the writer cuts a message into requests of maxSamplesPerSend); 0 publishes every scrape alone.")
	c.AutoDiscover.RegisterFlagsWithPrefix(prefix+"autoDiscover.", f)
	c.Kubelet.registerFlags(prefix+"kubelet.", f, true)
	c.Cadvisor.registerFlags(prefix+"cadvisor.", f, true)
	c.KubeStateMetrics.registerFlags(prefix+"kube-state-metrics.", f, true)
	c.NodeExporter.registerFlags(prefix+"node-exporter.", f, true)
	c.Apiserver.registerFlags(prefix+"apiserver.", f, false)
	c.ServiceMonitors.registerFlags(prefix+"serviceMonitors.", f, true)
	c.PodMonitors.registerFlags(prefix+"podMonitors.", f, false)
}

// Validate checks the section.
func (c *MetricsConfig) Validate() error {
	var errs []error
	if c.ScrapeInterval <= 0 {
		errs = append(errs, fieldErr("metrics.scrapeInterval", "must be positive"))
	}
	if c.ScrapeTimeout <= 0 {
		errs = append(errs, fieldErr("metrics.scrapeTimeout", "must be positive"))
	}
	if c.BatchLinger < 0 || c.BatchLinger > 5*time.Second {
		errs = append(errs, fieldErr("metrics.batchLinger", "%s is outside 0s..5s", c.BatchLinger))
	}
	errs = append(errs, c.AutoDiscover.Validate(),
		c.Kubelet.validate("metrics.kubelet"), c.Cadvisor.validate("metrics.cadvisor"),
		c.KubeStateMetrics.validate("metrics.kube-state-metrics"), c.NodeExporter.validate("metrics.node-exporter"),
		c.Apiserver.validate("metrics.apiserver"))
	jobs := map[string]bool{}
	for i, t := range c.StaticTargets {
		p := fmt.Sprintf("metrics.staticTargets[%d]", i)
		errs = append(errs, t.validate(p))
		if jobs[t.Job] {
			errs = append(errs, fieldErr(p+".job", "%q is used by another static target", t.Job))
		}
		jobs[t.Job] = true
	}
	return errors.Join(errs...)
}

func (t *StaticTarget) validate(p string) error {
	var errs []error
	if t.Job == "" {
		errs = append(errs, fieldErr(p+".job", "must be set"))
	}
	if len(t.Targets) == 0 {
		errs = append(errs, fieldErr(p+".targets", "must list at least one host:port"))
	}
	for j, addr := range t.Targets {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			errs = append(errs, fieldErr(fmt.Sprintf("%s.targets[%d]", p, j), "%q is not host:port", addr))
		}
	}
	for name := range t.Labels {
		if !model.LabelName(name).IsValidLegacy() || strings.HasPrefix(name, "__") {
			errs = append(errs, fieldErr(p+".labels", "%q is not a valid label name", name))
		}
	}
	if t.Scheme != "" && t.Scheme != "http" && t.Scheme != "https" {
		errs = append(errs, fieldErr(p+".scheme", "%q is not http or https", t.Scheme))
	}
	if t.MetricsPath != "" && !strings.HasPrefix(t.MetricsPath, "/") {
		errs = append(errs, fieldErr(p+".metricsPath", "%q must start with /", t.MetricsPath))
	}
	if t.ScrapeInterval < 0 || t.ScrapeTimeout < 0 {
		errs = append(errs, fieldErr(p+".scrapeInterval", "durations must not be negative"))
	}
	for j, proto := range t.ScrapeProtocols {
		if !scrapeProtocols[proto] {
			errs = append(errs, fieldErr(fmt.Sprintf("%s.scrapeProtocols[%d]", p, j), "%q is not one of PrometheusProto, OpenMetricsText1.0.0, OpenMetricsText0.0.1, PrometheusText1.0.0, PrometheusText0.0.4", proto))
		}
	}
	if t.SampleLimit < 0 {
		errs = append(errs, fieldErr(p+".sampleLimit", "must not be negative"))
	}
	if t.BearerToken.String() != "" && t.BearerFile != "" {
		errs = append(errs, fieldErr(p+".bearerToken", "set bearerToken or bearerTokenFile, not both"))
	}
	return errors.Join(errs...)
}

// registerRetryFlags registers the batching and retry flags every writer has.
func (q *QueueConfig) registerRetryFlags(prefix string, f *flag.FlagSet) {
	f.DurationVar(&q.BatchSendDeadline, prefix+"batchSendDeadline", time.Second, "Longest a partial request waits for more data.")
	q.registerRetryOnlyFlags(prefix, f)
}

// registerRetryOnlyFlags registers the retry flags, for a writer whose
// batching is configured elsewhere (writer-tempo: receivers.processors.batch).
func (q *QueueConfig) registerRetryOnlyFlags(prefix string, f *flag.FlagSet) {
	f.DurationVar(&q.RemoteTimeout, prefix+"remoteTimeout", 30*time.Second, "Timeout of one request to the backend.")
	f.DurationVar(&q.MinBackoff, prefix+"minBackoff", 100*time.Millisecond, "First retry delay.")
	f.DurationVar(&q.MaxBackoff, prefix+"maxBackoff", 5*time.Second, "Longest retry delay (a longer Retry-After is honoured).")
	f.DurationVar(&q.AckWait, prefix+"ackWait", 30*time.Second, "How long the bus waits for an ack before redelivering.")
}

func (q *QueueConfig) validateRetry(path string) error {
	var errs []error
	for _, d := range []struct {
		name string
		d    time.Duration
	}{
		{"batchSendDeadline", q.BatchSendDeadline}, {"remoteTimeout", q.RemoteTimeout},
		{"minBackoff", q.MinBackoff}, {"maxBackoff", q.MaxBackoff}, {"ackWait", q.AckWait},
	} {
		if d.d <= 0 {
			errs = append(errs, fieldErr(path+"."+d.name, "must be positive"))
		}
	}
	if q.MaxBackoff < q.MinBackoff {
		errs = append(errs, fieldErr(path+".maxBackoff", "is below minBackoff"))
	}
	return errors.Join(errs...)
}
