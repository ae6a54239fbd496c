package runtime

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/grafana/dskit/services"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/watershed-dev/watershed/platform/bus"
	"github.com/watershed-dev/watershed/platform/config"
)

// Env is what a process gives the services it builds.
type Env struct {
	Config           *config.Config
	Bus              *bus.Bus
	Registry         *prometheus.Registry
	PublisherMetrics *bus.PublisherMetrics
	Server           *Server
	Logger           *slog.Logger
	// Name identifies this process on the bus: the node name in a
	// cluster (NODE_NAME), else the host name.
	Name string
}

// BuildFunc makes a process's services, in stop groups: intake first, so
// that shutdown stops taking work before it flushes what is in flight.
type BuildFunc func(env *Env) ([][]services.Service, error)

// Process is one Watershed process: the bus connection, the HTTP server and
// a set of services.
type Process struct {
	env    *Env
	groups [][]services.Service
	all    []services.Service
}

// NewProcess opens the bus and builds the services; Run starts them.
func NewProcess(ctx context.Context, component string, cfg *config.Config, logger *slog.Logger, build BuildFunc) (*Process, error) {
	applyGCPercent(cfg.Server.GCPercent, logger)
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	name := os.Getenv("NODE_NAME")
	if name == "" {
		name, _ = os.Hostname()
	}
	b, err := bus.Open(ctx, cfg.NATS, "watershed-"+component+"-"+name, logger)
	if err != nil {
		return nil, err
	}
	reg.MustRegister(bus.NewStateCollector(b.JetStream()))
	env := &Env{
		Config:           cfg,
		Bus:              b,
		Registry:         reg,
		PublisherMetrics: bus.NewPublisherMetrics(reg),
		Logger:           logger,
		Name:             name,
	}
	p := &Process{env: env}
	env.Server = NewServer(cfg.Server.HTTPListenAddress, reg, p.ready, logger)
	groups, err := build(env)
	if err != nil {
		_ = b.Close()
		return nil, err
	}
	p.groups = append(groups, []services.Service{env.Server})
	for _, g := range p.groups {
		p.all = append(p.all, g...)
	}
	return p, nil
}

// Env is the process environment.
func (p *Process) Env() *Env { return p.env }

// ready is nil once every service runs, which means its streams and
// consumers exist.
func (p *Process) ready() error {
	var notRunning []string
	for _, s := range p.all {
		if s.State() != services.Running {
			notRunning = append(notRunning, fmt.Sprintf("%T is %s", s, s.State()))
		}
	}
	if len(notRunning) > 0 {
		return errors.New(strings.Join(notRunning, ", "))
	}
	return nil
}

// Ready reports whether every service is running.
func (p *Process) Ready() bool { return p.ready() == nil }

// Run runs the services until ctx ends, a signal comes or one fails, stops
// them within server.shutdownTimeout and closes the bus.
func (p *Process) Run(ctx context.Context) error {
	err := Run(ctx, p.env.Logger, p.env.Config.Server.ShutdownTimeout, p.groups...)
	return errors.Join(err, p.env.Bus.Close())
}

// Main is a service binary's whole main: flags and config, logging, the
// process, and an exit code.
func Main(component string, build BuildFunc) {
	fs := flag.NewFlagSet(component, flag.ContinueOnError)
	cfg, err := config.FromFlags(fs, os.Args[1:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintf(os.Stderr, "%s: %v\n", component, err)
		os.Exit(2)
	}
	os.Exit(RunMain(context.Background(), component, cfg, build))
}

// RunMain runs a process with a configuration already loaded and returns
// the exit code.
func RunMain(ctx context.Context, component string, cfg *config.Config, build BuildFunc) int {
	logger := NewLogger(os.Stderr, cfg.Server.LogLevel).With("process", component)
	p, err := NewProcess(ctx, component, cfg, logger, build)
	if err != nil {
		logger.Error("start failed", "err", err)
		return 1
	}
	if err := p.Run(ctx); err != nil {
		logger.Error("stopped with error", "err", err)
		return 1
	}
	return 0
}
