// Package config is Watershed's configuration schema: one YAML file, read by
// every service, in the vocabulary of the grafana/k8s-monitoring Helm values.
//
// Each section is a struct with yaml tags whose RegisterFlags method is the
// one place that sets its defaults. Load applies the defaults, decodes the
// file with known fields only, lets command-line flags override the file and
// validates the result; every error names the key and, when it came from the
// file, its line.
package config
