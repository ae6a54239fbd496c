package main

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// runCatchup measures how fast the pipeline drains its buffer after an
// outage: the remote-write receiver answers 503 for -outage while the
// targets are scraped as usual, then comes back; the bench times how long
// writer-mimir takes to deliver everything published until then, and its
// rate against the live rate.
func runCatchup(o options) error {
	targets, err := serveTargets(o.targets, o.series)
	if err != nil {
		return err
	}
	recv := &receiver{count: countSamples}
	recv.down.Store(true)
	recvAddr, err := serve(recv)
	if err != nil {
		return err
	}
	dir, httpAddr, cleanup, err := workspace("watershed-bench-catchup-")
	if err != nil {
		return err
	}
	defer cleanup()
	cfgFile := filepath.Join(dir, "bench.yaml")
	if err := os.WriteFile(cfgFile, []byte(benchConfig(o, dir, httpAddr, targets, recvAddr)), 0o644); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.outage+30*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, o.binary, "run", "-config.file="+cfgFile)
	logFile, err := os.Create(filepath.Join(dir, "watershed.log"))
	if err != nil {
		return err
	}
	defer logFile.Close()
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() { _ = cmd.Process.Signal(os.Interrupt); _ = cmd.Wait() }()

	time.Sleep(o.outage) // the outage: a benchmark phase, not synchronisation
	published := counterSum(httpAddr, "watershed_collector_samples_published_total")
	sent0 := counterSum(httpAddr, `watershed_writer_items_sent_total{destination="prometheus"}`)
	cpu0, err := cpuSeconds(cmd.Process.Pid)
	if err != nil {
		return err
	}
	start := time.Now()
	recv.down.Store(false)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	sent := sent0
	for sent < published {
		if time.Since(start) > 30*time.Minute {
			return fmt.Errorf("backlog not drained in 30 minutes: %.0f of %.0f", sent, published)
		}
		<-tick.C
		sent = counterSum(httpAddr, `watershed_writer_items_sent_total{destination="prometheus"}`)
	}
	elapsed := time.Since(start)
	cpu1, err := cpuSeconds(cmd.Process.Pid)
	if err != nil {
		return err
	}
	rss, err := peakRSS(cmd.Process.Pid)
	if err != nil {
		return err
	}
	live := float64(o.targets*(o.series+5)) / o.interval.Seconds()
	catchup := (sent - sent0) / elapsed.Seconds()
	fmt.Printf("catch-up after a %s outage: %d targets x %d series every %s (live %.0f samples/s), one writer-mimir in the all-in-one\n",
		o.outage, o.targets, o.series, o.interval, live)
	fmt.Printf("| backlog at recovery (samples) | drained in | delivered/s while catching up | x live rate | cores used | peak RSS |\n")
	fmt.Printf("| --- | --- | --- | --- | --- | --- |\n")
	fmt.Printf("| %.0f | %s | %.0f | %.1f | %.2f | %.1f MiB |\n", published-sent0, elapsed.Round(100*time.Millisecond), catchup, catchup/live,
		(cpu1-cpu0)/elapsed.Seconds(), float64(rss)/(1<<20))
	fmt.Println(pipelineState(httpAddr))
	if rejected := recv.rejected.Load(); rejected > 0 {
		return fmt.Errorf("receiver refused %d requests", rejected)
	}
	return nil
}

// counterSum adds up the samples of a series (or family) on /metrics
// whose line starts with name.
func counterSum(httpAddr, name string) float64 {
	resp, err := http.Get("http://" + httpAddr + "/metrics")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	total := 0.0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name) {
			continue
		}
		rest := line[len(name):]
		if len(rest) > 0 && rest[0] != ' ' && rest[0] != '{' {
			continue // a longer name
		}
		if v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64); err == nil {
			total += v
		}
	}
	return total
}
