// Command watershed runs any set of Watershed services in one process
// (watershed run), and holds the operator subcommands.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/watershed-dev/watershed/cmd/watershed/app"
	"github.com/watershed-dev/watershed/platform/config"
	"github.com/watershed-dev/watershed/platform/runtime"
)

const usage = `usage: watershed <command> [flags]

commands:
  run    run services in one process: -config.file=FILE [-target=all|node-collector,router,writer-mimir,writer-loki,discovery]
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	switch os.Args[1] {
	case "run":
		os.Exit(run(os.Args[2:]))
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
