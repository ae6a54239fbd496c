package config

import (
	"errors"
	"flag"
	"fmt"
	"regexp"
	"time"

	"github.com/grafana/dskit/flagext"
)

// AutoDiscoverConfig is annotation-based discovery of Pods and Services.
type AutoDiscoverConfig struct {
	Enabled           bool                    `yaml:"enabled"`
	Annotations       AutoDiscoverAnnotations `yaml:"annotations"`
	Namespaces        flagext.StringSliceCSV  `yaml:"namespaces"`
	ExcludeNamespaces flagext.StringSliceCSV  `yaml:"excludeNamespaces"`
	LabelSelector     string                  `yaml:"labelSelector"`
}

// AutoDiscoverAnnotations names the annotations read on Pods and Services.
type AutoDiscoverAnnotations struct {
	Scrape                string `yaml:"scrape"`
	Job                   string `yaml:"job"`
	Instance              string `yaml:"instance"`
	MetricsContainer      string `yaml:"metricsContainer"`
	MetricsPath           string `yaml:"metricsPath"`
	MetricsPortName       string `yaml:"metricsPortName"`
	MetricsPortNumber     string `yaml:"metricsPortNumber"`
	MetricsScheme         string `yaml:"metricsScheme"`
	MetricsParamPrefix    string `yaml:"metricsParamPrefix"`
	MetricsScrapeInterval string `yaml:"metricsScrapeInterval"`
	MetricsScrapeTimeout  string `yaml:"metricsScrapeTimeout"`
}

// RegisterFlagsWithPrefix registers the flags and defaults.
func (c *AutoDiscoverConfig) RegisterFlagsWithPrefix(prefix string, f *flag.FlagSet) {
	f.BoolVar(&c.Enabled, prefix+"enabled", true, "Scrape Pods and Services that carry the scrape annotation.")
	a := &c.Annotations
	for _, x := range []struct {
		p    *string
		name string
		def  string
	}{
		{&a.Scrape, "scrape", "k8s.grafana.com/scrape"},
		{&a.Job, "job", "k8s.grafana.com/job"},
		{&a.Instance, "instance", "k8s.grafana.com/instance"},
		{&a.MetricsContainer, "metricsContainer", "k8s.grafana.com/metrics.container"},
		{&a.MetricsPath, "metricsPath", "k8s.grafana.com/metrics.path"},
		{&a.MetricsPortName, "metricsPortName", "k8s.grafana.com/metrics.portName"},
		{&a.MetricsPortNumber, "metricsPortNumber", "k8s.grafana.com/metrics.portNumber"},
		{&a.MetricsScheme, "metricsScheme", "k8s.grafana.com/metrics.scheme"},
		{&a.MetricsParamPrefix, "metricsParamPrefix", "k8s.grafana.com/metrics.param_"},
		{&a.MetricsScrapeInterval, "metricsScrapeInterval", "k8s.grafana.com/metrics.scrapeInterval"},
		{&a.MetricsScrapeTimeout, "metricsScrapeTimeout", "k8s.grafana.com/metrics.scrapeTimeout"},
	} {
		f.StringVar(x.p, prefix+"annotations."+x.name, x.def, "Annotation read for "+x.name+".")
	}
	f.Var(&c.Namespaces, prefix+"namespaces", "Only these namespaces (comma-separated); empty means all.")
	f.Var(&c.ExcludeNamespaces, prefix+"excludeNamespaces", "Never these namespaces (comma-separated).")
	f.StringVar(&c.LabelSelector, prefix+"labelSelector", "", "Only Pods and Services matching this Kubernetes label selector (checked when discovery starts).")
}

var annotationName = regexp.MustCompile(`^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9_])?$`)

// Validate checks the section.
func (c *AutoDiscoverConfig) Validate() error {
	var errs []error
	a := c.Annotations
	for _, x := range []struct{ name, v string }{
		{"scrape", a.Scrape}, {"job", a.Job}, {"instance", a.Instance}, {"metricsContainer", a.MetricsContainer},
		{"metricsPath", a.MetricsPath}, {"metricsPortName", a.MetricsPortName}, {"metricsPortNumber", a.MetricsPortNumber},
		{"metricsScheme", a.MetricsScheme}, {"metricsScrapeInterval", a.MetricsScrapeInterval}, {"metricsScrapeTimeout", a.MetricsScrapeTimeout},
	} {
		if !annotationName.MatchString(x.v) {
			errs = append(errs, fieldErr("metrics.autoDiscover.annotations."+x.name, "%q is not an annotation name", x.v))
		}
	}
	return errors.Join(errs...)
}

// JobConfig switches a built-in job and tunes its metrics.
type JobConfig struct {
	Enabled        bool          `yaml:"enabled"`
	ScrapeInterval time.Duration `yaml:"scrapeInterval"`
	MetricsTuning  MetricsTuning `yaml:"metricsTuning"`
}

// MetricsTuning is a job's allow list: the default list, extended by
// includeMetrics, minus excludeMetrics. Entries are regular expressions
// matched against the whole metric name.
type MetricsTuning struct {
	UseDefaultAllowList bool                   `yaml:"useDefaultAllowList"`
	IncludeMetrics      flagext.StringSliceCSV `yaml:"includeMetrics"`
	ExcludeMetrics      flagext.StringSliceCSV `yaml:"excludeMetrics"`
}

func (c *JobConfig) registerFlags(prefix string, f *flag.FlagSet, enabled bool) {
	f.BoolVar(&c.Enabled, prefix+"enabled", enabled, "Scrape this built-in job.")
	f.DurationVar(&c.ScrapeInterval, prefix+"scrapeInterval", 0, "Scrape interval of this job; 0 uses metrics.scrapeInterval.")
	f.BoolVar(&c.MetricsTuning.UseDefaultAllowList, prefix+"metricsTuning.useDefaultAllowList", true, "Keep only the job's default allow list (plus includeMetrics).")
	f.Var(&c.MetricsTuning.IncludeMetrics, prefix+"metricsTuning.includeMetrics", "Metric name regexes kept in addition to the allow list (comma-separated).")
	f.Var(&c.MetricsTuning.ExcludeMetrics, prefix+"metricsTuning.excludeMetrics", "Metric name regexes dropped (comma-separated).")
}

func (c *JobConfig) validate(path string) error {
	var errs []error
	if c.ScrapeInterval < 0 {
		errs = append(errs, fieldErr(path+".scrapeInterval", "must not be negative"))
	}
	for i, re := range append(append([]string{}, c.MetricsTuning.IncludeMetrics...), c.MetricsTuning.ExcludeMetrics...) {
		if _, err := regexp.Compile("^(?:" + re + ")$"); err != nil {
			errs = append(errs, fieldErr(fmt.Sprintf("%s.metricsTuning[%d]", path, i), "%q: %v", re, err))
		}
	}
	return errors.Join(errs...)
}

// MonitorsConfig switches the Prometheus Operator's ServiceMonitors or
// PodMonitors.
type MonitorsConfig struct {
	Enabled bool `yaml:"enabled"`
	// AllowFileReferences lets a ServiceMonitor make a collector read files
	// on its node (bearerTokenFile, tlsConfig caFile/certFile/keyFile);
	// anyone who can create a ServiceMonitor could otherwise send a node's
	// service-account token anywhere.
	AllowFileReferences bool `yaml:"allowFileReferences"`
}

func (c *MonitorsConfig) registerFlags(prefix string, f *flag.FlagSet, files bool) {
	f.BoolVar(&c.Enabled, prefix+"enabled", true, "Scrape what the Prometheus Operator's custom resources of this kind select (when the CRD is installed).")
	if files {
		f.BoolVar(&c.AllowFileReferences, prefix+"allowFileReferences", false, "Let these resources make a collector read files on its node (bearerTokenFile, tlsConfig caFile/certFile/keyFile).")
	}
}
