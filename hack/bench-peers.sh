#!/usr/bin/env bash
# Installs the peers `make bench-compare` measures Watershed against, once
# per version, into $TOOLS_DIR/bin (outside the repository, reused by later
# runs): vmagent, nats-server (microservices mode's external bus), the
# OpenTelemetry Collector Builder and the collector it builds from
# bench/otelcol-builder.yaml. Prometheus (agent mode) comes from Debian
# (make deps-debian), telemetrygen from make tools-bench.
set -euo pipefail

: "${TOOLS_DIR:?}" "${VMAGENT_VERSION:?}" "${NATS_SERVER_VERSION:?}" "${OCB_VERSION:?}"
bin="$TOOLS_DIR/bin"
mkdir -p "$bin"
repo="$(cd "$(dirname "$0")/.." && pwd)"

install_go() { # name version package
  local name=$1 version=$2 pkg=$3 stamp="$bin/.$1-$2"
  if [ -x "$bin/$name" ] && [ -f "$stamp" ]; then return; fi
  echo "installing $name $version into $bin"
  GOBIN="$bin" GOFLAGS= go install "$pkg@$version"
  touch "$stamp"
}

install_go vmagent "$VMAGENT_VERSION" github.com/VictoriaMetrics/VictoriaMetrics/app/vmagent
install_go nats-server "$NATS_SERVER_VERSION" github.com/nats-io/nats-server/v2
install_go builder "$OCB_VERSION" go.opentelemetry.io/collector/cmd/builder

# The collector is rebuilt when its manifest changes.
manifest="$repo/bench/otelcol-builder.yaml"
sum=$(sha256sum "$manifest" | cut -c1-16)
stamp="$bin/.otelcol-bench-$sum"
if [ ! -x "$bin/otelcol-bench" ] || [ ! -f "$stamp" ]; then
  echo "building otelcol-bench from bench/otelcol-builder.yaml (several minutes on 2 cores)"
  work="$TOOLS_DIR/otelcol-build"
  rm -rf "$work"
  mkdir -p "$work"
  sed "s|^dist:|dist:\n  output_path: $work|" "$manifest" > "$work/manifest.yaml"
  (cd "$work" && GOFLAGS= "$bin/builder" --config="$work/manifest.yaml")
  cp "$work/otelcol-bench" "$bin/otelcol-bench"
  rm -f "$bin"/.otelcol-bench-*
  touch "$stamp"
fi
