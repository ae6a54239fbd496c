// Package discovery is the only Watershed component that talks to the
// Kubernetes API. It watches Nodes, Pods, Services, EndpointSlices and
// Namespaces with client-go shared informers, turns them into scrape
// targets (annotation auto-discovery, and the built-in kubelet, cAdvisor,
// kube-state-metrics, node-exporter and apiserver jobs, each with its allow
// list), assigns each target to one node collector (the collector on the
// target's node, or by rendezvous hashing for targets without a node) and
// pushes every collector its assignment through the WS_ASSIGNMENTS
// key-value bucket. Only the leader of a Lease writes assignments.
//
// It also serves /api/v0/web/targets (every target, its labels, owner and
// last scrape result from the collectors' heartbeats) and /api/v0/web/config.
package discovery
