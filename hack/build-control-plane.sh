#!/usr/bin/env bash
# Build kube-apiserver, kube-controller-manager, kubectl and etcd from their published Go
# modules (pinned in hack/tools/go.mod) into a cache outside the repository,
# keyed by version. A warm cache makes this a no-op. Prints the binary dir.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
KUBE_VERSION="$(awk '$1=="k8s.io/kubernetes"{print $2; exit}' "$here/tools/go.mod")"
ETCD_VERSION="$(awk '$1=="go.etcd.io/etcd/server/v3"{print $2; exit}' "$here/tools/go.mod")"
cache="${OPENBAO_BACKUP_CACHE:-$HOME/.cache/openbao-backup}"
out="$cache/control-plane/kube-${KUBE_VERSION}-etcd-${ETCD_VERSION}"
if [[ -x "$out/kube-apiserver" && -x "$out/kube-controller-manager" && -x "$out/kubectl" && -x "$out/etcd" ]]; then
  echo "$out"
  exit 0
fi
command -v go >/dev/null || { echo "build-control-plane: Go toolchain not found on PATH" >&2; exit 1; }
minor="${KUBE_VERSION#v1.}"; minor="${minor%%.*}"
tmp="$out.tmp.$$"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)
echo "build-control-plane: building kube $KUBE_VERSION and etcd $ETCD_VERSION (cold build, several minutes)" >&2
cd "$here/tools"
# GOTOOLCHAIN=auto: an older local Go (>= 1.21) fetches the go.mod's toolchain from the Go
# module proxy; with a new enough Go (as on this machine kind) the local one is used.
export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -mod=readonly" GOTOOLCHAIN="${GOTOOLCHAIN_OVERRIDE:-auto}"
go build -trimpath -o "$tmp/" -ldflags "-s -w \
  -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION \
  -X k8s.io/component-base/version.gitMajor=1 \
  -X k8s.io/component-base/version.gitMinor=$minor" \
  k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kubectl >&2
go build -trimpath -ldflags "-s -w" -o "$tmp/etcd" go.etcd.io/etcd/server/v3 >&2
rm -rf "$out"
mv "$tmp" "$out"
trap - EXIT
echo "build-control-plane: built in $(( $(date +%s) - start ))s" >&2
echo "$out"
