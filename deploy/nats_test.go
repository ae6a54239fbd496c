package deploy_test

import (
	"os"
	"path/filepath"
	"testing"

	natsserver "github.com/nats-io/nats-server/v2/server"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

// natsOptions reads the rendered nats-config ConfigMap with nats-server's
// own parser.
func natsOptions(t *testing.T, r *rendered) *natsserver.Options {
	t.Helper()
	t.Setenv("POD_NAME", "nats-0")
	for _, u := range []string{"NODE_COLLECTOR", "DISCOVERY", "ROUTER", "WRITER_MIMIR", "WRITER_LOKI"} {
		t.Setenv(u+"_PASSWORD", "x")
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
			streams := int64(cfg.NATS.RawStream.MaxBytes) + int64(cfg.ExternalServices.Prometheus.Buffer.MaxBytes) + int64(cfg.ExternalServices.Loki.Buffer.MaxBytes)
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
