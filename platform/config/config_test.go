package config

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// TestInvalidConfigs loads each file in testdata/invalid and compares the
// error with its golden file: each must name the key and, where it is in
// the file, its line.
func TestInvalidConfigs(t *testing.T) {
	files, err := filepath.Glob("testdata/invalid/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no test files: %v", err)
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".yaml")
		t.Run(name, func(t *testing.T) {
			_, err := LoadFile(f)
			if err == nil {
				t.Fatal("loaded without error")
			}
			golden := strings.TrimSuffix(f, ".yaml") + ".golden"
			got := err.Error() + "\n"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("no golden file (run with -update): %v", err)
			}
			if got != string(want) {
				t.Errorf("error differs from %s\ngot:  %s\nwant: %s", golden, got, want)
			}
		})
	}
}

func TestValidConfig(t *testing.T) {
	cfg, err := LoadFile("testdata/valid.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name      string
		got, want any
	}{
		{"cluster", cfg.Cluster.Name, "prod-eu"},
		{"partitions", cfg.NATS.Partitions, 32},
		{"embedded", cfg.NATS.Embedded(), false},
		{"url", cfg.ExternalServices.Prometheus.URL(), "https://mimir.example.com/api/v1/push"},
		{"maxBytes", uint64(cfg.ExternalServices.Prometheus.Buffer.MaxBytes), uint64(5 << 30)},
		{"discard", cfg.ExternalServices.Prometheus.Buffer.Discard, DiscardBlock},
		{"maxAge kept", cfg.ExternalServices.Prometheus.Buffer.MaxAge, 6 * time.Hour},
		{"default replicas kept", cfg.ExternalServices.Prometheus.Buffer.Replicas, 1},
		{"interval", cfg.Metrics.ScrapeInterval, 30 * time.Second},
		{"default timeout kept", cfg.Metrics.ScrapeTimeout, 10 * time.Second},
		{"targets", len(cfg.Metrics.StaticTargets[0].Targets), 2},
		{"labels", cfg.Metrics.StaticTargets[0].Labels["team"], "infra"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.got != c.want {
				t.Errorf("got %v, want %v", c.got, c.want)
			}
		})
	}
}

// TestExampleConfig keeps the example `make run` uses loadable.
func TestExampleConfig(t *testing.T) {
	if _, err := LoadFile("../../examples/local.yaml"); err != nil {
		t.Fatal(err)
	}
}

func TestFlagsOverrideFile(t *testing.T) {
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	cfg, err := FromFlags(fs, []string{"-config.file=testdata/valid.yaml", "-metrics.scrapeInterval=5s", "-cluster.name=override"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Metrics.ScrapeInterval != 5*time.Second || cfg.Cluster.Name != "override" {
		t.Errorf("flags did not override the file: interval %v, cluster %q", cfg.Metrics.ScrapeInterval, cfg.Cluster.Name)
	}
	if cfg.NATS.Partitions != 32 {
		t.Errorf("file value lost: partitions %d", cfg.NATS.Partitions)
	}
}

func TestInvalidFlagIsReported(t *testing.T) {
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(new(strings.Builder))
	_, err := FromFlags(fs, []string{"-config.file=testdata/valid.yaml", "-nats.partitions=0"})
	if err == nil || !strings.Contains(err.Error(), "nats.partitions: 0 is outside 1..1024") {
		t.Fatalf("got %v", err)
	}
}

func TestSecretsAreMasked(t *testing.T) {
	cfg := Default()
	if err := cfg.ExternalServices.Prometheus.BasicAuth.Password.Set("hunter2"); err != nil {
		t.Fatal(err)
	}
	out, err := Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), "hunter2") {
		t.Errorf("secret printed:\n%s", out)
	}
}

// TestEveryKeyIsDocumented keeps docs/configuration.md complete.
func TestEveryKeyIsDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	fs := flag.NewFlagSet("doc", flag.ContinueOnError)
	(&Config{}).RegisterFlags(fs)
	fs.VisitAll(func(f *flag.Flag) {
		if !strings.Contains(string(doc), "| `"+f.Name+"` |") {
			t.Errorf("key %s is not in docs/configuration.md", f.Name)
		}
	})
}

// TestBackendAuth: bearerToken and basicAuth sit directly under each
// backend, as in the k8s-monitoring values, and not both at once.
func TestBackendAuth(t *testing.T) {
	cfg := Default()
	err := Parse([]byte(`cluster: {name: x}
externalServices:
  prometheus: {host: "http://m:1", basicAuth: {username: u, password: p}}
  loki: {host: "http://l:1", bearerToken: t}
`), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ExternalServices.Prometheus.BasicAuth.Username != "u" || cfg.ExternalServices.Loki.BearerToken.String() != "t" {
		t.Errorf("auth not read: %+v %+v", cfg.ExternalServices.Prometheus.Backend, cfg.ExternalServices.Loki.Backend)
	}
	err = Parse([]byte(`cluster: {name: x}
externalServices:
  loki: {host: "http://l:1", bearerToken: t, basicAuth: {username: u}}
  prometheus: {host: "http://m:1"}
`), Default())
	if err == nil || !strings.Contains(err.Error(), "line 3: externalServices.loki.bearerToken: set bearerToken or basicAuth, not both") {
		t.Errorf("got %v", err)
	}
}
