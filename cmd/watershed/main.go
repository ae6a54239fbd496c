// Command watershed runs any set of Watershed services in one process
// (watershed run), and holds the operator subcommands.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/watershed-dev/watershed/cmd/watershed/app"
	"github.com/watershed-dev/watershed/cmd/watershed/status"
	"github.com/watershed-dev/watershed/platform/bus"
	"github.com/watershed-dev/watershed/platform/config"
	"github.com/watershed-dev/watershed/platform/runtime"
)

const usage = `usage: watershed <command> [flags]

commands:
  run     run services in one process: -config.file=FILE [-target=all|node-collector,router,writer-mimir,writer-loki,writer-tempo,discovery]
  status  what the bus holds per stream and each collector's last heartbeat: -config.file=FILE
  replay  send a time window of a destination's buffer again: -config.file=FILE --destination prometheus|loki|tempo
          --from TIME --to TIME [--to-url URL] [--tenant T] [--rate ITEMS/S] [--dry-run] [--resume FILE]
          (TIME is RFC 3339 or a duration ago such as 15m)
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	switch os.Args[1] {
	case "run":
		os.Exit(run(os.Args[2:]))
	case "status":
		os.Exit(showStatus(os.Args[2:]))
	case "replay":
		os.Exit(runReplay(os.Args[2:]))
	case "-h", "-help", "--help", "help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "watershed: unknown command %q\n%s", os.Args[1], usage)
		os.Exit(2)
	}
}

func run(args []string) int {
	fs := flag.NewFlagSet("watershed run", flag.ContinueOnError)
	target := fs.String("target", "all", "Services to run: all, or a comma-separated list of "+fmt.Sprint(app.Targets)+".")
	cfg, err := config.FromFlags(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(os.Stderr, "watershed run: %v\n", err)
		return 2
	}
	targets, err := app.ParseTargets(*target)
	if err != nil {
		fmt.Fprintf(os.Stderr, "watershed run: %v\n", err)
		return 2
	}
	return runtime.RunMain(context.Background(), "watershed", cfg, app.Build(targets))
}

// showStatus connects to the bus of the configuration (the all-in-one's
// embedded server on nats.listenAddress when nats.url is empty) and prints
// its state.
func showStatus(args []string) int {
	fs := flag.NewFlagSet("watershed status", flag.ContinueOnError)
	cfg, code := subcommandConfig(fs, args)
	if cfg == nil {
		return code
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := openBus(ctx, "watershed-status", cfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "watershed status: %v\n", err)
		return 1
	}
	defer b.Close()
	r, err := status.Gather(ctx, b.JetStream(), cfg.NATS.Partitions, time.Now())
	if err == nil {
		err = status.Print(os.Stdout, r)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "watershed status: %v\n", err)
		return 1
	}
	return 0
}

// subcommandConfig reads a subcommand's flags and configuration; a nil
// configuration comes with the exit code (0 for -help).
func subcommandConfig(fs *flag.FlagSet, args []string) (*config.Config, int) {
	cfg, err := config.FromFlags(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, 0
		}
		fmt.Fprintf(os.Stderr, "%s: %v\n", fs.Name(), err)
		return nil, 2
	}
	return cfg, 0
}

// openBus connects a subcommand to the bus of the configuration: nats.url,
// or the all-in-one's embedded server on nats.listenAddress.
func openBus(ctx context.Context, name string, cfg *config.Config) (*bus.Bus, error) {
	if cfg.NATS.URL == "" {
		cfg.NATS.URL = "nats://" + cfg.NATS.ListenAddress
	}
	return bus.Open(ctx, cfg.NATS, name, slog.New(slog.DiscardHandler))
}
