package receiver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/grafana/dskit/services"
	"github.com/jaegertracing/jaeger-idl/proto-gen/api_v2"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/collector/pdata/plog/plogotlp"
	"go.opentelemetry.io/collector/pdata/pmetric/pmetricotlp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"github.com/watershed-dev/watershed/platform/bus"
	"github.com/watershed-dev/watershed/platform/config"
	_ "github.com/watershed-dev/watershed/platform/grpcgzip" // OTLP gRPC senders may gzip
)

// Signals says which signals the receivers take: each goes to its
// destination only when that is on (traces.enabled, metrics.enabled,
// logs.enabled); the others are not served (HTTP 404, gRPC UNIMPLEMENTED).
type Signals struct {
	Traces, Metrics, Logs bool
}

// Config is what the receivers need from the Watershed configuration.
type Config struct {
	Receivers config.ReceiversConfig
	Signals   Signals
	Pipeline  PipelineConfig
	// Cluster is k8s.cluster.name.
	Cluster string
	// RawStream and DuplicateWindow shape the raw stream, which the
	// receivers ensure exists before they accept anything.
	NATS config.NATSConfig
	// ShutdownTimeout bounds how long stopping waits for requests in flight.
	ShutdownTimeout time.Duration
}

// Receivers is the ingest gateway service.
type Receivers struct {
	services.Service

	cfg      Config
	bus      *bus.Bus
	pipeline *Pipeline
	enricher *Enricher
	limiter  *MemoryLimiter
	logger   *slog.Logger

	grpcServers []*grpc.Server
	httpServers []*http.Server
	listeners   []net.Listener
	serves      []func() error // one per listener, started by running
	addrs       map[string]string
	serveErrs   chan error
	wg          sync.WaitGroup
}

// New makes the receivers service.
func New(cfg Config, b *bus.Bus, pubMetrics *bus.PublisherMetrics, reg prometheus.Registerer, logger *slog.Logger) *Receivers {
	logger = logger.With("component", "receivers")
	m := newMetrics(reg)
	r := &Receivers{cfg: cfg, bus: b, logger: logger, addrs: map[string]string{}}
	r.enricher = NewEnricher(cfg.Cluster, cfg.Receivers.Processors.K8sAttributes.Metadata, m.lookups, logger)
	if ml := cfg.Receivers.Processors.MemoryLimiter; ml.Enabled {
		r.limiter = NewMemoryLimiter(uint64(ml.Limit), ml.CheckInterval, m.memoryLimit, logger)
	}
	pub := bus.NewPublisher(b.JetStream(), "receivers", pubMetrics, logger)
	r.pipeline = newPipeline(cfg.Pipeline, pub, r.limiter, r.enricher, m, logger)
	r.Service = services.NewBasicService(r.starting, r.running, r.stopping)
	return r
}

// Addr is the address a receiver listens on, by its key under receivers
// (grpc, http, zipkin, jaeger.grpc, jaeger.thriftHttp); valid once running.
func (r *Receivers) Addr(name string) string { return r.addrs[name] }

// Enricher is the pod index, for tests that set pods directly.
func (r *Receivers) Enricher() *Enricher { return r.enricher }

func (r *Receivers) limits() Limits {
	l := r.cfg.Receivers.Limits
	return Limits{MaxRequestSize: int64(l.MaxRequestSize), MaxDecompressedSize: int64(l.MaxDecompressedSize)}
}

func (r *Receivers) starting(ctx context.Context) error {
	js := r.bus.JetStream()
	if _, err := bus.EnsureStream(ctx, js, bus.RawStreamConfig(r.cfg.NATS)); err != nil {
		return err
	}
	rc := r.cfg.Receivers
	grpcOpts := []grpc.ServerOption{
		// Applies to the message after decompression: a gzip bomb stops here.
		grpc.MaxRecvMsgSize(int(rc.Limits.MaxDecompressedSize)),
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionAge: 5 * time.Minute, MaxConnectionAgeGrace: 30 * time.Second}),
	}
	sig := r.cfg.Signals
	if rc.GRPC.Enabled {
		s := grpc.NewServer(grpcOpts...)
		if sig.Traces {
			registerOTLPTraces(s, &otlpTraces{p: r.pipeline})
		}
		if sig.Metrics {
			pmetricotlp.RegisterGRPCServer(s, &otlpMetrics{p: r.pipeline})
		}
		if sig.Logs {
			plogotlp.RegisterGRPCServer(s, &otlpLogs{p: r.pipeline})
		}
		if err := r.listenGRPC("grpc", rc.Address(rc.GRPC), s); err != nil {
			return err
		}
	}
	if rc.Jaeger.GRPC.Enabled && sig.Traces {
		s := grpc.NewServer(grpcOpts...)
		api_v2.RegisterCollectorServiceServer(s, &jaegerGRPC{p: r.pipeline})
		if err := r.listenGRPC("jaeger.grpc", rc.Address(rc.Jaeger.GRPC), s); err != nil {
			return err
		}
	}
	type registrar interface{ register(*http.ServeMux) }
	for _, h := range []struct {
		name string
		port config.ReceiverPort
		reg  registrar
	}{
		{"http", rc.HTTP, &otlpHTTP{p: r.pipeline, limits: r.limits(), signals: sig}},
		{"zipkin", rc.Zipkin, &zipkinHTTP{p: r.pipeline, limits: r.limits()}},
		{"jaeger.thriftHttp", rc.Jaeger.ThriftHTTP, &jaegerThriftHTTP{p: r.pipeline, limits: r.limits()}},
	} {
		if !h.port.Enabled || (h.name != "http" && !sig.Traces) {
			continue
		}
		mux := http.NewServeMux()
		h.reg.register(mux)
		if err := r.listenHTTP(h.name, rc.Address(h.port), mux); err != nil {
			return err
		}
	}
	return nil
}

func (r *Receivers) listenGRPC(name, addr string, s *grpc.Server) error {
	r.grpcServers = append(r.grpcServers, s)
	return r.listen(name, addr, func(l net.Listener) error {
		if err := s.Serve(l); !errors.Is(err, grpc.ErrServerStopped) {
			return err
		}
		return nil
	})
}

func (r *Receivers) listenHTTP(name, addr string, h http.Handler) error {
	s := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	r.httpServers = append(r.httpServers, s)
	return r.listen(name, addr, func(l net.Listener) error {
		if err := s.Serve(l); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
}

// listen opens a receiver's port now, so that a taken port fails
// start-up, and keeps serve for running.
func (r *Receivers) listen(name, addr string, serve func(net.Listener) error) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		r.closeListeners()
		return fmt.Errorf("receivers.%s: listen on %s: %w", name, addr, err)
	}
	r.listeners = append(r.listeners, l)
	r.addrs[name] = l.Addr().String()
	r.serves = append(r.serves, func() error {
		if err := serve(l); err != nil {
			return fmt.Errorf("receivers.%s on %s: %w", name, addr, err)
		}
		return nil
	})
	r.logger.Info("receiver listening", "receiver", name, "address", l.Addr().String())
	return nil
}

func (r *Receivers) closeListeners() {
	for _, l := range r.listeners {
		_ = l.Close()
	}
}

// running serves the listeners opened by starting (so that a taken port
// fails start-up) and keeps the pod index and the memory limiter current.
func (r *Receivers) running(ctx context.Context) error {
	r.serveErrs = make(chan error, len(r.serves))
	for _, serve := range r.serves {
		r.wg.Go(func() {
			if err := serve(); err != nil {
				r.serveErrs <- err
			}
		})
	}
	var wg sync.WaitGroup
	if kv, err := bus.EnsurePodMetadataBucket(ctx, r.bus.JetStream(), r.cfg.NATS.RawStream.Replicas); err != nil {
		r.logger.Error("no pod metadata bucket; received telemetry gets no Kubernetes attributes", "err", err)
	} else {
		wg.Go(func() { r.enricher.Watch(ctx, kv) })
	}
	if r.limiter != nil {
		wg.Go(func() { r.limiter.Run(ctx) })
	}
	defer wg.Wait()
	select {
	case <-ctx.Done():
		return nil
	case err := <-r.serveErrs:
		return err
	}
}

// stopping stops intake: new connections are refused, requests in flight
// finish (their data reaches the bus) within the shutdown timeout.
func (r *Receivers) stopping(error) error {
	ctx, cancel := context.WithTimeout(context.Background(), r.cfg.ShutdownTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, s := range r.httpServers {
		wg.Go(func() {
			if err := s.Shutdown(ctx); err != nil {
				_ = s.Close()
			}
		})
	}
	for _, s := range r.grpcServers {
		wg.Go(func() {
			done := make(chan struct{})
			go func() { s.GracefulStop(); close(done) }()
			select {
			case <-done:
			case <-ctx.Done():
				s.Stop()
			}
		})
	}
	wg.Wait()
	r.closeListeners()
	r.wg.Wait()
	return nil
}
