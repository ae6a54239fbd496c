package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// measurement is what one run of the watershed process cost over the
// measured window, and how much its counter moved.
type measurement struct {
	delivered float64 // counter increase over the window
	elapsed   time.Duration
	cpu       float64 // seconds, user+system
	rss       int64   // peak, bytes
}

// measure runs `watershed run` with the configuration cfg (its HTTP server
// on httpAddr) in dir, waits o.warmup, then reads counter and the
// process's CPU time across o.duration (writing a CPU profile when asked),
// then calls report, if any, while the process still runs. The process is
// stopped on return.
func measure(o options, dir, httpAddr, cfg string, counter func() int64, report func(), extraArgs ...string) (measurement, error) {
	var m measurement
	cfgFile := filepath.Join(dir, "bench.yaml")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o644); err != nil {
		return m, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.warmup+o.duration+time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, o.binary, append([]string{"run", "-config.file=" + cfgFile}, extraArgs...)...)
	logFile, err := os.Create(filepath.Join(dir, "watershed.log"))
	if err != nil {
		return m, err
	}
	defer logFile.Close()
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		return m, fmt.Errorf("start %s: %w", o.binary, err)
	}
	defer func() {
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
	}()

	time.Sleep(o.warmup) // a benchmark phase, not synchronisation
	cpu0, err := cpuSeconds(cmd.Process.Pid)
	if err != nil {
		return m, err
	}
	count0, start := counter(), time.Now()
	profileDone := make(chan error, 1)
	if o.profile != "" {
		go func() { profileDone <- fetchProfile(httpAddr, o.duration, o.profile) }()
	} else {
		profileDone <- nil
	}
	time.Sleep(o.duration)
	cpu1, err := cpuSeconds(cmd.Process.Pid)
	if err != nil {
		return m, err
	}
	m.delivered, m.elapsed, m.cpu = float64(counter()-count0), time.Since(start), cpu1-cpu0
	if m.rss, err = peakRSS(cmd.Process.Pid); err != nil {
		return m, err
	}
	if err := <-profileDone; err != nil {
		return m, fmt.Errorf("cpu profile: %w", err)
	}
	if o.heapProfile != "" {
		if err := fetchURL("http://"+httpAddr+"/debug/pprof/heap", o.heapProfile); err != nil {
			return m, fmt.Errorf("heap profile: %w", err)
		}
	}
	if report != nil {
		report()
	}
	if m.delivered == 0 {
		log, _ := os.ReadFile(logFile.Name())
		return m, fmt.Errorf("nothing delivered; watershed log:\n%s", tail(log, 4000))
	}
	return m, nil
}
