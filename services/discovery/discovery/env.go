package discovery

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"github.com/watershed-dev/watershed/platform/runtime"
)

// NewFromEnv makes discovery for a process: Kubernetes credentials from
// KUBECONFIG (as kubectl does) or the in-cluster service account; without
// either, local mode.
func NewFromEnv(env *runtime.Env) (*Discovery, error) {
	// client-go logs through klog, a global that is not safe to change
	// while in use: set it once, before any client exists (a client with
	// certificate files starts a goroutine that logs at once).
	klogOnce.Do(func() { klog.SetSlogLogger(env.Logger.With("component", "client-go")) })
	clients, err := kubeClients()
	if err != nil {
		return nil, err
	}
	ns := os.Getenv("POD_NAMESPACE")
	if ns == "" {
		ns = "monitoring"
	}
	d := New(Config{
		Cluster: env.Config.Cluster.Name, Metrics: env.Config.Metrics, Logs: env.Config.Logs, NATS: env.Config.NATS,
		Identity: identity(), LeaseNamespace: ns, LeaseName: "watershed-discovery",
		Debounce: 200 * time.Millisecond, CRDRecheck: 30 * time.Second,
	}, Deps{Clients: clients, Bus: env.Bus, PublisherMetrics: env.PublisherMetrics}, env.Registry, env.Logger)
	d.RegisterHandlers(env.Server.Mux(), env.Config)
	return d, nil
}

var klogOnce sync.Once

// kubeClients are empty when there are no credentials at all.
func kubeClients() (Clients, error) {
	var cfg *rest.Config
	var err error
	if path := os.Getenv("KUBECONFIG"); path != "" {
		cfg, err = clientcmd.BuildConfigFromFlags("", path)
		if err != nil {
			return Clients{}, fmt.Errorf("KUBECONFIG %s: %w", path, err)
		}
	} else {
		cfg, err = rest.InClusterConfig()
		if errors.Is(err, rest.ErrNotInCluster) {
			return Clients{}, nil
		}
		if err != nil {
			return Clients{}, fmt.Errorf("in-cluster config: %w", err)
		}
	}
	cfg.UserAgent = "watershed-discovery"
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return Clients{}, fmt.Errorf("kubernetes client: %w", err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return Clients{}, fmt.Errorf("kubernetes dynamic client: %w", err)
	}
	return Clients{Kube: kube, Dynamic: dyn}, nil
}
