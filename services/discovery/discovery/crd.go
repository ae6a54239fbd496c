package discovery

import (
	"context"
	"fmt"
	"sync"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/tools/cache"
)

// The Prometheus Operator's resources discovery reads, when installed.
var (
	ServiceMonitorGVR = schema.GroupVersionResource{Group: monitoringv1.SchemeGroupVersion.Group, Version: "v1", Resource: "servicemonitors"}
	PodMonitorGVR     = schema.GroupVersionResource{Group: monitoringv1.SchemeGroupVersion.Group, Version: "v1", Resource: "podmonitors"}
)

// monitorInformers watches ServiceMonitors and PodMonitors once their CRDs
// exist: a missing CRD is logged once and looked for again, never fatal.
type monitorInformers struct {
	d       *Discovery
	dynamic dynamic.Interface
	factory dynamicinformer.DynamicSharedInformerFactory

	mu       sync.Mutex
	started  map[schema.GroupVersionResource]cache.GenericLister
	reported map[schema.GroupVersionResource]bool
}

func newMonitorInformers(d *Discovery, dyn dynamic.Interface) *monitorInformers {
	return &monitorInformers{
		d: d, dynamic: dyn, factory: dynamicinformer.NewDynamicSharedInformerFactory(dyn, 0),
		started: map[schema.GroupVersionResource]cache.GenericLister{}, reported: map[schema.GroupVersionResource]bool{},
	}
}

// wanted are the resources the configuration switches on.
func (m *monitorInformers) wanted() []schema.GroupVersionResource {
	var out []schema.GroupVersionResource
	if m.d.cfg.Metrics.ServiceMonitors.Enabled {
		out = append(out, ServiceMonitorGVR)
	}
	if m.d.cfg.Metrics.PodMonitors.Enabled {
		out = append(out, PodMonitorGVR)
	}
	return out
}

// run starts the informers of the installed CRDs, and looks again for the
// missing ones every Config.CRDRecheck until all run or ctx ends.
func (m *monitorInformers) run(ctx context.Context) {
	for {
		if m.startInstalled(ctx) {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(m.d.cfg.CRDRecheck):
		}
	}
}

// startInstalled reports whether every wanted informer runs.
func (m *monitorInformers) startInstalled(ctx context.Context) bool {
	gv := monitoringv1.SchemeGroupVersion.String()
	resources, err := m.d.client.Discovery().ServerResourcesForGroupVersion(gv)
	installed := map[string]bool{}
	if err == nil {
		for _, r := range resources.APIResources {
			installed[r.Name] = true
		}
	}
	all := true
	for _, gvr := range m.wanted() {
		m.mu.Lock()
		_, running := m.started[gvr]
		m.mu.Unlock()
		if running {
			continue
		}
		if !installed[gvr.Resource] {
			all = false
			if !m.reported[gvr] {
				m.reported[gvr] = true
				m.d.logger.Info("CRD not installed; looking for it again", "resource", gvr.Resource+"."+gvr.Group, "every", m.d.cfg.CRDRecheck)
			}
			continue
		}
		inf := m.factory.ForResource(gvr)
		if _, err := inf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc: func(any) { m.d.trigger() }, UpdateFunc: func(any, any) { m.d.trigger() }, DeleteFunc: func(any) { m.d.trigger() },
		}); err != nil {
			m.d.logger.Error("informer handler", "resource", gvr.Resource, "err", err)
			all = false
			continue
		}
		m.factory.Start(ctx.Done())
		if !cache.WaitForCacheSync(ctx.Done(), inf.Informer().HasSynced) {
			return false
		}
		m.mu.Lock()
		m.started[gvr] = inf.Lister()
		m.mu.Unlock()
		m.d.logger.Info("watching", "resource", gvr.Resource+"."+gvr.Group)
		m.d.trigger()
	}
	return all
}

// list adds the ServiceMonitors and PodMonitors to the objects; one that
// does not decode becomes a Problem.
func (m *monitorInformers) list(o *Objects) []Problem {
	m.mu.Lock()
	defer m.mu.Unlock()
	var problems []Problem
	for gvr, lister := range m.started {
		objs, err := lister.List(labels.Everything())
		if err != nil {
			problems = append(problems, Problem{Source: gvr.Resource, Reason: err.Error()})
			continue
		}
		for _, obj := range objs {
			u, ok := obj.(*unstructured.Unstructured)
			if !ok {
				continue
			}
			source := gvr.Resource + "/" + u.GetNamespace() + "/" + u.GetName()
			switch gvr {
			case ServiceMonitorGVR:
				var sm monitoringv1.ServiceMonitor
				if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &sm); err != nil {
					problems = append(problems, Problem{Source: source, Reason: fmt.Sprintf("not a valid ServiceMonitor: %v", err)})
					continue
				}
				o.ServiceMonitors = append(o.ServiceMonitors, &sm)
			case PodMonitorGVR:
				var pm monitoringv1.PodMonitor
				if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &pm); err != nil {
					problems = append(problems, Problem{Source: source, Reason: fmt.Sprintf("not a valid PodMonitor: %v", err)})
					continue
				}
				o.PodMonitors = append(o.PodMonitors, &pm)
			}
		}
	}
	return problems
}
