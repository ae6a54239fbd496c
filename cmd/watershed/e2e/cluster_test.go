package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/watershed-dev/watershed/platform/bus"
	"github.com/watershed-dev/watershed/platform/config"
)

// The shape of TestJetStreamNodeLossLosesNothing: how long the cluster runs
// short of one node, and how long the pipeline runs before and after.
const (
	clusterWarmup    = 5 * time.Second
	clusterOutage    = 12 * time.Second
	clusterAfter     = 10 * time.Second
	clusterTick      = 250 * time.Millisecond
	loadTargets      = 6
	loadSeriesPerJob = 100
	loadInterval     = 500 * time.Millisecond
)

// TestJetStreamNodeLossLosesNothing runs the collector, the router and
// writer-mimir, each a Watershed process of its own as in a deployment
// (startAllInOne with one target: its own connection to the cluster,
// registry and HTTP server, in the test binary so that -race covers them
// and their counters stay readable after they stop), on a three-node
// JetStream cluster with every stream and bucket at three
// replicas, scraping six targets every 500 ms into a real Prometheus. One
// nats-server (neither the meta leader nor the leader of WS_RAW or
// WS_DEST_PROMETHEUS) is stopped for 12 s under load and started again on
// the same store directory, name and ports. Then the collector stops and
// the bus drains. Nothing may be lost: Prometheus holds exactly the
// samples the collector had JetStream store, each target's scrapes arrive
// in order with none missing, nothing is refused as out of order, and the
// only duplicates are resends Prometheus took as such.
func TestJetStreamNodeLossLosesNothing(t *testing.T) {
	testStart := time.Now()
	cluster := startNATSCluster(t, 3)
	js := clusterClient(t, cluster.clientURLs())
	p := startPrometheus(t)
	targets := startLoadTargets(t, loadTargets, loadSeriesPerJob)

	writer := startAllInOne(t, clusterConfig(t, cluster, p, targets), "writer-mimir")
	router := startAllInOne(t, clusterConfig(t, cluster, p, targets), "router")
	collector := startAllInOne(t, clusterConfig(t, cluster, p, targets), "node-collector")
	waitFor(t, 60*time.Second, "every load target in Prometheus", func() (bool, string) {
		n := len(p.query(t, `ws_cluster_scrape_seq`))
		return n == loadTargets, fmt.Sprintf("%d of %d targets", n, loadTargets)
	})
	pipelineUp := time.Now()

	watch := &freshness{p: p}
	watch.observe(t, "before", clusterWarmup, nil)

	services := map[string]*allInOne{"node-collector": collector, "router": router, "writer-mimir": writer}
	victim := chooseFollower(t, cluster, js, services, bus.RawStream, bus.DestStream(bus.DestinationPrometheus))
	metaAtStop := cluster.metaLeaderName()
	onVictim := connectedTo(services, victim)

	// The outage: the pipeline must keep delivering on two nodes of three.
	victim.stop()
	stopped := time.Now()
	failover := watch.observe(t, "outage", clusterOutage, func(newest time.Time) bool { return newest.After(stopped) })
	if failover < 0 {
		t.Errorf("no scrape taken after %s stopped reached Prometheus during its %s outage", victim.name, clusterOutage)
	}

	// The node comes back as the same peer and catches up.
	victim.start(t)
	restarted := time.Now()
	var rejoin time.Duration = -1
	watch.observe(t, "after", clusterAfter, func(time.Time) bool {
		if rejoin < 0 {
			if ok, _ := cluster.current(js, victim); ok {
				rejoin = time.Since(restarted)
			}
		}
		return false
	})
	if rejoin < 0 {
		waitFor(t, 60*time.Second, victim.name+" current in the meta group and both streams", func() (bool, string) {
			return cluster.current(js, victim)
		})
		rejoin = time.Since(restarted)
	}

	// The load stops; the collector's counters are then final.
	collector.stop(t)
	loadStopped := time.Now()
	published := collector.metric(t, "watershed_collector_samples_published_total", nil)
	stale := collector.metric(t, "watershed_collector_stale_markers_total", nil)
	dropped := collector.metric(t, "watershed_collector_samples_dropped_total", nil)
	publishRetries := collector.metric(t, "watershed_bus_publish_retries_total", nil)
	publishDuplicates := collector.metric(t, "watershed_bus_publish_duplicates_total", nil)

	// Drained: the work queue is empty, every consumer has acked
	// everything, and Prometheus holds every sample but staleness markers
	// (which it stores but does not count).
	want := published - stale
	var inProm float64
	drainedOK, drainState := pollUntil(60*time.Second, func() (bool, string) {
		backlog, err := busBacklog(js)
		if err != nil {
			return false, err.Error()
		}
		if backlog > 0 {
			return false, fmt.Sprintf("%d messages unacked on the bus", backlog)
		}
		inProm = promSamples(t, p)
		return inProm == want, fmt.Sprintf("Prometheus holds %v of %v samples", inProm, want)
	})
	drained := time.Now()
	if !drainedOK {
		// Report every figure below before failing.
		t.Errorf("the bus did not drain into Prometheus within 60s: %s", drainState)
	}

	routed := router.metric(t, "watershed_router_routed_items_total", map[string]string{"destination": bus.DestinationPrometheus})
	routerDropped := router.metric(t, "watershed_router_dropped_messages_total", nil)
	sent := writer.metric(t, "watershed_writer_items_sent_total", nil)
	resentHeld := writer.metric(t, "watershed_writer_items_resent_already_held_total", nil)
	rejectedOOO := writer.metric(t, "watershed_writer_items_rejected_total", map[string]string{"reason": "out_of_order"})
	rejected := writer.metric(t, "watershed_writer_items_rejected_total", nil)
	bufferDropped := writer.metric(t, "watershed_writer_messages_dropped_total", nil)
	retryable := writer.metric(t, "watershed_writer_requests_total", map[string]string{"result": "retryable"})
	writerLost := writer.metric(t, "watershed_writer_lost_deliveries_total", nil)
	routerLost := router.metric(t, "watershed_router_lost_deliveries_total", nil)
	// Prometheus registers this family at its first refusal: absent is 0.
	promOOO := p.selfMetric(t, "prometheus_tsdb_out_of_order_samples_total")
	promRefused := p.selfMetric(t, "prometheus_http_requests_total", `handler="/api/v1/write"`, `code="400"`)

	t.Logf("cluster %s; stopped %s (meta leader %s; %s connected to it), services up %s after start",
		strings.Join(cluster.names(), ","), victim.name, metaAtStop, orNone(onVictim), pipelineUp.Sub(testStart).Round(time.Millisecond))
	t.Logf("outage %s; first scrape after the stop delivered %s after it; %s current again %s after its restart; drain %s after the load stopped; whole test %s",
		restarted.Sub(stopped).Round(time.Millisecond), fmtDuration(failover), victim.name, rejoin.Round(time.Millisecond),
		drained.Sub(loadStopped).Round(time.Millisecond), time.Since(testStart).Round(time.Second))
	t.Logf("end-to-end lag (now - newest scrape in Prometheus), max: %s", watch.summary())
	t.Logf("samples: collector published %v (%v staleness markers), dropped %v, publish retries %v, publish duplicates %v; router routed %v, dropped %v messages, lost %v deliveries; writer sent %v, resent already held %v, rejected %v (out of order %v), retryable requests %v, buffer drops %v, lost %v deliveries; Prometheus holds %v, counted out of order %v, refused %v write requests",
		published, stale, dropped, publishRetries, publishDuplicates, routed, routerDropped, routerLost, sent, resentHeld, rejected, rejectedOOO, retryable, bufferDropped, writerLost, inProm, promOOO, promRefused)

	if dropped != 0 {
		t.Errorf("the collector dropped %v samples", dropped)
	}
	if routerDropped != 0 {
		t.Errorf("the router dropped %v messages", routerDropped)
	}
	if routed < published {
		t.Errorf("the router routed %v samples, fewer than the %v published", routed, published)
	}
	if rejected != 0 || bufferDropped != 0 {
		t.Errorf("writer refused %v samples for good (%v as out of order) and found %v messages dropped by the buffer", rejected, rejectedOOO, bufferDropped)
	}
	// At least once: every sample went out, some perhaps twice; Prometheus
	// keeps one of each (inProm == want above), so a resend can only have
	// been an identical sample or one refused as already held.
	if sent+resentHeld < published {
		t.Errorf("the writer sent %v and found %v already held, fewer than the %v published", sent, resentHeld, published)
	}
	if promOOO > resentHeld {
		t.Errorf("Prometheus counted %v out-of-order samples, more than the %v resent samples it already held", promOOO, resentHeld)
	}
	assertScrapesInOrder(t, p, targets)
}

// pollUntil polls cond until it holds or timeout passes, and returns
// whether it held and its last state; unlike waitFor it does not fail the
// test, so that the caller can report what it measured first.
func pollUntil(timeout time.Duration, cond func() (bool, string)) (bool, string) {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, state := cond()
		if ok || time.Now().After(deadline) {
			return ok, state
		}
		<-tick.C
	}
}

// natsNode is one server of the test's JetStream cluster. Its options are
// kept so that a restart comes back with the same name, ports and store
// directory, which is what makes it the same JetStream peer.
type natsNode struct {
	name string
	opts *natsserver.Options
	logs *syncBuffer
	srv  *natsserver.Server
}

// natsCluster is a JetStream cluster in the test process.
type natsCluster struct {
	nodes []*natsNode
}

// startNATSCluster starts size nats-servers routed to one another, on
// free loopback ports, and waits for a JetStream meta leader. A free port
// can be taken between picking it and binding it: then every server is
// shut down and the cluster started again on other ports (three tries).
func startNATSCluster(t *testing.T, size int) *natsCluster {
	t.Helper()
	logs := &syncBuffer{}
	for attempt := 1; ; attempt++ {
		c, err := tryNATSCluster(t, size, logs)
		if err == nil {
			t.Cleanup(c.shutdown)
			// Registered after the shutdown, so it runs before it: the
			// servers' own shutdown would fill the tail otherwise.
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("nats-server warnings, errors and leader changes (tail):\n%s", tail([]byte(notableNATSLines(logs.String())), 8000))
				}
			})
			waitFor(t, 30*time.Second, "a JetStream meta leader", func() (bool, string) {
				return c.metaLeader() != nil, "no meta leader yet"
			})
			return c
		}
		if attempt == 3 {
			t.Fatalf("JetStream cluster: %v", err)
		}
		t.Logf("JetStream cluster did not start (%v); trying other ports", err)
	}
}

func tryNATSCluster(t *testing.T, size int, logs *syncBuffer) (*natsCluster, error) {
	clientPorts, clusterPorts := make([]int, size), make([]int, size)
	routes := make([]string, size)
	for i := range size {
		clientPorts[i], clusterPorts[i] = freePort(t), freePort(t)
		routes[i] = fmt.Sprintf("nats-route://127.0.0.1:%d", clusterPorts[i])
	}
	c := &natsCluster{}
	for i := range size {
		name := fmt.Sprintf("n%d", i+1)
		n := &natsNode{name: name, logs: logs, opts: &natsserver.Options{
			ServerName: name,
			Host:       "127.0.0.1",
			Port:       clientPorts[i],
			Cluster:    natsserver.ClusterOpts{Name: "watershed-e2e", Host: "127.0.0.1", Port: clusterPorts[i]},
			// Every server lists every route, itself included (it skips
			// that one): JetStream sizes its meta group from the routes.
			Routes:             natsserver.RoutesFromStr(strings.Join(routes, ",")),
			JetStream:          true,
			StoreDir:           t.TempDir(),
			JetStreamMaxMemory: 64 << 20,
			JetStreamMaxStore:  2 << 30,
			NoSigs:             true,
		}}
		c.nodes = append(c.nodes, n)
		if err := n.launch(); err != nil {
			c.shutdown()
			return nil, err
		}
	}
	return c, nil
}

// freePort is a loopback port nobody listened on a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	_, port, err := net.SplitHostPort(freeAddr(t))
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// launch starts the server from a copy of its options (NewServer fills
// defaults in), logging into the cluster's log.
func (n *natsNode) launch() error {
	srv, err := natsserver.NewServer(n.opts.Clone())
	if err != nil {
		return fmt.Errorf("nats-server %s: %w", n.name, err)
	}
	srv.SetLogger(&natsLogger{name: n.name, out: n.logs}, false, false)
	go srv.Start()
	if !srv.ReadyForConnections(15 * time.Second) {
		srv.Shutdown()
		return fmt.Errorf("nats-server %s not ready on client port %d, cluster port %d", n.name, n.opts.Port, n.opts.Cluster.Port)
	}
	n.srv = srv
	return nil
}

// start starts the node again after stop.
func (n *natsNode) start(t *testing.T) {
	t.Helper()
	if err := n.launch(); err != nil {
		t.Fatal(err)
	}
}

// stop shuts the server down and waits until it is gone.
func (n *natsNode) stop() {
	if n.srv == nil {
		return
	}
	n.srv.Shutdown()
	n.srv.WaitForShutdown()
	n.srv = nil
}

func (c *natsCluster) shutdown() {
	for _, n := range c.nodes {
		n.stop()
	}
}

// clientURLs is the cluster's client URL list, as nats.url takes it.
func (c *natsCluster) clientURLs() string {
	urls := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		urls[i] = fmt.Sprintf("nats://127.0.0.1:%d", n.opts.Port)
	}
	return strings.Join(urls, ",")
}

func (c *natsCluster) names() []string {
	names := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		names[i] = n.name
	}
	return names
}

func (c *natsCluster) metaLeader() *natsNode {
	for _, n := range c.nodes {
		if n.srv != nil && n.srv.JetStreamIsLeader() {
			return n
		}
	}
	return nil
}

func (c *natsCluster) metaLeaderName() string {
	if l := c.metaLeader(); l != nil {
		return l.name
	}
	return "none"
}

// current tells whether n is back in the meta group and holds an up to
// date replica of the pipeline's two streams.
func (c *natsCluster) current(js jetstream.JetStream, n *natsNode) (bool, string) {
	if n.srv == nil || !n.srv.JetStreamIsCurrent() {
		return false, n.name + " not current in the meta group"
	}
	for _, name := range []string{bus.RawStream, bus.DestStream(bus.DestinationPrometheus)} {
		ci, err := streamCluster(js, name)
		if err != nil {
			return false, err.Error()
		}
		if ci.Leader == n.name {
			continue
		}
		i := slices.IndexFunc(ci.Replicas, func(r *jetstream.PeerInfo) bool { return r.Name == n.name })
		if i < 0 || !ci.Replicas[i].Current || ci.Replicas[i].Offline {
			return false, fmt.Sprintf("%s replica of %s not current", n.name, name)
		}
	}
	return true, ""
}

func streamCluster(js jetstream.JetStream, name string) (*jetstream.ClusterInfo, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", name, err)
	}
	ci := s.CachedInfo().Cluster
	if ci == nil || ci.Leader == "" {
		return nil, fmt.Errorf("stream %s has no leader", name)
	}
	return ci, nil
}

// chooseFollower picks a node that leads neither the meta group nor any of
// streams, so that its loss tests the followers' side (the consumers and
// key-value buckets it leads still move), preferring the one most services
// are connected to, so that they have to reconnect. With three nodes the
// meta leader and two stream leaders can sit on three different ones; then
// a stream leader that is not the meta leader steps down, before the
// outage.
func chooseFollower(t *testing.T, c *natsCluster, js jetstream.JetStream, services map[string]*allInOne, streams ...string) *natsNode {
	t.Helper()
	var chosen *natsNode
	waitFor(t, 30*time.Second, "a node leading neither the meta group nor a stream", func() (bool, string) {
		meta := c.metaLeader()
		if meta == nil {
			return false, "no meta leader"
		}
		leads := map[string]string{}
		for _, s := range streams {
			ci, err := streamCluster(js, s)
			if err != nil {
				return false, err.Error()
			}
			leads[ci.Leader] = s
		}
		for _, n := range c.nodes {
			if n != meta && leads[n.name] == "" && (chosen == nil || len(connectedTo(services, n)) > len(connectedTo(services, chosen))) {
				chosen = n
			}
		}
		if chosen != nil {
			return true, ""
		}
		for leader, s := range leads {
			if leader != meta.name {
				t.Logf("leaders: meta %s, streams %v; %s steps down from %s", meta.name, leads, leader, s)
				if err := stepDownStream(js, s); err != nil {
					return false, err.Error()
				}
				break
			}
		}
		return false, fmt.Sprintf("leaders: meta %s, streams %v", meta.name, leads)
	})
	return chosen
}

// connectedTo names the services whose bus connection is to n.
func connectedTo(services map[string]*allInOne, n *natsNode) []string {
	var names []string
	for name, a := range services {
		if a.proc.Env().Bus.Conn().ConnectedServerName() == n.name {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	return names
}

// stepDownStream asks a stream's leader to hand over to another replica.
func stepDownStream(js jetstream.JetStream, stream string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := js.Conn().RequestWithContext(ctx, "$JS.API.STREAM.LEADER.STEPDOWN."+stream, nil); err != nil {
		return fmt.Errorf("step down the leader of %s: %w", stream, err)
	}
	return nil
}

// clusterClient is the test's own connection to the cluster, to read
// stream and consumer state; it reconnects to another node as the
// services do.
func clusterClient(t *testing.T, urls string) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(urls, nats.MaxReconnects(-1), nats.ReconnectWait(250*time.Millisecond))
	if err != nil {
		t.Fatalf("connect to the cluster: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	return js
}

// busBacklog counts what the pipeline's consumers have not acknowledged:
// messages still in the WS_RAW work queue, and per consumer of the
// destination stream those not delivered or not acked.
func busBacklog(js jetstream.JetStream) (uint64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	raw, err := js.Stream(ctx, bus.RawStream)
	if err != nil {
		return 0, fmt.Errorf("stream %s: %w", bus.RawStream, err)
	}
	n := raw.CachedInfo().State.Msgs
	dest, err := js.Stream(ctx, bus.DestStream(bus.DestinationPrometheus))
	if err != nil {
		return 0, fmt.Errorf("destination stream: %w", err)
	}
	consumers := dest.ListConsumers(ctx)
	for ci := range consumers.Info() {
		n += ci.NumPending + uint64(ci.NumAckPending)
	}
	if err := consumers.Err(); err != nil {
		return 0, fmt.Errorf("consumers of the destination stream: %w", err)
	}
	return n, nil
}

// clusterConfig is one service's configuration: the cluster's client
// URLs, three replicas of every stream and bucket, the load targets.
func clusterConfig(t *testing.T, c *natsCluster, p *prom, targets []*loadTarget) *config.Config {
	cfg := baseConfig(t, t.TempDir(), p.url())
	cfg.NATS.URL = c.clientURLs()
	cfg.NATS.RawStream.Replicas = 3
	cfg.ExternalServices.Prometheus.Buffer.Replicas = 3
	// Within the test servers' JetStream storage.
	cfg.NATS.RawStream.MaxBytes = 256 << 20
	cfg.ExternalServices.Prometheus.Buffer.MaxBytes = 256 << 20
	cfg.Metrics.Kubelet.Enabled, cfg.Metrics.Cadvisor.Enabled = false, false
	addrs := make([]string, len(targets))
	for i, lt := range targets {
		addrs[i] = lt.addr
	}
	cfg.Metrics.StaticTargets = []config.StaticTarget{{Job: "cluster-load", Targets: addrs, ScrapeInterval: loadInterval}}
	return cfg
}

// loadTarget is a scrape target that numbers its scrapes: each answer
// carries ws_cluster_scrape_seq, 1, 2, 3, ..., and series more series
// with the same value, so that Prometheus shows which scrapes arrived.
type loadTarget struct {
	addr   string
	served atomic.Int64
}

func startLoadTargets(t *testing.T, n, series int) []*loadTarget {
	t.Helper()
	targets := make([]*loadTarget, n)
	for i := range targets {
		lt := &loadTarget{}
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			seq := lt.served.Add(1)
			var sb strings.Builder
			fmt.Fprintf(&sb, "# TYPE ws_cluster_scrape_seq gauge\nws_cluster_scrape_seq %d\n# TYPE ws_cluster_load gauge\n", seq)
			for s := range series {
				fmt.Fprintf(&sb, "ws_cluster_load{series=\"%d\"} %d\n", s, seq)
			}
			w.Header().Set("Content-Type", "text/plain; version=0.0.4")
			_, _ = w.Write([]byte(sb.String()))
		}))
		t.Cleanup(srv.Close)
		lt.addr = srv.Listener.Addr().String()
		targets[i] = lt
	}
	return targets
}

// freshness follows how far behind Prometheus is: the age of the newest
// load scrape it holds, sampled on a ticker, the maximum kept per phase.
type freshness struct {
	p      *prom
	phases []string
	maxLag map[string]time.Duration
}

// observe samples for d. until, if not nil, is given the newest scrape
// time at each sample; observe returns how long after its start until
// first held (-1 if never), and goes on observing for d regardless.
func (f *freshness) observe(t *testing.T, phase string, d time.Duration, until func(newest time.Time) bool) time.Duration {
	t.Helper()
	if f.maxLag == nil {
		f.maxLag = map[string]time.Duration{}
	}
	f.phases = append(f.phases, phase)
	start := time.Now()
	var first time.Duration = -1
	tick := time.NewTicker(clusterTick)
	defer tick.Stop()
	for now := range tick.C {
		v, ok := f.p.scalar(t, `max(timestamp(ws_cluster_scrape_seq))`)
		if ok {
			newest := time.UnixMilli(int64(v * 1000))
			f.maxLag[phase] = max(f.maxLag[phase], now.Sub(newest))
			if first < 0 && until != nil && until(newest) {
				first = now.Sub(start)
			}
		}
		if now.Sub(start) >= d {
			return first
		}
	}
	return first
}

func (f *freshness) summary() string {
	parts := make([]string, len(f.phases))
	for i, ph := range f.phases {
		parts[i] = fmt.Sprintf("%s %s", ph, f.maxLag[ph].Round(time.Millisecond))
	}
	return strings.Join(parts, ", ")
}

// promSamples counts the samples Prometheus holds, staleness markers
// excluded. They are counted here rather than with count_over_time, which
// drops the metric name and so cannot take up and scrape_duration_seconds
// of one target in one vector.
func promSamples(t *testing.T, p *prom) float64 {
	n := 0
	for _, s := range p.query(t, `{__name__=~".+"}[10m]`) {
		n += len(s.Values)
	}
	return float64(n)
}

// selfMetric sums the samples of a metric family on Prometheus's own
// /metrics (it does not scrape itself here) whose labels contain every
// want (name="value").
func (p *prom) selfMetric(t *testing.T, name string, want ...string) float64 {
	t.Helper()
	resp, err := http.Get(p.url() + "/metrics")
	if err != nil {
		t.Fatalf("prometheus metrics: %v", err)
	}
	defer resp.Body.Close()
	sum := 0.0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, name)
		if !ok || (rest != "" && rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		if slices.ContainsFunc(want, func(l string) bool { return !strings.Contains(rest, l) }) {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			t.Fatalf("prometheus metrics line %q: %v", line, err)
		}
		sum += v
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("prometheus metrics: %v", err)
	}
	return sum
}

// assertScrapesInOrder checks each target's numbered scrapes in
// Prometheus: in scrape order and none missing, except scrapes the
// collector itself did not complete (up == 0) and the last one, which the
// collector's shutdown may abandon after the target answered.
func assertScrapesInOrder(t *testing.T, p *prom, targets []*loadTarget) {
	t.Helper()
	seqs := map[string][][2]float64{}
	for _, s := range p.query(t, `ws_cluster_scrape_seq[10m]`) {
		seqs[s.Metric["instance"]] = s.Values
	}
	failed := map[string]int{}
	for _, s := range p.query(t, `up{job="cluster-load"}[10m]`) {
		for _, v := range s.Values {
			if v[1] == 0 {
				failed[s.Metric["instance"]]++
			}
		}
	}
	total, longest := 0, 0.0
	for _, lt := range targets {
		served := lt.served.Load()
		values := seqs[lt.addr]
		var prev float64
		missing := 0
		for i, v := range values {
			if i > 0 {
				longest = max(longest, v[0]-values[i-1][0])
			}
			if v[1] <= prev {
				t.Errorf("target %s: scrape %v after scrape %v", lt.addr, v[1], prev)
			}
			missing += int(v[1]-prev) - 1
			prev = v[1]
		}
		abandoned := int(served - int64(prev)) // after the last delivered one
		if missing > failed[lt.addr] || abandoned > 1 {
			t.Errorf("target %s served %d scrapes; Prometheus misses %d before the last it holds (%v), %d scrapes failed", lt.addr, served, missing, prev, failed[lt.addr])
		}
		total += len(values)
	}
	t.Logf("scrapes: %d numbered scrapes of %d targets in Prometheus, failed scrapes %v, longest gap between two scrapes of one target %.1fs", total, len(targets), failed, longest)
}

// notableNATSLines keeps the lines of the cluster's log that tell what
// happened to it: warnings, errors and leader changes.
func notableNATSLines(log string) string {
	var sb strings.Builder
	for line := range strings.Lines(log) {
		if strings.Contains(line, " [WRN] ") || strings.Contains(line, " [ERR] ") || strings.Contains(line, " [FTL] ") || strings.Contains(strings.ToLower(line), "leader") {
			sb.WriteString(line)
		}
	}
	return sb.String()
}

// natsLogger writes a nats-server's log into the cluster's log. Fatalf
// only logs: the default logger would exit the test binary.
type natsLogger struct {
	name string
	out  *syncBuffer
}

func (l *natsLogger) logf(level, format string, v []any) {
	fmt.Fprintf(l.out, "%s %s [%s] %s\n", time.Now().Format("15:04:05.000"), l.name, level, fmt.Sprintf(format, v...))
}

func (l *natsLogger) Noticef(format string, v ...any) { l.logf("INF", format, v) }
func (l *natsLogger) Warnf(format string, v ...any)   { l.logf("WRN", format, v) }
func (l *natsLogger) Fatalf(format string, v ...any)  { l.logf("FTL", format, v) }
func (l *natsLogger) Errorf(format string, v ...any)  { l.logf("ERR", format, v) }
func (l *natsLogger) Debugf(format string, v ...any)  { l.logf("DBG", format, v) }
func (l *natsLogger) Tracef(format string, v ...any)  { l.logf("TRC", format, v) }

func fmtDuration(d time.Duration) string {
	if d < 0 {
		return "never"
	}
	return d.Round(time.Millisecond).String()
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}
