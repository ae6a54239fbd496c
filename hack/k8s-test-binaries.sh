#!/usr/bin/env bash
# Builds etcd and kube-apiserver from the Go module proxy for the tests that
# run against a real Kubernetes API server, once per machine, into
# $TOOLS_DIR/k8s/v$K8S_VERSION. A plain `go install` refuses both for their
# replace directives, so each is built from a scratch module. Takes 15 to 50
# minutes and about 3 GB of memory on 2 cores; later runs find the binaries
# and return at once.
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-1.37.2}
ETCD_VERSION=${ETCD_VERSION:-3.6.16}
TOOLS_DIR=${TOOLS_DIR:-$HOME/.cache/watershed/tools}
out="$TOOLS_DIR/k8s/v$K8S_VERSION"
export GOPROXY=${GOPROXY:-https://proxy.golang.org} GOFLAGS=-mod=mod

if [ -x "$out/etcd" ] && [ -x "$out/kube-apiserver" ]; then
  exit 0
fi
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [ ! -x "$out/etcd" ]; then
  echo "building etcd v$ETCD_VERSION into $out (once per machine)"
  mkdir -p "$work/etcd" && cd "$work/etcd"
  cat > go.mod <<MOD
module watershed.local/etcd-build

go 1.26
MOD
  go get "go.etcd.io/etcd/server/v3@v$ETCD_VERSION" >/dev/null
  go build -o "$out/etcd.tmp" go.etcd.io/etcd/server/v3
  mv "$out/etcd.tmp" "$out/etcd"
fi

if [ ! -x "$out/kube-apiserver" ]; then
  echo "building kube-apiserver v$K8S_VERSION into $out (once per machine; 15-50 min)"
  mkdir -p "$work/apiserver" && cd "$work/apiserver"
  gomod=$(go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  {
    echo "module watershed.local/apiserver-build"
    echo
    echo "go 1.26"
    echo
    echo "require k8s.io/kubernetes v$K8S_VERSION"
    echo
    echo "replace ("
    # Every staging module kubernetes replaces with ./staging is published as v0.x.
    grep -E '^\s*k8s.io/[a-z0-9-]+ => ./staging/' "$gomod" | awk -v v="v0.${K8S_VERSION#1.}" '{print "\t" $1 " => " $1 " " v}'
    echo ")"
  } > go.mod
  cat > tools.go <<'GO'
//go:build tools

package tools

import _ "k8s.io/kubernetes/cmd/kube-apiserver"
GO
  go mod tidy >/dev/null
  minor=${K8S_VERSION#1.}; minor=${minor%%.*}
  go build -ldflags "-X k8s.io/component-base/version.gitVersion=v$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean" \
    -o "$out/kube-apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver
  mv "$out/kube-apiserver.tmp" "$out/kube-apiserver"
fi
echo "etcd and kube-apiserver are in $out"
