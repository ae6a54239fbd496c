package logtail

import (
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/watershed-dev/watershed/platform/config"
	"github.com/watershed-dev/watershed/platform/lokipush"
	"github.com/watershed-dev/watershed/proto/watershedv1"
)

// Pod annotations that steer log collection, as in the k8s-monitoring chart.
const (
	annotationAutogather = "k8s.grafana.com/logs.autogather"
	annotationJob        = "k8s.grafana.com/logs.job"
)

// Structured metadata names of pod log entries: Loki's own spelling of the
// OpenTelemetry attributes k8s.pod.name and k8s.pod.uid (what Loki's OTLP
// endpoint stores them as), so LogQL can filter on them (`| k8s_pod_name="x"`)
// and logs that arrived by OTLP carry the same names.
const (
	metaPodName = "k8s_pod_name"
	metaPodUID  = "k8s_pod_uid"
)

// podPath is what a kubelet log path says:
// <dir>/<namespace>_<pod>_<uid>/<container>/<n>.log.
type podPath struct {
	namespace, pod, uid, container string
}

func parsePodPath(dir, path string) (podPath, bool) {
	rel, err := filepath.Rel(dir, path)
	if err != nil {
		return podPath{}, false
	}
	parts := strings.Split(rel, string(filepath.Separator))
	if len(parts) != 3 || !strings.HasSuffix(parts[2], ".log") {
		return podPath{}, false
	}
	// Namespace and pod names are DNS labels and subdomains: no '_'.
	ids := strings.Split(parts[0], "_")
	if len(ids) != 3 || ids[0] == "" || ids[1] == "" || ids[2] == "" {
		return podPath{}, false
	}
	return podPath{namespace: ids[0], pod: ids[1], uid: ids[2], container: parts[1]}, true
}

// podSources lists the pod log files under the kubelet's directory that the
// configuration selects. pods is discovery's list for this node, by UID;
// a file whose pod is not in it yet waits for it unless unknownOK.
func podSources(cfg config.PodLogsConfig, cluster, node string, pods map[string]*watershedv1.PodMetadata, unknownOK func(path string) bool) map[string]*source {
	out := map[string]*source{}
	paths, _ := filepath.Glob(filepath.Join(cfg.Directory, "*", "*", "*.log"))
	for _, path := range paths {
		pp, ok := parsePodPath(cfg.Directory, path)
		if !ok || !namespaceWanted(cfg, pp.namespace) {
			continue
		}
		meta := pods[pp.uid]
		if meta == nil && !unknownOK(path) {
			continue
		}
		if cfg.Discovery == "annotation" && (meta == nil || meta.Annotations[annotationAutogather] != "true") {
			continue
		}
		out[path] = podSource(path, pp, meta, cluster, node)
	}
	return out
}

func namespaceWanted(cfg config.PodLogsConfig, ns string) bool {
	if slices.Contains(cfg.ExcludeNamespaces, ns) {
		return false
	}
	return len(cfg.Namespaces) == 0 || slices.Contains(cfg.Namespaces, ns)
}

func podSource(path string, pp podPath, meta *watershedv1.PodMetadata, cluster, node string) *source {
	job := pp.namespace + "/" + pp.container
	if meta != nil && meta.Annotations[annotationJob] != "" {
		job = meta.Annotations[annotationJob]
	}
	b := labels.NewScratchBuilder(8)
	if cluster != "" {
		b.Add("cluster", cluster)
	}
	b.Add("namespace", pp.namespace)
	b.Add("pod", pp.pod)
	b.Add("container", pp.container)
	b.Add("node", node)
	b.Add("job", job)
	b.Sort()
	base := b.Labels()
	src := &source{
		path: path, format: formatAuto, kind: "pod",
		partitionKey: base.String(),
		meta:         []lokipush.Pair{{Name: metaPodName, Value: pp.pod}, {Name: metaPodUID, Value: pp.uid}},
	}
	for s, name := range streamNames {
		src.streamLabels[s] = withLabel(base, "stream", name).String()
	}
	return src
}

func withLabel(ls labels.Labels, name, value string) labels.Labels {
	b := labels.NewBuilder(ls)
	b.Set(name, value)
	return b.Labels()
}

// fileSources lists the files that logs.files globs match now. A file is
// labelled with its entry's labels, filename and cluster.
func fileSources(files []config.LogFile, cluster string) map[string]*source {
	out := map[string]*source{}
	for _, lf := range files {
		paths, _ := filepath.Glob(lf.Path)
		for _, path := range paths {
			if _, dup := out[path]; dup || strings.HasSuffix(path, ".gz") {
				continue
			}
			if fi, err := os.Stat(path); err != nil || !fi.Mode().IsRegular() {
				continue
			}
			out[path] = fileSource(path, lf, cluster)
		}
	}
	return out
}

func fileSource(path string, lf config.LogFile, cluster string) *source {
	b := labels.NewBuilder(labels.FromMap(lf.Labels))
	b.Set("filename", path)
	if cluster != "" && b.Get("cluster") == "" {
		b.Set("cluster", cluster)
	}
	base := b.Labels()
	src := &source{path: path, kind: "file", partitionKey: base.String()}
	switch lf.Format {
	case config.LogFormatCRI:
		src.format = formatCRI
	case config.LogFormatDocker:
		src.format = formatDocker
	}
	if src.format == formatRaw {
		src.streamLabels[streamStdout] = base.String()
		src.streamLabels[streamStderr] = base.String()
		return src
	}
	for s, name := range streamNames {
		src.streamLabels[s] = withLabel(base, "stream", name).String()
	}
	return src
}
