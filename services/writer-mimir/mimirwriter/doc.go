// Package mimirwriter is writer-mimir: the Prometheus destination's stream
// delivered by platform/httpwriter as Prometheus remote write 1.0
// (snappy-compressed WriteRequests, X-Prometheus-Remote-Write-Version
// 0.1.0) to Mimir, Prometheus or Grafana Cloud, with Mimir's and
// Prometheus's refusals named by reason.
package mimirwriter
