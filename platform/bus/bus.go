package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/watershed-dev/watershed/platform/config"
)

// embeddedMaxPayload is the embedded server's message size limit; payloads
// are split well below it (nats.maxMessageBytes).
const embeddedMaxPayload = 8 << 20

// Bus is one process's connection to JetStream, and the embedded server
// when the configuration asks for one.
type Bus struct {
	cfg    config.NATSConfig
	server *server.Server
	conn   *nats.Conn
	js     jetstream.JetStream
	logger *slog.Logger
	closed chan struct{} // closed by the client once the connection is closed
}

// Open starts the embedded server when cfg.URL is empty, then connects.
// ErrEmbeddedNotStarted: the embedded server did not accept connections
// in time, most often because its listen address is taken.
var ErrEmbeddedNotStarted = errors.New("embedded NATS server did not start")

func Open(ctx context.Context, cfg config.NATSConfig, name string, logger *slog.Logger) (*Bus, error) {
	b := &Bus{cfg: cfg, logger: logger, closed: make(chan struct{})}
	opts := []nats.Option{
		nats.Name(name),
		nats.ClosedHandler(func(*nats.Conn) { close(b.closed) }),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				logger.Warn("disconnected from NATS", "err", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) { logger.Info("reconnected to NATS", "url", c.ConnectedUrl()) }),
	}
	url := cfg.URL
	if cfg.Embedded() {
		srv, err := startEmbedded(cfg, logger)
		if err != nil {
			return nil, err
		}
		b.server = srv
		// In-process: the bus hop costs no socket round trip.
		opts = append(opts, nats.InProcessServer(srv))
		url = ""
	} else {
		opts = append(opts, nats.RetryOnFailedConnect(true))
		if cfg.Credentials.User != "" {
			opts = append(opts, nats.UserInfo(cfg.Credentials.User, cfg.Credentials.Password.String()))
		}
	}
	conn, err := nats.Connect(url, opts...)
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("connect to NATS: %w", err)
	}
	b.conn = conn
	js, err := jetstream.New(conn,
		jetstream.WithPublishAsyncMaxPending(cfg.MaxPending),
		jetstream.WithPublishAsyncTimeout(10*time.Second))
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	b.js = js
	if err := waitForJetStream(ctx, js); err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

func startEmbedded(cfg config.NATSConfig, logger *slog.Logger) (*server.Server, error) {
	host, portStr, err := net.SplitHostPort(cfg.ListenAddress)
	if err != nil {
		return nil, fmt.Errorf("nats.listenAddress: %w", err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("nats.listenAddress: port %q: %w", portStr, err)
	}
	storeDir, err := filepath.Abs(cfg.StoreDir)
	if err != nil {
		return nil, fmt.Errorf("nats.storeDir: %w", err)
	}
	if err := os.MkdirAll(storeDir, 0o750); err != nil {
		return nil, fmt.Errorf("nats.storeDir: %w", err)
	}
	srv, err := server.NewServer(&server.Options{
		ServerName: "watershed-embedded",
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   storeDir,
		MaxPayload: embeddedMaxPayload,
		NoSigs:     true,
		NoLog:      true,
	})
	if err != nil {
		return nil, fmt.Errorf("embedded NATS server: %w", err)
	}
	srv.Start()
	if !srv.ReadyForConnections(30 * time.Second) {
		srv.Shutdown()
		return nil, fmt.Errorf("%w on %s (is the port in use?)", ErrEmbeddedNotStarted, cfg.ListenAddress)
	}
	logger.Info("embedded JetStream started", "listen", srv.ClientURL(), "storeDir", storeDir)
	return srv, nil
}

// waitForJetStream polls until JetStream answers: a clustered server may
// still be electing its meta leader.
func waitForJetStream(ctx context.Context, js jetstream.JetStream) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for {
		_, err := js.AccountInfo(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("JetStream not available: %w", err)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// JetStream is the JetStream API of the connection.
func (b *Bus) JetStream() jetstream.JetStream { return b.js }

// Conn is the NATS connection.
func (b *Bus) Conn() *nats.Conn { return b.conn }

// Config is the bus configuration the connection was opened with.
func (b *Bus) Config() config.NATSConfig { return b.cfg }

// ClientURL is where other processes reach the embedded server, or the
// configured URL.
func (b *Bus) ClientURL() string {
	if b.server != nil {
		return b.server.ClientURL()
	}
	return b.cfg.URL
}

// Close drains the connection and shuts the embedded server down.
func (b *Bus) Close() error {
	var errs []error
	if b.conn != nil {
		if err := b.conn.Drain(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
			errs = append(errs, err)
		}
		select {
		case <-b.closed:
		case <-time.After(10 * time.Second):
			errs = append(errs, errors.New("NATS connection did not drain within 10s"))
		}
		b.conn.Close()
	}
	if b.server != nil {
		b.server.Shutdown()
		b.server.WaitForShutdown()
	}
	return errors.Join(errs...)
}
