#!/usr/bin/env bash
# Builds Jaeger (the all-in-one v2 binary, an OTLP trace backend with a
# query API) for the end-to-end trace tests, once per machine, into
# $TOOLS_DIR/bin/jaeger-v$JAEGER_VERSION. A plain `go install` refuses it
# for its replace directives, so it is built as a tool of a scratch module.
# Takes tens of minutes on 2 cores; later runs find the binary and return.
set -euo pipefail

JAEGER_VERSION=${JAEGER_VERSION:-1.76.0}
TOOLS_DIR=${TOOLS_DIR:-$HOME/.cache/watershed/tools}
out="$TOOLS_DIR/bin/jaeger-v$JAEGER_VERSION"
export GOPROXY=${GOPROXY:-https://proxy.golang.org} GOFLAGS=-mod=mod

if [ -x "$out" ]; then
  exit 0
fi
mkdir -p "$TOOLS_DIR/bin"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "building jaeger v$JAEGER_VERSION into $out (once per machine; tens of minutes)"
cd "$work"
cat > go.mod <<MOD
module watershed.local/jaeger-build

go 1.26
MOD
go get -tool "github.com/jaegertracing/jaeger/cmd/jaeger@v$JAEGER_VERSION" >/dev/null
go build -o "$out.tmp" github.com/jaegertracing/jaeger/cmd/jaeger
mv "$out.tmp" "$out"
