package deploy_test

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	natsserver "github.com/nats-io/nats-server/v2/server"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/watershed-dev/watershed/platform/config"
)

// natsOptions reads the rendered nats-config ConfigMap with nats-server's
// own parser.
func natsOptions(t *testing.T, r *rendered) *natsserver.Options {
	t.Helper()
	t.Setenv("POD_NAME", "nats-0")
	for _, u := range watershedComponents {
		t.Setenv(strings.ToUpper(strings.ReplaceAll(u, "-", "_"))+"_PASSWORD", "x")
	}
	for _, o := range r.all("ConfigMap") {
		cm := o.(*corev1.ConfigMap)
		if cm.Labels["app.kubernetes.io/part-of"] == "" || len(cm.Data["nats.conf"]) == 0 {
			continue
		}
		dir := t.TempDir()
		for name, data := range cm.Data {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		opts, err := natsserver.ProcessConfigFile(filepath.Join(dir, "nats.conf"))
		if err != nil {
			t.Fatalf("%s: %v", cm.Name, err)
		}
		return opts
	}
	t.Fatal("no nats-config ConfigMap")
	return nil
}

// The streams' limits fit the JetStream store, and the store fits the
// volume: otherwise stream creation fails with "insufficient storage
// resources", or the disk fills.
func TestNATSStoreFitsStreams(t *testing.T) {
	for name, r := range overlays(t) {
		t.Run(name, func(t *testing.T) {
			cfg := configOf(t, r)
			opts := natsOptions(t, r)
			if !opts.JetStream {
				t.Fatal("JetStream is off")
			}
			// writer-tempo creates WS_DEST_TEMPO whether or not traces are on.
			es := cfg.ExternalServices
			streams := int64(cfg.NATS.RawStream.MaxBytes) + int64(es.Prometheus.Buffer.MaxBytes) + int64(es.Loki.Buffer.MaxBytes) + int64(es.Tempo.Buffer.MaxBytes)
			if streams > opts.JetStreamMaxStore {
				t.Errorf("streams may hold %d bytes, max_file_store is %d", streams, opts.JetStreamMaxStore)
			}
			for _, o := range r.all("StatefulSet") {
				s := o.(*appsv1.StatefulSet)
				if s.Name != "nats" {
					continue
				}
				volume := s.Spec.VolumeClaimTemplates[0].Spec.Resources.Requests[corev1.ResourceStorage]
				if opts.JetStreamMaxStore > volume.Value() {
					t.Errorf("max_file_store %d is larger than the volume %s", opts.JetStreamMaxStore, volume.String())
				}
				wantReplicas := int32(1)
				if name != "dev" {
					wantReplicas = 3
					if len(opts.Routes) != 3 || opts.Cluster.Name == "" {
						t.Errorf("cluster %q with %d routes, want 3", opts.Cluster.Name, len(opts.Routes))
					}
				}
				if *s.Spec.Replicas != wantReplicas {
					t.Errorf("%d NATS servers, want %d", *s.Spec.Replicas, wantReplicas)
				}
			}
			if len(opts.Users) != len(watershedComponents) {
				t.Errorf("%d NATS users, want one per component", len(opts.Users))
			}
			for _, u := range opts.Users {
				if u.Permissions == nil || u.Permissions.Publish == nil || len(u.Permissions.Publish.Allow) == 0 {
					t.Errorf("user %s has no publish allow list", u.Username)
				}
			}
		})
	}
}

// The NATS servers collect garbage at the Watershed processes' default
// target and within their memory limit, like the all-in-one's embedded
// server: the bus's memory counts in every series' cost.
func TestNATSServerGarbageCollection(t *testing.T) {
	want := strconv.Itoa(config.Default().Server.GCPercent)
	for name, r := range overlays(t) {
		t.Run(name, func(t *testing.T) {
			found := false
			for _, o := range r.all("StatefulSet") {
				s := o.(*appsv1.StatefulSet)
				if s.Name != "nats" {
					continue
				}
				found = true
				env := map[string]corev1.EnvVar{}
				for _, e := range s.Spec.Template.Spec.Containers[0].Env {
					env[e.Name] = e
				}
				if got := env["GOGC"].Value; got != want {
					t.Errorf("nats GOGC %q, want %q (server.gcPercent's default)", got, want)
				}
				if ref := env["GOMEMLIMIT"].ValueFrom; ref == nil || ref.ResourceFieldRef == nil || ref.ResourceFieldRef.Resource != "limits.memory" {
					t.Errorf("nats GOMEMLIMIT is not the container's memory limit: %+v", env["GOMEMLIMIT"])
				}
			}
			if !found {
				t.Fatal("no nats StatefulSet")
			}
		})
	}
}

// streamOwners are the streams whose consumers a user creates, and may
// delete to rewind them.
var streamOwners = map[string]string{
	"WS_RAW":             "router",
	"WS_DEST_PROMETHEUS": "writer-mimir",
	"WS_DEST_LOKI":       "writer-loki",
	"WS_DEST_TEMPO":      "writer-tempo",
}

// Every component has its NATS user; none may delete or purge a stream, or
// delete another's consumers; a writer acks only its own stream; the
// router's receivers publish every signal into the raw stream; the users
// that watch a KV bucket answer its flow control.
func TestNATSPermissions(t *testing.T) {
	for name, r := range overlays(t) {
		t.Run(name, func(t *testing.T) {
			opts := natsOptions(t, r)
			var users []string
			for _, u := range opts.Users {
				users = append(users, u.Username)
				if u.Permissions == nil || u.Permissions.Publish == nil {
					t.Errorf("user %s has no publish permissions", u.Username)
					continue
				}
				allow, deny := u.Permissions.Publish.Allow, u.Permissions.Publish.Deny
				for _, d := range []string{"$JS.API.STREAM.DELETE.>", "$JS.API.STREAM.PURGE.>", "$JS.API.STREAM.MSG.DELETE.>", "$JS.API.ACCOUNT.PURGE.>"} {
					if !slices.Contains(deny, d) {
						t.Errorf("user %s is not denied %s", u.Username, d)
					}
				}
				var acks []string
				for stream, owner := range streamOwners {
					if owner == u.Username {
						acks = append(acks, "$JS.ACK."+stream+".>")
						continue
					}
					if d := "$JS.API.CONSUMER.DELETE." + stream + ".>"; !slices.Contains(deny, d) {
						t.Errorf("user %s may delete %s's consumers: %s is not denied", u.Username, owner, d)
					}
				}
				var gotAcks []string
				for _, a := range allow {
					if strings.HasPrefix(a, "$JS.ACK.") {
						gotAcks = append(gotAcks, a)
					}
				}
				if !slices.Equal(gotAcks, acks) {
					t.Errorf("user %s may ack %v, want %v", u.Username, gotAcks, acks)
				}
				switch u.Username {
				case "router":
					for _, s := range []string{"ws.raw.traces.>", "ws.raw.metrics.>", "ws.raw.logs.>", "ws.dest.>"} {
						if !slices.Contains(allow, s) {
							t.Errorf("router may not publish %s", s)
						}
					}
					fallthrough
				case "writer-mimir", "writer-loki", "writer-tempo":
					if !slices.Contains(allow, "$KV.WS_PARTITION_GROUPS.>") {
						t.Errorf("user %s shares partitions with its replicas but may not write WS_PARTITION_GROUPS", u.Username)
					}
					fallthrough
				case "node-collector", "discovery":
					if !slices.Contains(allow, "$JS.FC.>") {
						t.Errorf("user %s watches a KV bucket but may not answer its flow control ($JS.FC.>)", u.Username)
					}
				}
			}
			slices.Sort(users)
			want := slices.Sorted(slices.Values(watershedComponents))
			if !slices.Equal(users, want) {
				t.Errorf("NATS users %v, want one per component %v", users, want)
			}
		})
	}
}
