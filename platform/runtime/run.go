package runtime

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/grafana/dskit/services"
)

// Run starts the services, waits until a signal or ctx ends or one of them
// fails, then stops them all within timeout. Services that must stop first
// (intake) come first in the list of stop groups: each group is stopped and
// awaited before the next, so the bus they depend on is closed last.
func Run(ctx context.Context, logger *slog.Logger, timeout time.Duration, groups ...[]services.Service) error {
	var all []services.Service
	for _, g := range groups {
		all = append(all, g...)
	}
	mgr, err := services.NewManager(all...)
	if err != nil {
		return fmt.Errorf("service manager: %w", err)
	}
	watcher := services.NewFailureWatcher()
	watcher.WatchManager(mgr)
	if err := services.StartManagerAndAwaitHealthy(ctx, mgr); err != nil {
		stopGroups(logger, timeout, groups)
		return fmt.Errorf("start: %w", err)
	}
	logger.Info("all services running")

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)

	var runErr error
	select {
	case <-ctx.Done():
		logger.Info("context ended, stopping")
	case s := <-sigs:
		logger.Info("signal received, stopping", "signal", s.String())
	case err := <-watcher.Chan():
		runErr = err
		logger.Error("a service failed, stopping", "err", err)
	}
	return errors.Join(runErr, stopGroups(logger, timeout, groups))
}

func stopGroups(logger *slog.Logger, timeout time.Duration, groups [][]services.Service) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var errs []error
	for _, g := range groups {
		for _, s := range g {
			s.StopAsync()
		}
		for _, s := range g {
			if err := s.AwaitTerminated(ctx); err != nil && !errors.Is(err, context.Canceled) {
				errs = append(errs, err)
			}
		}
	}
	if len(errs) > 0 {
		logger.Warn("shutdown finished with errors", "err", errors.Join(errs...))
	} else {
		logger.Info("shutdown complete")
	}
	return errors.Join(errs...)
}
