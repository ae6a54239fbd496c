package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/watershed-dev/watershed/platform/config"
)

// The side-by-side runs (-signal=compare-metrics, compare-logs,
// compare-traces) start each agent in turn against the same load and the
// same counting receiver, measure the same window, and print one table.
// Every agent runs as its own processes; CPU and peak RSS are read from
// /proc for each of them and summed, so a pipeline of several processes
// (Watershed in microservices mode, with its nats-server) pays for all.

// agent is one contender of a side-by-side run.
type agent struct {
	name string
	// start launches the agent's processes in dir; the run stops them.
	start func(ctx context.Context, dir string) ([]*agentProcess, error)
}

// agentProcess is one process of an agent, with the role its CPU is
// reported under (collector, router, bus...).
type agentProcess struct {
	role string
	cmd  *exec.Cmd
	log  *os.File
}

// startAgentProcess runs binary with args in dir, its output in
// dir/<role>.log.
func startAgentProcess(ctx context.Context, dir, role, binary string, args ...string) (*agentProcess, error) {
	return startAgentProcessEnv(ctx, dir, role, binary, nil, args...)
}

// startAgentProcessEnv is startAgentProcess with env added to this
// process's environment.
func startAgentProcessEnv(ctx context.Context, dir, role, binary string, env []string, args ...string) (*agentProcess, error) {
	logFile, err := os.Create(filepath.Join(dir, role+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Dir = dir
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// The agent's processes stop with a signal of their own at the end of
	// a run; the context's kill is the last resort.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGKILL) }
	if err := cmd.Start(); err != nil {
		_ = logFile.Close()
		return nil, fmt.Errorf("start %s: %w", binary, err)
	}
	return &agentProcess{role: role, cmd: cmd, log: logFile}, nil
}

// stop asks the process to stop and kills it after 15 s.
func (p *agentProcess) stop() {
	done := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(done) }()
	_ = p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-done
	}
	_ = p.log.Close()
}

// startWatershed runs the all-in-one, `watershed run`, with the
// configuration cfg.
func startWatershed(ctx context.Context, o options, dir, role, cfg string) (*agentProcess, error) {
	cfgFile := filepath.Join(dir, role+".yaml")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	return startAgentProcess(ctx, dir, role, o.binary, "run", "-config.file="+cfgFile)
}

// startService runs one service of microservices mode from its own binary
// (make build's bin/<service>, built from services/<service>/cmd, as the
// deployment's image of it is), not the all-in-one binary with -target:
// a process of a Kubernetes deployment holds only its service's code.
func startService(ctx context.Context, o options, dir, service, cfg string) (*agentProcess, error) {
	bin := filepath.Join(o.services, service)
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("the %s binary of microservices mode (make build makes it; -services names its directory): %w", service, err)
	}
	cfgFile := filepath.Join(dir, service+".yaml")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	return startAgentProcess(ctx, dir, service, bin, "-config.file="+cfgFile)
}

// startNATSServer runs an external nats-server with JetStream (file
// storage under dir) for Watershed in microservices mode, and returns its
// client address once it accepts connections.
func startNATSServer(ctx context.Context, o options, dir string) (*agentProcess, string, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, "", err
	}
	host, port, _ := net.SplitHostPort(addr)
	// As deploy/base/nats.yaml runs it (TestNATSServerGarbageCollection):
	// at server.gcPercent's default, the Watershed processes' garbage
	// collector target, unless the bench's environment sets one.
	var env []string
	if _, ok := os.LookupEnv("GOGC"); !ok {
		env = []string{"GOGC=" + strconv.Itoa(config.Default().Server.GCPercent)}
	}
	p, err := startAgentProcessEnv(ctx, dir, "nats-server", o.natsServer, env, "-js", "-sd", filepath.Join(dir, "jetstream"), "-a", host, "-p", port)
	if err != nil {
		return nil, "", err
	}
	if err := awaitListening(addr, 30*time.Second); err != nil {
		p.stop()
		return nil, "", fmt.Errorf("nats-server: %w", err)
	}
	return p, addr, nil
}

// awaitListening polls addr until it accepts a connection.
func awaitListening(addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			return c.Close()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not listening after %s: %w", addr, timeout, err)
		}
		time.Sleep(50 * time.Millisecond) // polling with a deadline
	}
}

// agentResult is what one agent's run cost over the measured window.
type agentResult struct {
	name      string
	delivered float64
	elapsed   time.Duration
	cpu       float64            // CPU-seconds of all the agent's processes
	cpuByRole map[string]float64 // the same, per process role
	roles     []string           // in start order
	rss       int64              // sum of the processes' peak RSS
	rssByRole map[string]int64   // the same, per process role
	extra     string             // what the signal adds (latency)
	err       error
}

// window is the measured part of a run, given to the signal's hooks.
type window struct {
	// begin is called as the window opens, end as it closes (what it
	// returns is the result's extra); either may be nil.
	begin func()
	end   func() string
	// prepare, if set, readies dir before the agent starts (the files it
	// will tail); load, if set, runs beside the agent from its start until
	// the run ends (writing files, sending spans).
	prepare func(dir string) error
	load    func(ctx context.Context, dir string) error
}

// runAgent starts a, waits o.warmup, measures o.duration, and stops it.
// counter is the receiver's count of delivered items.
func runAgent(ctx context.Context, o options, a agent, counter func() int64, w window) (res agentResult) {
	res = agentResult{name: a.name, cpuByRole: map[string]float64{}, rssByRole: map[string]int64{}}
	dir, err := os.MkdirTemp("", "watershed-compare-")
	if err != nil {
		res.err = err
		return res
	}
	defer os.RemoveAll(dir)
	if w.prepare != nil {
		if err := w.prepare(dir); err != nil {
			res.err = err
			return res
		}
	}
	loadErr := make(chan error, 1)
	loadCtx, stopLoad := context.WithCancel(ctx)
	if w.load != nil {
		go func() { loadErr <- w.load(loadCtx, dir) }()
	} else {
		loadErr <- nil
	}
	defer func() {
		stopLoad()
		if err := <-loadErr; err != nil && res.err == nil && !errors.Is(err, context.Canceled) {
			res.err = fmt.Errorf("load: %w", err)
		}
	}()
	procs, err := a.start(ctx, dir)
	defer func() {
		for i := len(procs) - 1; i >= 0; i-- { // the bus last
			procs[i].stop()
		}
	}()
	if err != nil {
		res.err = err
		return res
	}
	time.Sleep(o.warmup) // a benchmark phase, not synchronisation
	if err := alive(procs); err != nil {
		res.err = err
		return res
	}
	cpu0, err := cpuByProcess(procs)
	if err != nil {
		res.err = err
		return res
	}
	if w.begin != nil {
		w.begin()
	}
	count0, start := counter(), time.Now()
	time.Sleep(o.duration) // the measured window
	cpu1, err := cpuByProcess(procs)
	if err != nil {
		res.err = fmt.Errorf("%w (%v)", err, alive(procs))
		return res
	}
	res.delivered, res.elapsed = float64(counter()-count0), time.Since(start)
	if w.end != nil {
		res.extra = w.end()
	}
	for i, p := range procs {
		c := cpu1[i] - cpu0[i]
		res.cpu += c
		if _, seen := res.cpuByRole[p.role]; !seen {
			res.roles = append(res.roles, p.role)
		}
		res.cpuByRole[p.role] += c
		rss, err := peakRSS(p.cmd.Process.Pid)
		if err != nil {
			res.err = err
			return res
		}
		res.rss += rss
		res.rssByRole[p.role] += rss
	}
	if res.delivered == 0 {
		res.err = fmt.Errorf("nothing delivered; %s", logTails(procs))
	}
	return res
}

// alive is an error naming the processes that have exited, with the end
// of their logs.
func alive(procs []*agentProcess) error {
	var dead []*agentProcess
	for _, p := range procs {
		if err := p.cmd.Process.Signal(syscall.Signal(0)); err != nil {
			dead = append(dead, p)
		}
	}
	if len(dead) == 0 {
		return nil
	}
	return errors.New("exited: " + logTails(dead))
}

func logTails(procs []*agentProcess) string {
	var b strings.Builder
	for _, p := range procs {
		out, _ := os.ReadFile(p.log.Name())
		fmt.Fprintf(&b, "\n--- %s log (tail):\n%s", p.role, tail(out, 1500))
	}
	return b.String()
}

func cpuByProcess(procs []*agentProcess) ([]float64, error) {
	out := make([]float64, len(procs))
	for i, p := range procs {
		c, err := cpuSeconds(p.cmd.Process.Pid)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p.role, err)
		}
		out[i] = c
	}
	return out, nil
}

// roleShares is the share of each process role in an agent's CPU, for
// agents of more than one process.
func roleShares(r agentResult) string {
	if len(r.roles) < 2 || r.cpu == 0 {
		return ""
	}
	var parts []string
	for _, role := range r.roles {
		parts = append(parts, fmt.Sprintf("%s %.0f%%", role, 100*r.cpuByRole[role]/r.cpu))
	}
	return strings.Join(parts, ", ")
}

// roleRSS is each process role's peak RSS, for agents of more than one
// process.
func roleRSS(r agentResult) string {
	if len(r.roles) < 2 {
		return ""
	}
	var parts []string
	for _, role := range r.roles {
		parts = append(parts, fmt.Sprintf("%s %s", role, mib(r.rssByRole[role])))
	}
	return strings.Join(parts, ", ")
}

// column is one column of a comparison table.
type column struct {
	head  string
	value func(r agentResult) string
}

// printTable prints one row per agent; failed agents get their error.
func printTable(results []agentResult, cols []column) {
	heads := []string{"agent"}
	for _, c := range cols {
		heads = append(heads, c.head)
	}
	fmt.Printf("| %s |\n", strings.Join(heads, " | "))
	fmt.Printf("|%s\n", strings.Repeat(" --- |", len(heads)))
	for _, r := range results {
		row := []string{r.name}
		if r.err != nil {
			row = append(row, "failed: "+strings.ReplaceAll(firstLine(r.err.Error()), "|", "/"))
			fmt.Printf("| %s |\n", strings.Join(row, " | "))
			continue
		}
		for _, c := range cols {
			row = append(row, c.value(r))
		}
		fmt.Printf("| %s |\n", strings.Join(row, " | "))
	}
	for _, r := range results {
		if r.err != nil {
			fmt.Printf("\n%s failed: %v\n", r.name, r.err)
		}
	}
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// perMillionCPU is CPU-seconds per million items delivered.
func perMillionCPU(r agentResult) float64 { return r.cpu / (r.delivered / 1e6) }

// ratioTo is a's value over the reference's, "1.00x" for the reference.
func ratioTo(ref *agentResult, value func(agentResult) float64) func(agentResult) string {
	return func(r agentResult) string {
		if ref == nil || ref.err != nil || value(*ref) == 0 {
			return "n/a"
		}
		return fmt.Sprintf("%.2fx", value(r)/value(*ref))
	}
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// runAgents runs each agent in turn and returns their results, the
// failures among them included.
func runAgents(o options, agents []agent, counter func() int64, w window) []agentResult {
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(len(agents))*(o.warmup+o.duration+2*time.Minute))
	defer cancel()
	var results []agentResult
	for _, a := range agents {
		fmt.Fprintf(os.Stderr, "bench: %s: %s warm-up, %s measured\n", a.name, o.warmup, o.duration)
		r := runAgent(ctx, o, a, counter, w)
		if r.err != nil {
			fmt.Fprintf(os.Stderr, "bench: %s failed: %v\n", a.name, r.err)
		}
		results = append(results, r)
	}
	return results
}

// selectedAgents keeps the agents named in o.agents (all when empty).
func selectedAgents(o options, all []agent) []agent {
	if o.agents == "" {
		return all
	}
	var out []agent
	for _, a := range all {
		for _, want := range strings.Split(o.agents, ",") {
			if strings.HasPrefix(a.name, strings.TrimSpace(want)) {
				out = append(out, a)
				break
			}
		}
	}
	return out
}
