package runtime

import (
	"log/slog"
	"os"
	"runtime/debug"
)

// applyGCPercent sets the garbage collector's target (server.gcPercent)
// unless the GOGC environment variable does, which then wins as Go users
// expect. A collector's live heap is mostly long-lived (the scrape caches,
// JetStream's block buffers) and it allocates little per sample, so at
// Go's default of 100 most of its resident memory is garbage waiting for
// the heap to double: 50 cut peak RSS by a fifth at 200,000 series for
// CPU within the noise of the benchmark (bench/results.md). It returns
// the percentage in force.
func applyGCPercent(percent int, logger *slog.Logger) int {
	if env, ok := os.LookupEnv("GOGC"); ok {
		current := debug.SetGCPercent(-1)
		debug.SetGCPercent(current)
		logger.Debug("GOGC set in the environment; server.gcPercent ignored", "GOGC", env)
		return current
	}
	debug.SetGCPercent(percent)
	return percent
}
