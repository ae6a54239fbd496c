package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/watershed-dev/watershed/platform/config"
	"github.com/watershed-dev/watershed/platform/kubetest"
)

// natsUsers are the users of deploy/base/watershed-nats.conf.
var natsUsers = []string{"node-collector", "discovery", "router", "writer-mimir", "writer-loki", "writer-tempo"}

// startDeployedNATS runs a NATS server with the deployment's own
// configuration (users and permissions), on a random port.
func startDeployedNATS(t *testing.T) string {
	t.Helper()
	t.Setenv("POD_NAME", "nats-0")
	for _, u := range natsUsers {
		t.Setenv(strings.ToUpper(strings.ReplaceAll(u, "-", "_"))+"_PASSWORD", "pw-"+u)
	}
	opts, err := natsserver.ProcessConfigFile(filepath.Join("..", "..", "..", "deploy", "base", "watershed-nats.conf"))
	if err != nil {
		t.Fatalf("deploy/base/watershed-nats.conf: %v", err)
	}
	opts.Host, opts.Port, opts.HTTPPort = "127.0.0.1", -1, 0
	opts.StoreDir = t.TempDir()
	opts.NoSigs = true
	srv, err := natsserver.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server did not start")
	}
	t.Cleanup(srv.Shutdown)
	return srv.ClientURL()
}

// TestDeployedNATSPermissions runs each service in its own process as its
// own NATS user, with the permissions the deployment gives it, from a
// scrape and a log file to a real Prometheus and a real VictoriaLogs:
// every service can do its work, and a user cannot publish where it has
// no business.
func TestDeployedNATSPermissions(t *testing.T) {
	url := startDeployedNATS(t)
	// discovery runs against a real API server, so that it writes what it
	// writes in a cluster: assignments, pod metadata, cluster events.
	cluster := kubetest.Start(t)
	client, _ := kubeClient(t, cluster.Kubeconfig)
	ctx := context.Background()
	if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "monitoring"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "auth-node"},
		Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "127.0.0.1"}}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.CoreV1().Events("monitoring").Create(ctx, &corev1.Event{
		ObjectMeta:     metav1.ObjectMeta{Namespace: "monitoring", Name: "auth.started"},
		InvolvedObject: corev1.ObjectReference{Kind: "Pod", Namespace: "monitoring", Name: "auth-pod", APIVersion: "v1"},
		Reason:         "AuthTest", Message: "permissions test", Type: "Normal", LastTimestamp: metav1.Now(),
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Setenv("KUBECONFIG", cluster.Kubeconfig)
	t.Setenv("NODE_NAME", "auth-node")
	t.Setenv("POD_NAMESPACE", "monitoring")
	nodeAddr := startNodeExporter(t)
	p := startPrometheus(t)
	vl := startVictoriaLogs(t)
	logFile := filepath.Join(t.TempDir(), "app.log")
	var lines strings.Builder
	for i := range 100 {
		fmt.Fprintf(&lines, "%s stdout F %s\n", time.Now().UTC().Format(time.RFC3339Nano), lineText(i))
	}
	if err := os.WriteFile(logFile, []byte(lines.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	procs := map[string]*allInOne{}
	ts := startTraceServer(t)
	var routerCfg *config.Config
	for _, user := range []string{"router", "writer-mimir", "writer-loki", "writer-tempo", "discovery", "node-collector"} {
		cfg := baseConfig(t, t.TempDir(), p.url())
		// The router's receivers publish spans, OTLP metrics and logs to
		// WS_RAW; writer-tempo acks on WS_DEST_TEMPO.
		tracesConfig(t, cfg, ts.addr)
		cfg.ExternalServices.Tempo.Buffer.MaxBytes = 256 << 20
		if user == "router" {
			routerCfg = cfg
		}
		cfg.NATS.URL = url
		// Within the deployment's max_file_store, as its watershed.yaml is.
		cfg.NATS.RawStream.MaxBytes = 256 << 20
		cfg.ExternalServices.Prometheus.Buffer.MaxBytes = 1 << 30
		cfg.ExternalServices.Loki.Buffer.MaxBytes = 1 << 30
		cfg.NATS.Credentials.User = user
		if err := cfg.NATS.Credentials.Password.Set("pw-" + user); err != nil {
			t.Fatal(err)
		}
		cfg.Metrics.StaticTargets = []config.StaticTarget{{Job: "node", Targets: []string{nodeAddr}}}
		cfg.Metrics.Kubelet.Enabled, cfg.Metrics.Cadvisor.Enabled = false, false // no kubelet here
		cfg.Logs.Enabled = true
		cfg.Logs.PodLogs.Enabled = false
		cfg.Logs.Files = []config.LogFile{{Path: logFile, Format: config.LogFormatCRI, Labels: map[string]string{"job": "auth"}}}
		cfg.ExternalServices.Loki.Host = "http://" + vl.addr
		cfg.ExternalServices.Loki.WriteEndpoint = "/insert/loki/api/v1/push"
		procs[user] = startAllInOne(t, cfg, user)
	}
	waitFor(t, 60*time.Second, "node exporter samples in Prometheus", func() (bool, string) {
		v, ok := p.scalar(t, `up{job="node"}`)
		return ok && v == 1, fmt.Sprintf("up=%v present=%v", v, ok)
	})
	waitFor(t, 60*time.Second, "the log lines in VictoriaLogs", func() (bool, string) {
		got, err := vl.query(t)
		if err != nil {
			return false, err.Error()
		}
		event := 0
		for _, e := range got {
			if strings.Contains(e.Msg, "reason=AuthTest") {
				event++
			}
		}
		return len(got) == 101 && event == 1, fmt.Sprintf("%d of 100 lines and the event (%d)", len(got)-event, event)
	})

	// The router's receivers may publish to the raw stream, writer-tempo
	// may export and ack.
	postOTLP(t, "http://"+routerCfg.Receivers.Address(routerCfg.Receivers.HTTP)+"/v1/traces", otlpSpans("auth-span"))
	waitFor(t, 30*time.Second, "the span at the trace server", func() (bool, string) {
		n := len(ts.named("auth-span"))
		return n == 1, fmt.Sprintf("%d spans", n)
	})

	// Every ack went through: the work queue is empty and no consumer
	// waits for an ack (a denied $JS.ACK would leave them pending).
	waitFor(t, 30*time.Second, "every message acknowledged", func() (bool, string) {
		raw := procs["router"].metric(t, "watershed_bus_stream_messages", map[string]string{"stream": "WS_RAW"})
		pending := procs["router"].metric(t, "watershed_bus_consumer_ack_pending_messages", nil)
		return raw == 0 && pending == 0, fmt.Sprintf("WS_RAW holds %v, %v acks pending", raw, pending)
	})

	for user, a := range procs {
		if strings.Contains(strings.ToLower(a.logs.String()), "permissions violation") {
			t.Errorf("%s hit a permissions violation:\n%s", user, tail([]byte(a.logs.String()), 2000))
		}
	}

	// A collector may not write into a destination stream.
	violations := make(chan error, 4)
	nc, err := nats.Connect(url, nats.UserInfo("node-collector", "pw-node-collector"),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { violations <- err }))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if err := nc.Publish("ws.dest.prometheus.0", []byte("x")); err != nil {
		t.Fatal(err)
	}
	_ = nc.Flush()
	select {
	case err := <-violations:
		if !errors.Is(err, nats.ErrPermissionViolation) && !strings.Contains(strings.ToLower(err.Error()), "permissions violation") {
			t.Errorf("publish to ws.dest as node-collector: %v, want a permissions violation", err)
		}
	case <-time.After(10 * time.Second):
		t.Error("node-collector could publish to ws.dest.prometheus.0")
	}

	// Nobody may throw the buffer away.
	for _, user := range natsUsers {
		nc, err := nats.Connect(url, nats.UserInfo(user, "pw-"+user))
		if err != nil {
			t.Fatal(err)
		}
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		// Refused requests get no answer: the call ends at its deadline.
		dctx, cancel := context.WithTimeout(ctx, time.Second)
		if err := js.DeleteStream(dctx, "WS_DEST_PROMETHEUS"); err == nil {
			t.Errorf("%s deleted WS_DEST_PROMETHEUS", user)
		}
		cancel()
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if _, err := js.Stream(sctx, "WS_DEST_PROMETHEUS"); err != nil {
			t.Errorf("WS_DEST_PROMETHEUS after %s's attempt to delete it: %v", user, err)
		}
		cancel()
		nc.Close()
	}
}
