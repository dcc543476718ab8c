#!/usr/bin/env bash
# Pins the test control plane to another Kubernetes release: ./pin.sh 1.36.3
#
# k8s.io/kubernetes's own go.mod replaces every k8s.io/* staging module with a ./staging path
# that is not in its module zip; this module replaces each of them with the same module at
# the matching v0 version (1.36.3 -> v0.36.3), which the module proxy serves.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
version=${1:?usage: pin.sh KUBERNETES_VERSION (e.g. 1.36.3)}
staging="v0.${version#*.}"
gomod=$(go mod download -json "k8s.io/kubernetes@v$version" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')
{
  printf 'module infra-gen.dev/testbed/controlplane\n\ngo 1.26.0\n\nrequire k8s.io/kubernetes v%s\n\n' "$version"
  grep '=> ./staging' "$gomod" | awk -v v="$staging" '{print "replace " $1 " => " $1 " " v}'
} > go.mod
# The embedded etcd at the version Kubernetes's own client requires.
etcd=$(awk '$1 == "go.etcd.io/etcd/client/v3" {print $2; exit}' "$gomod")
go get "go.etcd.io/etcd/server/v3@$etcd"
go mod tidy
echo "pinned Kubernetes v$version (staging modules $staging); etcd follows k8s.io/kubernetes's requirement"
