package config

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/grafana/dskit/flagext"
)

// TracesConfig is the traces section: whether spans received by the
// router's receivers go to Tempo.
type TracesConfig struct {
	Enabled bool `yaml:"enabled"`
}

// RegisterFlagsWithPrefix registers the flags and defaults.
func (c *TracesConfig) RegisterFlagsWithPrefix(prefix string, f *flag.FlagSet) {
	f.BoolVar(&c.Enabled, prefix+"enabled", false, "Receive spans (OTLP, Zipkin, Jaeger) and deliver them to externalServices.tempo.")
}

// ReceiversConfig is the router's ingest gateway: the protocols
// applications send to, as the k8s-monitoring chart's receivers section
// names them.
type ReceiversConfig struct {
	// ListenHost is the address every receiver binds, with its own port.
	ListenHost string               `yaml:"listenHost"`
	GRPC       ReceiverPort         `yaml:"grpc"`
	HTTP       ReceiverPort         `yaml:"http"`
	Zipkin     ReceiverPort         `yaml:"zipkin"`
	Jaeger     JaegerReceiverConfig `yaml:"jaeger"`
	Processors ProcessorsConfig     `yaml:"processors"`
	Limits     ReceiverLimits       `yaml:"limits"`
}

// ReceiverPort switches one receiver and names its port.
type ReceiverPort struct {
	Enabled bool `yaml:"enabled"`
	Port    int  `yaml:"port"`
}

// JaegerReceiverConfig holds the Jaeger collector protocols.
type JaegerReceiverConfig struct {
	GRPC       ReceiverPort `yaml:"grpc"`
	ThriftHTTP ReceiverPort `yaml:"thriftHttp"`
}

// ProcessorsConfig shapes what the receivers take in and what
// writer-tempo sends, as the chart's receivers.processors does.
type ProcessorsConfig struct {
	Batch         BatchConfig         `yaml:"batch"`
	MemoryLimiter MemoryLimiterConfig `yaml:"memoryLimiter"`
	K8sAttributes K8sAttributesConfig `yaml:"k8sattributes"`
}

// BatchConfig is how many spans writer-tempo joins into one export, and
// how long a partial batch waits.
type BatchConfig struct {
	Size    int           `yaml:"size"`
	MaxSize int           `yaml:"maxSize"`
	Timeout time.Duration `yaml:"timeout"`
}

// MemoryLimiterConfig makes receivers refuse with the protocol's retryable
// answer while the process's heap is above Limit.
type MemoryLimiterConfig struct {
	Enabled       bool          `yaml:"enabled"`
	CheckInterval time.Duration `yaml:"checkInterval"`
	Limit         flagext.Bytes `yaml:"limit"`
}

// K8sAttributesConfig names the Kubernetes resource attributes added to
// received telemetry.
type K8sAttributesConfig struct {
	Metadata flagext.StringSliceCSV `yaml:"metadata"`
}

// ReceiverLimits bound what one request may hold.
type ReceiverLimits struct {
	// MaxRequestSize bounds the body as sent (compressed or not).
	MaxRequestSize flagext.Bytes `yaml:"maxRequestSize"`
	// MaxDecompressedSize bounds the body once decompressed: a gzip bomb
	// stops here.
	MaxDecompressedSize flagext.Bytes `yaml:"maxDecompressedSize"`
	// MaxAttributes bounds the attributes of one resource, span, event,
	// link, log record or data point.
	MaxAttributes int `yaml:"maxAttributes"`
}

// K8sAttributeNames are the attributes the k8sattributes processor can add.
var K8sAttributeNames = []string{
	"k8s.namespace.name", "k8s.pod.name", "k8s.pod.uid", "k8s.node.name",
	"k8s.deployment.name", "k8s.replicaset.name", "k8s.statefulset.name", "k8s.daemonset.name",
	"k8s.cronjob.name", "k8s.job.name", "k8s.container.name", "k8s.cluster.name",
}

// RegisterFlagsWithPrefix registers the flags and defaults.
func (c *ReceiversConfig) RegisterFlagsWithPrefix(prefix string, f *flag.FlagSet) {
	f.StringVar(&c.ListenHost, prefix+"listenHost", "127.0.0.1", "Address the receivers listen on (0.0.0.0 in a cluster), each on its own port.")
	c.GRPC.registerFlags(prefix+"grpc.", f, "OTLP gRPC (traces, metrics, logs)", true, 4317)
	c.HTTP.registerFlags(prefix+"http.", f, "OTLP HTTP (/v1/traces, /v1/metrics, /v1/logs)", true, 4318)
	c.Zipkin.registerFlags(prefix+"zipkin.", f, "Zipkin v2 JSON and protobuf (/api/v2/spans)", true, 9411)
	c.Jaeger.GRPC.registerFlags(prefix+"jaeger.grpc.", f, "Jaeger gRPC (api_v2)", false, 14250)
	c.Jaeger.ThriftHTTP.registerFlags(prefix+"jaeger.thriftHttp.", f, "Jaeger Thrift over HTTP (/api/traces)", false, 14268)
	p := prefix + "processors."
	f.IntVar(&c.Processors.Batch.Size, p+"batch.size", 16384, "Spans writer-tempo joins into one export before sending it.")
	f.IntVar(&c.Processors.Batch.MaxSize, p+"batch.maxSize", 0, "Most spans in one export (0: batch.size); a single larger request still goes alone.")
	f.DurationVar(&c.Processors.Batch.Timeout, p+"batch.timeout", 2*time.Second, "Longest a partial batch of spans waits before it is sent.")
	f.BoolVar(&c.Processors.MemoryLimiter.Enabled, p+"memoryLimiter.enabled", false, "Refuse received data with the protocol's retryable answer while the heap is above memoryLimiter.limit.")
	f.DurationVar(&c.Processors.MemoryLimiter.CheckInterval, p+"memoryLimiter.checkInterval", time.Second, "How often the heap is measured.")
	f.Var(&c.Processors.MemoryLimiter.Limit, p+"memoryLimiter.limit", "Heap size above which receivers refuse data (0: the memory limit of the Go runtime, GOMEMLIMIT, if set).")
	c.Processors.K8sAttributes.Metadata = slices.Clone(K8sAttributeNames)
	f.Var(&c.Processors.K8sAttributes.Metadata, p+"k8sattributes.metadata", "Kubernetes attributes added to received telemetry, from the sender's pod (comma-separated).")
	c.Limits.MaxRequestSize = 20 << 20
	f.Var(&c.Limits.MaxRequestSize, prefix+"limits.maxRequestSize", "Largest HTTP request body as sent; a larger one is refused with 413. gRPC messages are bounded by maxDecompressedSize alone (RESOURCE_EXHAUSTED).")
	c.Limits.MaxDecompressedSize = 64 << 20
	f.Var(&c.Limits.MaxDecompressedSize, prefix+"limits.maxDecompressedSize", "Largest request body after decompression; a larger one is refused as invalid.")
	f.IntVar(&c.Limits.MaxAttributes, prefix+"limits.maxAttributes", 128, "Most attributes on one resource, span, event, link, log record or data point; a request with more is refused as invalid.")
}

func (c *ReceiverPort) registerFlags(prefix string, f *flag.FlagSet, what string, enabled bool, port int) {
	f.BoolVar(&c.Enabled, prefix+"enabled", enabled, "Receive "+what+".")
	f.IntVar(&c.Port, prefix+"port", port, "Port of the "+what+" receiver.")
}

// Enabled lists the receivers that are on, by the key that names them.
func (c *ReceiversConfig) Enabled() map[string]ReceiverPort {
	all := map[string]ReceiverPort{
		"grpc": c.GRPC, "http": c.HTTP, "zipkin": c.Zipkin,
		"jaeger.grpc": c.Jaeger.GRPC, "jaeger.thriftHttp": c.Jaeger.ThriftHTTP,
	}
	for k, r := range all {
		if !r.Enabled {
			delete(all, k)
		}
	}
	return all
}

// Address is host:port of a receiver.
func (c *ReceiversConfig) Address(r ReceiverPort) string {
	return net.JoinHostPort(c.ListenHost, fmt.Sprint(r.Port))
}

// Validate checks the section.
func (c *ReceiversConfig) Validate() error {
	const p = "receivers"
	var errs []error
	if net.ParseIP(c.ListenHost) == nil && c.ListenHost != "localhost" {
		errs = append(errs, fieldErr(p+".listenHost", "%q is not an IP address", c.ListenHost))
	}
	ports := map[int]string{}
	for name, r := range c.Enabled() {
		if r.Port < 1 || r.Port > 65535 {
			errs = append(errs, fieldErr(p+"."+name+".port", "%d is outside 1..65535", r.Port))
		}
		if other, ok := ports[r.Port]; ok {
			a, b := min(name, other), max(name, other)
			errs = append(errs, fieldErr(p+"."+b+".port", "%d is also the port of receivers.%s", r.Port, a))
		}
		ports[r.Port] = name
	}
	pp := p + ".processors"
	b := c.Processors.Batch
	if b.Size < 1 {
		errs = append(errs, fieldErr(pp+".batch.size", "must be at least 1"))
	}
	if b.MaxSize != 0 && b.MaxSize < b.Size {
		errs = append(errs, fieldErr(pp+".batch.maxSize", "%d is below batch.size %d (0 means batch.size)", b.MaxSize, b.Size))
	}
	if b.Timeout <= 0 {
		errs = append(errs, fieldErr(pp+".batch.timeout", "must be positive"))
	}
	if c.Processors.MemoryLimiter.Enabled && c.Processors.MemoryLimiter.CheckInterval <= 0 {
		errs = append(errs, fieldErr(pp+".memoryLimiter.checkInterval", "must be positive"))
	}
	for i, m := range c.Processors.K8sAttributes.Metadata {
		if !slices.Contains(K8sAttributeNames, m) {
			errs = append(errs, fieldErr(fmt.Sprintf("%s.k8sattributes.metadata[%d]", pp, i), "%q is not one of %s", m, strings.Join(K8sAttributeNames, ", ")))
		}
	}
	l := c.Limits
	if l.MaxRequestSize < 1<<10 {
		errs = append(errs, fieldErr(p+".limits.maxRequestSize", "%s is below 1KiB", l.MaxRequestSize.String()))
	}
	if l.MaxDecompressedSize < l.MaxRequestSize {
		errs = append(errs, fieldErr(p+".limits.maxDecompressedSize", "%s is below limits.maxRequestSize %s", l.MaxDecompressedSize.String(), l.MaxRequestSize.String()))
	}
	if l.MaxAttributes < 1 {
		errs = append(errs, fieldErr(p+".limits.maxAttributes", "must be at least 1"))
	}
	return errors.Join(errs...)
}

// Tempo export protocols.
const (
	TempoProtocolOTLP     = "otlp"
	TempoProtocolOTLPHTTP = "otlphttp"
)

// TempoConfig is the trace destination: Tempo's OTLP receiver.
type TempoConfig struct {
	// Host is host:port for OTLP gRPC (a http:// or https:// prefix says
	// whether to use TLS), or the base URL for OTLP HTTP.
	Host     string `yaml:"host"`
	Protocol string `yaml:"protocol"`
	// WriteEndpoint is the OTLP HTTP path, appended to host.
	WriteEndpoint string `yaml:"writeEndpoint"`
	TenantID      string `yaml:"tenantId"`
	// TenantFromAttribute names a resource attribute whose value (through
	// TenantMapping when that has it) is the spans' tenant.
	TenantFromAttribute string            `yaml:"tenantFromAttribute"`
	TenantMapping       map[string]string `yaml:"tenantMapping"`
	BearerToken         flagext.Secret    `yaml:"bearerToken"`
	BasicAuth           BasicAuth         `yaml:"basicAuth"`
	Compression         string            `yaml:"compression"`
	TLS                 ClientTLSConfig   `yaml:"tls"`
	Buffer              StreamConfig      `yaml:"buffer"`
	Queue               QueueConfig       `yaml:"queue"`
}

// ClientTLSConfig is a writer's TLS to its backend.
type ClientTLSConfig struct {
	// Insecure sends in plain text (gRPC without TLS).
	Insecure           bool   `yaml:"insecure"`
	InsecureSkipVerify bool   `yaml:"insecureSkipVerify"`
	CAFile             string `yaml:"caFile"`
	CertFile           string `yaml:"certFile"`
	KeyFile            string `yaml:"keyFile"`
	ServerName         string `yaml:"serverName"`
}

// RegisterFlagsWithPrefix registers the flags and defaults.
func (c *TempoConfig) RegisterFlagsWithPrefix(prefix string, f *flag.FlagSet) {
	f.StringVar(&c.Host, prefix+"host", "", "Tempo's OTLP receiver: host:port for protocol otlp (http:// forces plain text, https:// TLS), a base URL for otlphttp.")
	f.StringVar(&c.Protocol, prefix+"protocol", TempoProtocolOTLP, "otlp (OTLP gRPC) or otlphttp (OTLP HTTP protobuf).")
	f.StringVar(&c.WriteEndpoint, prefix+"writeEndpoint", "/v1/traces", "OTLP HTTP path, appended to host (protocol otlphttp).")
	f.StringVar(&c.TenantID, prefix+"tenantId", "", "Tenant sent as X-Scope-OrgID; empty sends none.")
	f.StringVar(&c.TenantFromAttribute, prefix+"tenantFromAttribute", "", "Resource attribute whose value (mapped through tenantMapping when listed there) is the tenant of the resource's spans; without it, tenantId.")
	f.Var(&c.BearerToken, prefix+"bearerToken", "Bearer token for Tempo.")
	f.StringVar(&c.BasicAuth.Username, prefix+"basicAuth.username", "", "Basic-auth user for Tempo.")
	f.Var(&c.BasicAuth.Password, prefix+"basicAuth.password", "Basic-auth password for Tempo.")
	f.StringVar(&c.Compression, prefix+"compression", "gzip", "Compression of export requests: gzip or none.")
	f.BoolVar(&c.TLS.Insecure, prefix+"tls.insecure", false, "Plain text instead of TLS (a http:// host implies it).")
	f.BoolVar(&c.TLS.InsecureSkipVerify, prefix+"tls.insecureSkipVerify", false, "Do not verify Tempo's certificate.")
	f.StringVar(&c.TLS.CAFile, prefix+"tls.caFile", "", "CA certificate file that signs Tempo's certificate.")
	f.StringVar(&c.TLS.CertFile, prefix+"tls.certFile", "", "Client certificate file (mutual TLS).")
	f.StringVar(&c.TLS.KeyFile, prefix+"tls.keyFile", "", "Client key file (mutual TLS).")
	f.StringVar(&c.TLS.ServerName, prefix+"tls.serverName", "", "Name to verify Tempo's certificate against, when not the host's.")
	c.Buffer.registerFlags(prefix+"buffer.", f, 24*time.Hour, 10<<30)
	// Batches follow receivers.processors.batch, as in the chart.
	c.Queue.registerRetryOnlyFlags(prefix+"queue.", f)
	c.Queue.BatchSendDeadline = time.Second
}

// Plaintext reports whether the gRPC export goes without TLS.
func (c *TempoConfig) Plaintext() bool {
	return c.TLS.Insecure || strings.HasPrefix(c.Host, "http://")
}

// GRPCTarget is host:port for the gRPC client, without any scheme.
func (c *TempoConfig) GRPCTarget() string {
	return strings.TrimPrefix(strings.TrimPrefix(c.Host, "http://"), "https://")
}

// URL is the OTLP HTTP export URL.
func (c *TempoConfig) URL() string {
	return strings.TrimSuffix(c.Host, "/") + c.WriteEndpoint
}

// Validate checks the section.
func (c *TempoConfig) Validate() error {
	const p = "externalServices.tempo"
	var errs []error
	switch c.Protocol {
	case TempoProtocolOTLP:
		if c.Host != "" {
			if _, _, err := net.SplitHostPort(strings.TrimSuffix(c.GRPCTarget(), "/")); err != nil {
				errs = append(errs, fieldErr(p+".host", "%q is not host:port (protocol otlp): %v", c.Host, err))
			}
		}
	case TempoProtocolOTLPHTTP:
		if c.Host != "" {
			if u, err := url.Parse(c.Host); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				errs = append(errs, fieldErr(p+".host", "%q is not an http(s) URL (protocol otlphttp)", c.Host))
			}
		}
		if !strings.HasPrefix(c.WriteEndpoint, "/") {
			errs = append(errs, fieldErr(p+".writeEndpoint", "%q must start with /", c.WriteEndpoint))
		}
	default:
		errs = append(errs, fieldErr(p+".protocol", "%q is not %s or %s", c.Protocol, TempoProtocolOTLP, TempoProtocolOTLPHTTP))
	}
	if c.Compression != "gzip" && c.Compression != "none" {
		errs = append(errs, fieldErr(p+".compression", "%q is not gzip or none", c.Compression))
	}
	if c.BearerToken.String() != "" && c.BasicAuth.Username != "" {
		errs = append(errs, fieldErr(p+".bearerToken", "set bearerToken or basicAuth, not both"))
	}
	if len(c.TenantMapping) > 0 && c.TenantFromAttribute == "" {
		errs = append(errs, fieldErr(p+".tenantMapping", "needs tenantFromAttribute"))
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		errs = append(errs, fieldErr(p+".tls.certFile", "certFile and keyFile go together"))
	}
	errs = append(errs, c.Buffer.validate(p+".buffer"), c.Queue.validateRetry(p+".queue"))
	return errors.Join(errs...)
}
