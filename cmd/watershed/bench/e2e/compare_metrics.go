package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"
)

// runCompareMetrics scrapes the same synthetic targets with Watershed
// (all-in-one and microservices), vmagent and Prometheus in agent mode in
// turn, all remote-writing to one counting receiver that also times each
// sample from its scrape to its arrival.
func runCompareMetrics(o options) error {
	targets, err := serveTargets(o.targets, o.series)
	if err != nil {
		return err
	}
	latency := &latencyHistogram{}
	recv := &receiver{count: func(body []byte) (int, error) { return countSamplesTimed(body, latency) }}
	recvAddr, err := serve(recv)
	if err != nil {
		return err
	}
	agents := selectedAgents(o, metricsAgents(o, targets, recvAddr))
	results := runAgents(o, agents, recv.items.Load, window{
		begin: latency.reset,
		end:   func() string { return latency.quantile(0.99).String() },
	})
	active := float64(o.targets * (o.series + 5)) // each target adds up and 4 scrape_* series
	var ref *agentResult
	if results[0].name == "watershed all-in-one" {
		ref = &results[0]
	}
	fmt.Printf("\nmetrics side by side: %d targets x %d series (%.0f active series) every %s, remote write to one counting receiver; %s measured after %s warm-up; CPU and peak RSS summed over each agent's processes\n",
		o.targets, o.series, active, o.interval, o.duration, o.warmup)
	printTable(results, []column{
		{"samples delivered/s", func(r agentResult) string { return fmt.Sprintf("%.0f", r.delivered/r.elapsed.Seconds()) }},
		{"CPU-s per 1M samples", func(r agentResult) string { return fmt.Sprintf("%.3f", perMillionCPU(r)) }},
		{"x Watershed all-in-one", ratioTo(ref, perMillionCPU)},
		{"cores used", func(r agentResult) string { return fmt.Sprintf("%.2f", r.cpu/r.elapsed.Seconds()) }},
		{"peak RSS", func(r agentResult) string { return mib(r.rss) }},
		{"bytes per active series", func(r agentResult) string { return fmt.Sprintf("%.0f", float64(r.rss)/active) }},
		{"p99 scrape to receiver", func(r agentResult) string { return r.extra }},
		{"CPU by process", roleShares},
		{"peak RSS by process", roleRSS},
	})
	if rejected := recv.rejected.Load(); rejected > 0 {
		return fmt.Errorf("receiver refused %d requests", rejected)
	}
	return nil
}

// metricsAgents are the contenders of a metrics run, in the order they run.
func metricsAgents(o options, targets []string, recvAddr string) []agent {
	return []agent{
		{name: "watershed all-in-one", start: func(ctx context.Context, dir string) ([]*agentProcess, error) {
			httpAddr, err := freeAddr()
			if err != nil {
				return nil, err
			}
			p, err := startWatershed(ctx, o, dir, "watershed", metricsConfig(o, httpAddr, embeddedNATS(dir, "127.0.0.1:-1"), targets, recvAddr))
			if err != nil {
				return nil, err
			}
			return []*agentProcess{p}, nil
		}},
		{name: "watershed microservices", start: func(ctx context.Context, dir string) ([]*agentProcess, error) {
			return startMicroservices(ctx, o, dir, func(httpAddr, natsYAML string) string {
				return metricsConfig(o, httpAddr, natsYAML, targets, recvAddr)
			}, "node-collector", "router", "writer-mimir")
		}},
		{name: "vmagent " + vmagentVersion, start: func(ctx context.Context, dir string) ([]*agentProcess, error) {
			scrape := filepath.Join(dir, "scrape.yml")
			if err := os.WriteFile(scrape, []byte(promScrapeConfig(o, targets, "")), 0o644); err != nil {
				return nil, err
			}
			httpAddr, err := freeAddr()
			if err != nil {
				return nil, err
			}
			p, err := startAgentProcess(ctx, dir, "vmagent", o.vmagent,
				"-promscrape.config="+scrape,
				"-remoteWrite.url=http://"+recvAddr+"/api/v1/write",
				"-remoteWrite.forcePromProto",
				"-remoteWrite.tmpDataPath="+filepath.Join(dir, "vmagent-data"),
				"-httpListenAddr="+httpAddr,
				"-loggerLevel=WARN")
			if err != nil {
				return nil, err
			}
			return []*agentProcess{p}, nil
		}},
		{name: "prometheus agent", start: func(ctx context.Context, dir string) ([]*agentProcess, error) {
			cfg := filepath.Join(dir, "prometheus.yml")
			rw := fmt.Sprintf("remote_write:\n  - url: http://%s/api/v1/write\n", recvAddr)
			if err := os.WriteFile(cfg, []byte(promScrapeConfig(o, targets, rw)), 0o644); err != nil {
				return nil, err
			}
			httpAddr, err := freeAddr()
			if err != nil {
				return nil, err
			}
			p, err := startAgentProcess(ctx, dir, "prometheus", o.prometheus,
				"--enable-feature=agent",
				"--config.file="+cfg,
				"--storage.agent.path="+filepath.Join(dir, "agent-data"),
				"--web.listen-address="+httpAddr,
				"--log.level=warn")
			if err != nil {
				return nil, err
			}
			return []*agentProcess{p}, nil
		}},
	}
}

// promScrapeConfig is a Prometheus scrape configuration of the targets,
// which vmagent reads too; extra is appended (remote_write).
func promScrapeConfig(o options, targets []string, extra string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "global:\n  scrape_interval: %s\n  scrape_timeout: %s\nscrape_configs:\n  - job_name: bench\n    static_configs:\n      - targets:\n",
		o.interval, o.interval)
	for _, t := range targets {
		fmt.Fprintf(&b, "          - %q\n", t)
	}
	b.WriteString(extra)
	return b.String()
}

// startMicroservices runs an external nats-server and one watershed
// process per target on it, configured by cfg(httpAddr, natsYAML).
func startMicroservices(ctx context.Context, o options, dir string, cfg func(httpAddr, natsYAML string) string, targets ...string) ([]*agentProcess, error) {
	bus, natsAddr, err := startNATSServer(ctx, o, dir)
	if err != nil {
		return nil, err
	}
	procs := []*agentProcess{bus}
	for _, target := range targets {
		httpAddr, err := freeAddr()
		if err != nil {
			return procs, err
		}
		p, err := startService(ctx, o, dir, target, cfg(httpAddr, externalNATS(natsAddr)))
		if err != nil {
			return procs, err
		}
		procs = append(procs, p)
	}
	return procs, nil
}

// countSamplesTimed counts the samples of a remote-write request and
// records each one's age (arrival minus its scrape timestamp).
func countSamplesTimed(body []byte, h *latencyHistogram) (int, error) {
	now := time.Now().UnixMilli()
	return walkSamples(body, func(ts int64) {
		h.observe(time.Duration(now-ts) * time.Millisecond)
	})
}

// latencyHistogram counts durations in 10 ms buckets up to 2 minutes.
type latencyHistogram struct {
	buckets [12001]atomic.Int64
}

const latencyBucket = 10 * time.Millisecond

func (h *latencyHistogram) observe(d time.Duration) {
	i := int(d / latencyBucket)
	if i < 0 {
		i = 0
	}
	if i >= len(h.buckets) {
		i = len(h.buckets) - 1
	}
	h.buckets[i].Add(1)
}

func (h *latencyHistogram) reset() {
	for i := range h.buckets {
		h.buckets[i].Store(0)
	}
}

// quantile is the upper bound of the bucket holding quantile q; 0 when
// nothing was observed.
func (h *latencyHistogram) quantile(q float64) time.Duration {
	var total int64
	for i := range h.buckets {
		total += h.buckets[i].Load()
	}
	if total == 0 {
		return 0
	}
	rank := int64(q * float64(total))
	var seen int64
	for i := range h.buckets {
		seen += h.buckets[i].Load()
		if seen > rank {
			return time.Duration(i+1) * latencyBucket
		}
	}
	return time.Duration(len(h.buckets)) * latencyBucket
}
