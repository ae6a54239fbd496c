package collector

import (
	"fmt"
	"log/slog"

	"github.com/prometheus/common/model"
	promconfig "github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/discovery/targetgroup"
	"go.yaml.in/yaml/v3"

	"github.com/watershed-dev/watershed/platform/config"
)

// The subset of Prometheus's configuration file that static targets map to.
type promFile struct {
	Global        promGlobal      `yaml:"global"`
	ScrapeConfigs []promScrapeJob `yaml:"scrape_configs"`
}

type promGlobal struct {
	ScrapeInterval string `yaml:"scrape_interval"`
	ScrapeTimeout  string `yaml:"scrape_timeout"`
	BodySizeLimit  string `yaml:"body_size_limit,omitempty"`
}

type promScrapeJob struct {
	JobName         string              `yaml:"job_name"`
	ScrapeInterval  string              `yaml:"scrape_interval,omitempty"`
	ScrapeTimeout   string              `yaml:"scrape_timeout,omitempty"`
	MetricsPath     string              `yaml:"metrics_path,omitempty"`
	Scheme          string              `yaml:"scheme,omitempty"`
	HonorLabels     bool                `yaml:"honor_labels,omitempty"`
	SampleLimit     int                 `yaml:"sample_limit,omitempty"`
	ScrapeProtocols []string            `yaml:"scrape_protocols,omitempty"`
	Authorization   *promAuth           `yaml:"authorization,omitempty"`
	TLSConfig       *promTLSConfig      `yaml:"tls_config,omitempty"`
	Params          map[string][]string `yaml:"params,omitempty"`
	// MetricRelabelConfigs are Prometheus relabel configs, decoded from
	// YAML and rendered back as they came.
	MetricRelabelConfigs []any `yaml:"metric_relabel_configs,omitempty"`
}

type promAuth struct {
	Credentials     string `yaml:"credentials,omitempty"`
	CredentialsFile string `yaml:"credentials_file,omitempty"`
}

type promTLSConfig struct {
	CAFile             string `yaml:"ca_file,omitempty"`
	CertFile           string `yaml:"cert_file,omitempty"`
	KeyFile            string `yaml:"key_file,omitempty"`
	ServerName         string `yaml:"server_name,omitempty"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify,omitempty"`
}

// scrapePlan is everything a collector scrapes: Prometheus scrape jobs and
// their targets.
type scrapePlan struct {
	jobs   []promScrapeJob
	groups map[string][]*targetgroup.Group
}

// staticPlan is the plan of metrics.staticTargets.
func staticPlan(m config.MetricsConfig, cluster string) scrapePlan {
	p := scrapePlan{groups: map[string][]*targetgroup.Group{}}
	for _, st := range m.StaticTargets {
		interval := st.ScrapeInterval
		if interval == 0 {
			interval = m.ScrapeInterval
		}
		jobTimeout := st.ScrapeTimeout
		if jobTimeout == 0 {
			jobTimeout = min(m.ScrapeTimeout, interval)
		}
		job := promScrapeJob{
			JobName:         st.Job,
			ScrapeInterval:  interval.String(),
			ScrapeTimeout:   jobTimeout.String(),
			MetricsPath:     st.MetricsPath,
			Scheme:          st.Scheme,
			HonorLabels:     st.HonorLabels,
			SampleLimit:     st.SampleLimit,
			ScrapeProtocols: st.ScrapeProtocols,
		}
		if tok := st.BearerToken.String(); tok != "" || st.BearerFile != "" {
			job.Authorization = &promAuth{Credentials: tok, CredentialsFile: st.BearerFile}
		}
		if st.TLS != (config.TLSConfig{}) {
			tls := promTLSConfig(st.TLS)
			job.TLSConfig = &tls
		}
		p.jobs = append(p.jobs, job)
		common := model.LabelSet{}
		for k, v := range st.Labels {
			common[model.LabelName(k)] = model.LabelValue(v)
		}
		if cluster != "" {
			common["cluster"] = model.LabelValue(cluster)
		}
		g := &targetgroup.Group{Source: "static/" + st.Job, Labels: common}
		for _, addr := range st.Targets {
			g.Targets = append(g.Targets, model.LabelSet{model.AddressLabel: model.LabelValue(addr)})
		}
		p.groups[st.Job] = []*targetgroup.Group{g}
	}
	return p
}

// render loads the plan with Prometheus's own configuration loader, so that
// every default and check is Prometheus's.
func (p scrapePlan) render(m config.MetricsConfig) (*promconfig.Config, error) {
	timeout := min(m.ScrapeTimeout, m.ScrapeInterval)
	f := promFile{Global: promGlobal{ScrapeInterval: m.ScrapeInterval.String(), ScrapeTimeout: timeout.String()}, ScrapeConfigs: p.jobs}
	if m.BodySizeLimit > 0 {
		f.Global.BodySizeLimit = fmt.Sprintf("%dB", uint64(m.BodySizeLimit))
	}
	out, err := yaml.Marshal(f)
	if err != nil {
		return nil, fmt.Errorf("render scrape configuration: %w", err)
	}
	cfg, err := promconfig.Load(string(out), slog.New(slog.DiscardHandler))
	if err != nil {
		return nil, fmt.Errorf("scrape configuration: %w", err)
	}
	return cfg, nil
}
