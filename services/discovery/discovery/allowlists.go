package discovery

import (
	"fmt"
	"strings"

	"github.com/watershed-dev/watershed/platform/config"
)

// defaultAllowLists keep, per built-in job, the metrics the Kubernetes
// monitoring mixins and dashboards use, as Grafana's Kubernetes Monitoring
// does: a node's kubelet and cAdvisor alone expose tens of thousands of
// series nobody reads. Entries are regular expressions on the whole name.
var defaultAllowLists = map[string][]string{
	JobKubelet: {
		"go_goroutines", "kubelet_certificate_manager_.*", "kubelet_cgroup_manager_duration_seconds_(bucket|count)",
		"kubelet_node_config_error", "kubelet_node_name", "kubelet_pleg_relist_.*", "kubelet_pod_start_duration_seconds_(bucket|count)",
		"kubelet_pod_worker_duration_seconds_(bucket|count)", "kubelet_running_.*", "kubelet_runtime_operations_(errors_)?total",
		"kubelet_server_expiration_renew_errors", "kubelet_volume_stats_.*", "kubernetes_build_info",
		"process_cpu_seconds_total", "process_resident_memory_bytes", "rest_client_requests_total",
		"storage_operation_(duration_seconds_count|errors_total)", "volume_manager_total_volumes",
	},
	JobCadvisor: {
		"container_cpu_cfs_(periods|throttled_periods)_total", "container_cpu_usage_seconds_total",
		"container_fs_(reads|writes)(_bytes)?_total", "container_memory_(cache|rss|swap|working_set_bytes)",
		"container_network_(receive|transmit)_(bytes|packets|packets_dropped)_total", "machine_memory_bytes",
	},
	JobKubeStateMetrics: {
		"kube_(cronjob|daemonset|deployment|horizontalpodautoscaler|job|namespace|node|persistentvolume|persistentvolumeclaim|pod|replicaset|resourcequota|statefulset)_.*",
		"kube_.*_labels", "kube_.*_info",
	},
	JobNodeExporter: {
		"node_(cpu|memory|filesystem|disk|network|load|vmstat|netstat|nf_conntrack)_.*", "node_load(1|5|15)",
		"node_(uname|os)_info", "node_time_seconds", "node_boot_time_seconds", "node_exporter_build_info",
		"node_systemd_unit_state", "process_cpu_seconds_total", "process_resident_memory_bytes",
	},
	JobApiserver: {
		"apiserver_request_total", "apiserver_request_(slo_)?duration_seconds_(bucket|count|sum)",
		"apiserver_storage_objects", "apiserver_current_inflight_requests", "workqueue_(adds_total|depth|queue_duration_seconds_bucket)",
		"etcd_request_duration_seconds_(bucket|count)", "kubernetes_build_info", "process_cpu_seconds_total",
		"process_resident_memory_bytes", "go_goroutines",
	},
}

// allowListRelabel is the metric relabeling of a built-in job: keep the
// allow list plus includeMetrics, then drop excludeMetrics.
func allowListRelabel(job string, t config.MetricsTuning) string {
	var b strings.Builder
	if t.UseDefaultAllowList {
		keep := append(append([]string{}, defaultAllowLists[job]...), t.IncludeMetrics...)
		if len(keep) > 0 {
			fmt.Fprintf(&b, "- source_labels: [__name__]\n  regex: %q\n  action: keep\n", strings.Join(keep, "|"))
		}
	}
	if len(t.ExcludeMetrics) > 0 {
		fmt.Fprintf(&b, "- source_labels: [__name__]\n  regex: %q\n  action: drop\n", strings.Join(t.ExcludeMetrics, "|"))
	}
	return b.String()
}
