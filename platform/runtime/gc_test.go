package runtime

import (
	"log/slog"
	"os"
	"runtime/debug"
	"testing"
)

func TestApplyGCPercent(t *testing.T) {
	restore := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(restore) })
	logger := slog.New(slog.DiscardHandler)
	for _, tc := range []struct {
		name    string
		env     string // GOGC, "" for unset
		setting int
		want    int
	}{
		{name: "setting applies without GOGC", setting: 50, want: 50},
		{name: "GOGC in the environment wins", env: "100", setting: 50, want: 100},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.env != "" {
				t.Setenv("GOGC", tc.env)
			} else {
				t.Setenv("GOGC", "")
				unsetenv(t, "GOGC")
			}
			debug.SetGCPercent(100)
			if got := applyGCPercent(tc.setting, logger); got != tc.want {
				t.Errorf("applyGCPercent = %d, want %d", got, tc.want)
			}
			if got := debug.SetGCPercent(100); got != tc.want {
				t.Errorf("runtime GC percent %d, want %d", got, tc.want)
			}
		})
	}
}

// unsetenv removes a variable for the test; t.Setenv before it restores
// the previous value afterwards.
func unsetenv(t *testing.T, key string) {
	t.Helper()
	if err := os.Unsetenv(key); err != nil {
		t.Fatal(err)
	}
}
