package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/watershed-dev/watershed/cmd/watershed/replay"
)

// runReplay is `watershed replay`: it connects to the bus of the
// configuration (the all-in-one's embedded server on nats.listenAddress
// when nats.url is empty) and sends a window of a destination's buffer
// again. Ctrl-C stops after the request in flight and prints the summary.
func runReplay(args []string) int {
	fs := flag.NewFlagSet("watershed replay", flag.ContinueOnError)
	var o replay.Options
	var from, to string
	fs.StringVar(&o.Destination, "destination", "", "Destination whose buffer is replayed: prometheus, loki or tempo.")
	fs.StringVar(&from, "from", "", "Start of the window: RFC 3339, or a duration ago such as 15m.")
	fs.StringVar(&to, "to", "0s", "End of the window: RFC 3339, or a duration ago (0s is now).")
	fs.StringVar(&o.ToURL, "to-url", "", "Send to this backend instead of the configured one (for tempo: its host).")
	fs.StringVar(&o.Tenant, "tenant", "", "Send as this tenant (X-Scope-OrgID) instead of the messages' own.")
	fs.Float64Var(&o.Rate, "rate", 0, "Items per second at most; 0 is no limit.")
	fs.BoolVar(&o.DryRun, "dry-run", false, "Count what would be sent; send nothing.")
	fs.StringVar(&o.ResumeFile, "resume", "", "File keeping the position of the last delivered request; a run with the same window continues after it.")
	cfg, code := subcommandConfig(fs, args)
	if cfg == nil {
		return code
	}
	now := time.Now()
	var err error
	if o.From, err = replay.ParseTime(from, now); err == nil {
		o.To, err = replay.ParseTime(to, now)
	}
	if from == "" || o.Destination == "" {
		err = errors.New("--destination and --from are required")
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "watershed replay: %v\n", err)
		return 2
	}
	url, err := replay.URL(cfg, o)
	if err != nil {
		fmt.Fprintf(os.Stderr, "watershed replay: %v\n", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	b, err := openBus(ctx, "watershed-replay", cfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "watershed replay: %v\n", err)
		return 1
	}
	defer b.Close()
	sum, err := replay.Run(ctx, b.JetStream(), cfg, o, os.Stderr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "watershed replay: %v\n", err)
		return 1
	}
	replay.Print(os.Stdout, o, url, sum)
	if sum.Interrupted {
		return 130
	}
	return 0
}
