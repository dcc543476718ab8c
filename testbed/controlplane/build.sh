#!/usr/bin/env bash
# Builds the test control plane (this launcher, kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl, which the node agent runs for kubectl images, and the kubelet, which
# the zero-downtime rehearsal runs real pods with) from the Go module proxy, at the versions
# go.mod pins, into a cache directory keyed by those versions, and prints that directory.
# A second run with nothing changed prints it at once.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here"

programs=(k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl k8s.io/kubernetes/cmd/kubelet)

if ! command -v go >/dev/null; then
  echo "build.sh: Go is not installed; the test control plane is built with it (https://go.dev/dl/, 1.26 or newer)" >&2
  exit 1
fi
# Go 1.27 turns encoding/json v2 on, with which kube-openapi serves a broken /openapi/v2
# (kubectl apply then fails with "failed to download openapi").
case "$(go env GOVERSION)" in
  go1.2[7-9]*|go1.[3-9]*) export GOEXPERIMENT=nojsonv2 ;;
esac

key=$( (go env GOVERSION; cat go.mod go.sum ./*.go; printf '%s\n' "${programs[@]}") | sha256sum | cut -c1-16)
out="${INFRA_GEN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/infra-gen}/controlplane-$key"
if [ -x "$out/controlplane" ] && [ -x "$out/kube-scheduler" ] && [ -x "$out/kubectl" ] && [ -x "$out/kubelet" ]; then
  echo "$out"
  exit 0
fi

# Fail with a clear message when the module proxy cannot be reached, not half-way through.
if ! go mod download k8s.io/kubernetes >&2; then
  echo "build.sh: cannot download k8s.io/kubernetes from the Go module proxy ($(go env GOPROXY)); the real-cluster tests need it" >&2
  exit 1
fi
mkdir -p "$out.tmp"
start=$SECONDS
CGO_ENABLED=0 go build -o "$out.tmp/" . "${programs[@]}" >&2
rm -rf "$out"
mv "$out.tmp" "$out"
echo "build.sh: built in $((SECONDS - start)) s into $out" >&2
echo "$out"
