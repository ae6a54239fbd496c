package runtime

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/grafana/dskit/services"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// ReadyFunc reports nil when the process can do its work.
type ReadyFunc func() error

// Server is the process's HTTP server, as a dskit service.
type Server struct {
	services.Service

	mux      *http.ServeMux
	srv      *http.Server
	listener net.Listener
	addr     string
	ready    ReadyFunc
	logger   *slog.Logger
}

// NewServer makes the server. Register handlers on Mux before it starts.
func NewServer(addr string, gatherer prometheus.Gatherer, ready ReadyFunc, logger *slog.Logger) *Server {
	s := &Server{mux: http.NewServeMux(), addr: addr, ready: ready, logger: logger}
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelWarn)}))
	s.mux.HandleFunc("GET /-/healthy", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "Watershed is healthy.")
	})
	s.mux.HandleFunc("GET /-/ready", s.handleReady)
	s.mux.HandleFunc("/debug/pprof/", pprof.Index)
	s.mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	s.mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	s.mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	s.mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	s.srv = &http.Server{Handler: s.mux, ReadHeaderTimeout: 10 * time.Second}
	s.Service = services.NewBasicService(s.starting, s.running, s.stopping)
	return s
}

// Mux is where services add their own endpoints.
func (s *Server) Mux() *http.ServeMux { return s.mux }

// Addr is the address the server listens on, once it has started.
func (s *Server) Addr() string {
	if s.listener == nil {
		return s.addr
	}
	return s.listener.Addr().String()
}

func (s *Server) handleReady(w http.ResponseWriter, _ *http.Request) {
	if err := s.ready(); err != nil {
		http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintln(w, "Watershed is ready.")
}

func (s *Server) starting(context.Context) error {
	l, err := net.Listen("tcp", s.addr)
	if err != nil {
		return fmt.Errorf("server.httpListenAddress: %w", err)
	}
	s.listener = l
	s.logger.Info("HTTP server listening", "addr", l.Addr().String())
	return nil
}

func (s *Server) running(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(s.listener) }()
	select {
	case <-ctx.Done():
		return nil
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return fmt.Errorf("http server: %w", err)
	}
}

func (s *Server) stopping(error) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return s.srv.Shutdown(ctx)
}
