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
// the -writers replicas of writer-mimir (one in the all-in-one, the
// others in processes of their own on its bus) take to deliver everything
// published until then, and their rate against the live rate.
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
	natsAddr, err := freeAddr()
	if err != nil {
		return err
	}
	cfg := strings.Replace(benchConfig(o, dir, httpAddr, targets, recvAddr), `listenAddress: "127.0.0.1:-1"`, fmt.Sprintf("listenAddress: %q", natsAddr), 1)
	ctx, cancel := context.WithTimeout(context.Background(), o.outage+30*time.Minute)
	defer cancel()
	procs := []*benchProcess{}
	defer func() {
		for _, p := range procs {
			p.stop()
		}
	}()
	allInOne, err := startBenchProcess(ctx, o.binary, filepath.Join(dir, "all"), cfg, httpAddr, "all")
	if err != nil {
		return err
	}
	procs = append(procs, allInOne)
	for i := 1; i < o.writers; i++ {
		addr, err := freeAddr()
		if err != nil {
			return err
		}
		wcfg := fmt.Sprintf(`cluster: {name: bench}
server: {httpListenAddress: %q, logLevel: warn}
nats: {url: "nats://%s"}
externalServices:
  prometheus: {host: "http://%s", writeEndpoint: /api/v1/write}
`, addr, natsAddr, recvAddr)
		w, err := startBenchProcess(ctx, o.binary, filepath.Join(dir, fmt.Sprintf("writer-%d", i)), wcfg, addr, "writer-mimir")
		if err != nil {
			return err
		}
		procs = append(procs, w)
	}
	sentByAll := func() float64 {
		total := 0.0
		for _, p := range procs {
			total += counterSum(p.httpAddr, `watershed_writer_items_sent_total{destination="prometheus"}`)
		}
		return total
	}
	cpuOfAll := func() (float64, error) {
		total := 0.0
		for _, p := range procs {
			c, err := cpuSeconds(p.cmd.Process.Pid)
			if err != nil {
				return 0, err
			}
			total += c
		}
		return total, nil
	}

	time.Sleep(o.outage) // the outage: a benchmark phase, not synchronisation
	published := counterSum(httpAddr, "watershed_collector_samples_published_total")
	sent0 := sentByAll()
	cpu0, err := cpuOfAll()
	if err != nil {
		return err
	}
	start := time.Now()
	recv.down.Store(false)
	if o.profile != "" {
		// The first 20 s of the catch-up, in the all-in-one.
		go func() {
			if err := fetchProfile(httpAddr, 20*time.Second, o.profile); err != nil {
				fmt.Fprintln(os.Stderr, "cpu profile:", err)
			}
		}()
	}
	// Each look at /metrics costs the process a walk of the bus's state;
	// twice a second keeps that out of what is measured.
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	sent := sent0
	for sent < published {
		if time.Since(start) > 30*time.Minute {
			return fmt.Errorf("backlog not drained in 30 minutes: %.0f of %.0f", sent, published)
		}
		<-tick.C
		sent = sentByAll()
	}
	elapsed := time.Since(start)
	cpu1, err := cpuOfAll()
	if err != nil {
		return err
	}
	var rss int64
	for _, p := range procs {
		r, err := peakRSS(p.cmd.Process.Pid)
		if err != nil {
			return err
		}
		rss += r
	}
	live := float64(o.targets*(o.series+5)) / o.interval.Seconds()
	catchup := (sent - sent0) / elapsed.Seconds()
	fmt.Printf("catch-up after a %s outage: %d targets x %d series every %s (live %.0f samples/s), %d writer-mimir replica(s) (one in the all-in-one)\n",
		o.outage, o.targets, o.series, o.interval, live, o.writers)
	fmt.Printf("| backlog at recovery (samples) | drained in | delivered/s while catching up | x live rate | cores used (all processes) | peak RSS (sum) |\n")
	fmt.Printf("| --- | --- | --- | --- | --- | --- |\n")
	fmt.Printf("| %.0f | %s | %.0f | %.1f | %.2f | %.1f MiB |\n", published-sent0, elapsed.Round(100*time.Millisecond), catchup, catchup/live,
		(cpu1-cpu0)/elapsed.Seconds(), float64(rss)/(1<<20))
	fmt.Println(pipelineState(httpAddr))
	if rejected := recv.rejected.Load(); rejected > 0 {
		return fmt.Errorf("receiver refused %d requests", rejected)
	}
	return nil
}

// benchProcess is a watershed process of a bench run.
type benchProcess struct {
	cmd      *exec.Cmd
	httpAddr string
	log      *os.File
}

func startBenchProcess(ctx context.Context, binary, dir, cfg, httpAddr, target string) (*benchProcess, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	cfgFile := filepath.Join(dir, "bench.yaml")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	logFile, err := os.Create(filepath.Join(dir, "watershed.log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, binary, "run", "-config.file="+cfgFile, "-target="+target)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		_ = logFile.Close()
		return nil, fmt.Errorf("start %s: %w", binary, err)
	}
	return &benchProcess{cmd: cmd, httpAddr: httpAddr, log: logFile}, nil
}

func (p *benchProcess) stop() {
	_ = p.cmd.Process.Signal(os.Interrupt)
	_ = p.cmd.Wait()
	_ = p.log.Close()
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
