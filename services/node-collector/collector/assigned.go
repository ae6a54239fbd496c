package collector

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/discovery/targetgroup"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/proto"

	"github.com/watershed-dev/watershed/platform/bus"
	"github.com/watershed-dev/watershed/proto/watershedv1"
)

// AssignmentBucket is the key-value bucket where discovery's leader writes
// each collector's targets, under the collector's name.
const AssignmentBucket = "WS_ASSIGNMENTS"

// targetIDLabel carries an assigned target's id through the scrape
// manager; like every __ label it is gone from the scraped series.
const targetIDLabel = "__ws_target_id"

// ServiceAccountCredentials are the files of the collector's own service
// account, presented to targets that ask for them (kubelet, cAdvisor).
type ServiceAccountCredentials struct {
	TokenFile string `yaml:"tokenFile"`
	CAFile    string `yaml:"caFile"`
}

// DefaultServiceAccount is where Kubernetes mounts a pod's service account.
var DefaultServiceAccount = ServiceAccountCredentials{
	TokenFile: "/var/run/secrets/kubernetes.io/serviceaccount/token",
	CAFile:    "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt",
}

// EnsureAssignmentBucket creates the assignment bucket if it is missing.
func EnsureAssignmentBucket(ctx context.Context, js jetstream.JetStream, replicas int) (jetstream.KeyValue, error) {
	return bus.EnsureBucket(ctx, js, AssignmentBucket, "Watershed scrape assignments, one key per node collector", 0, replicas)
}

// withAssignment adds the assigned targets to a plan: targets with the same
// scrape settings share one scrape pool.
func (p scrapePlan) withAssignment(a *watershedv1.CollectorAssignment, sa ServiceAccountCredentials, cluster string) (scrapePlan, error) {
	out := scrapePlan{jobs: append([]promScrapeJob(nil), p.jobs...), groups: make(map[string][]*targetgroup.Group, len(p.groups))}
	for k, v := range p.groups {
		out.groups[k] = v
	}
	pools := map[string]int{} // pool name -> index in out.jobs
	for _, t := range a.GetTargets() {
		job, err := assignedJob(t, sa)
		if err != nil {
			return scrapePlan{}, fmt.Errorf("target %s (%s): %w", t.GetId(), t.GetJob(), err)
		}
		if _, ok := pools[job.JobName]; !ok {
			pools[job.JobName] = len(out.jobs)
			out.jobs = append(out.jobs, job)
			g := &targetgroup.Group{Source: "assigned/" + job.JobName, Labels: model.LabelSet{}}
			if cluster != "" {
				g.Labels["cluster"] = model.LabelValue(cluster)
			}
			out.groups[job.JobName] = []*targetgroup.Group{g}
		}
		g := out.groups[job.JobName][0]
		ls := model.LabelSet{model.AddressLabel: model.LabelValue(t.GetAddress()), targetIDLabel: model.LabelValue(t.GetId())}
		for _, l := range t.GetLabels() {
			ls[model.LabelName(l.GetName())] = model.LabelValue(l.GetValue())
		}
		g.Targets = append(g.Targets, ls)
	}
	return out, nil
}

// assignedJob is the scrape job of one assigned target; its name is the
// job plus a hash of its settings, so equal settings share a pool.
func assignedJob(t *watershedv1.ScrapeTarget, sa ServiceAccountCredentials) (promScrapeJob, error) {
	job := promScrapeJob{
		ScrapeInterval: time.Duration(t.GetScrapeIntervalMs() * int64(time.Millisecond)).String(),
		ScrapeTimeout:  time.Duration(t.GetScrapeTimeoutMs() * int64(time.Millisecond)).String(),
		MetricsPath:    t.GetMetricsPath(),
		Scheme:         t.GetScheme(),
		HonorLabels:    t.GetHonorLabels(),
		SampleLimit:    int(t.GetSampleLimit()),
	}
	if t.GetScrapeIntervalMs() <= 0 || t.GetScrapeTimeoutMs() <= 0 {
		return job, errors.New("scrape interval and timeout must be positive")
	}
	for _, p := range t.GetParams() {
		if job.Params == nil {
			job.Params = map[string][]string{}
		}
		job.Params[p.GetName()] = p.GetValues()
	}
	if t.GetCredentials() == watershedv1.Credentials_CREDENTIALS_SERVICE_ACCOUNT {
		job.Authorization = &promAuth{CredentialsFile: sa.TokenFile}
		job.TLSConfig = &promTLSConfig{CAFile: sa.CAFile}
	}
	if t.GetInsecureSkipVerify() || t.GetServerName() != "" {
		if job.TLSConfig == nil {
			job.TLSConfig = &promTLSConfig{}
		}
		job.TLSConfig.InsecureSkipVerify = t.GetInsecureSkipVerify()
		job.TLSConfig.ServerName = t.GetServerName()
	}
	if rc := t.GetMetricRelabelConfigs(); rc != "" {
		if err := yaml.Unmarshal([]byte(rc), &job.MetricRelabelConfigs); err != nil {
			return job, fmt.Errorf("metric relabel configs: %w", err)
		}
	}
	settings, err := yaml.Marshal(job)
	if err != nil {
		return job, err
	}
	h := fnv.New64a()
	_, _ = h.Write(settings)
	job.JobName = t.GetJob() + "/" + strconv.FormatUint(h.Sum64(), 36)
	return job, nil
}

// watchAssignment applies every version of this collector's assignment
// until ctx ends. A restarted collector gets the current one at once.
func (c *Collector) watchAssignment(ctx context.Context) error {
	w, err := c.assignments.Watch(ctx, c.cfg.Name)
	if err != nil {
		return fmt.Errorf("watch assignment of %s: %w", c.cfg.Name, err)
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("assignment watch closed")
			}
			if e == nil {
				continue // initial values delivered
			}
			a := &watershedv1.CollectorAssignment{}
			if e.Operation() == jetstream.KeyValuePut {
				if err := proto.Unmarshal(e.Value(), a); err != nil {
					c.logger.Error("assignment is not readable; keeping the previous one", "revision", e.Revision(), "err", err)
					continue
				}
			}
			if err := c.apply(ctx, a); err != nil {
				c.logger.Error("assignment refused; keeping the previous one", "epoch", a.GetEpoch(), "err", err)
				continue
			}
			c.logger.Info("assignment applied", "epoch", a.GetEpoch(), "targets", len(a.GetTargets()), "leader", a.GetLeader())
			// Say at once which epoch runs here, not at the next heartbeat.
			c.sendHeartbeat(ctx)
		}
	}
}

// emptyPoolGrace is how long a scrape pool that lost all its targets is
// kept. Prometheus writes staleness markers for targets that leave a pool,
// but not when the pool itself goes, so it goes only later.
const emptyPoolGrace = 10 * time.Minute

// apply replaces the scrape plan by the static targets plus an
// assignment, holding back for a moment the targets that just moved here.
func (c *Collector) apply(ctx context.Context, a *watershedv1.CollectorAssignment) error {
	c.applyMu.Lock()
	defer c.applyMu.Unlock()
	startable, recheck := c.holdMoved(ctx, a, time.Now())
	plan, err := c.static.withAssignment(startable, c.cfg.ServiceAccount, c.cfg.Cluster)
	if err != nil {
		return err
	}
	c.keepEmptyPools(&plan, time.Now())
	promCfg, err := plan.render(c.cfg.Metrics)
	if err != nil {
		return err
	}
	if err := c.manager.ApplyConfig(promCfg); err != nil {
		return fmt.Errorf("apply scrape configuration: %w", err)
	}
	select { // only the newest target set matters
	case <-c.tsets:
	default:
	}
	c.tsets <- plan.groups
	c.epoch.Store(a.GetEpoch())
	c.latest = a
	if recheck > 0 {
		time.AfterFunc(recheck, func() { c.reapply(ctx, a) })
	}
	return nil
}

// reapply applies an assignment again if it is still the latest, to start
// the targets it held.
func (c *Collector) reapply(ctx context.Context, a *watershedv1.CollectorAssignment) {
	if ctx.Err() != nil {
		return
	}
	c.applyMu.Lock()
	latest := c.latest == a
	c.applyMu.Unlock()
	if latest {
		if err := c.apply(ctx, a); err != nil {
			c.logger.Error("re-applying the assignment failed", "epoch", a.GetEpoch(), "err", err)
		}
	}
}

// keepEmptyPools adds to the plan, without targets, the assigned pools it
// no longer has, until they have been empty for emptyPoolGrace.
func (c *Collector) keepEmptyPools(plan *scrapePlan, now time.Time) {
	if c.pools == nil {
		c.pools = map[string]*assignedPool{}
	}
	for _, j := range plan.jobs {
		if p, ok := c.pools[j.JobName]; ok {
			p.job, p.emptySince = j, time.Time{}
		} else if _, static := c.static.groups[j.JobName]; !static {
			c.pools[j.JobName] = &assignedPool{job: j}
		}
	}
	for name, p := range c.pools {
		if _, ok := plan.groups[name]; ok {
			continue
		}
		if p.emptySince.IsZero() {
			p.emptySince = now
		}
		if now.Sub(p.emptySince) > emptyPoolGrace {
			delete(c.pools, name)
			continue
		}
		plan.jobs = append(plan.jobs, p.job)
		plan.groups[name] = []*targetgroup.Group{{Source: "assigned/" + name}}
	}
}

// assignedPool is a scrape pool made for assigned targets.
type assignedPool struct {
	job        promScrapeJob
	emptySince time.Time // zero while it has targets
}
