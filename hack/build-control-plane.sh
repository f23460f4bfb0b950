#!/usr/bin/env bash
# Build kube-apiserver, kube-controller-manager, kubectl and etcd (the control plane) and
# kubelet, kube-proxy and kube-scheduler (the opt-in real node, hack/devenv/realnode.py) from
# their published Go modules (pinned in hack/tools/go.mod) into a cache outside the
# repository, keyed by version. A warm cache makes this a no-op; a cache that lacks some of
# the binaries (e.g. one built before the node binaries were added) gets only those built,
# once, next to the others. Prints the binary dir.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
KUBE_VERSION="$(awk '$1=="k8s.io/kubernetes"{print $2; exit}' "$here/tools/go.mod")"
ETCD_VERSION="$(awk '$1=="go.etcd.io/etcd/server/v3"{print $2; exit}' "$here/tools/go.mod")"
cache="${OPENBAO_BACKUP_CACHE:-$HOME/.cache/openbao-backup}"
out="$cache/control-plane/kube-${KUBE_VERSION}-etcd-${ETCD_VERSION}"
KUBE_CMDS=(kube-apiserver kube-controller-manager kubectl kubelet kube-proxy kube-scheduler)

missing() {
  local name
  for name in "${KUBE_CMDS[@]}" etcd; do
    [[ -x "$out/$name" ]] || echo "$name"
  done
}

if [[ -z "$(missing)" ]]; then
  echo "$out"
  exit 0
fi
command -v go >/dev/null || { echo "build-control-plane: Go toolchain not found on PATH" >&2; exit 1; }
mkdir -p "$cache/control-plane"
# One build at a time per cache (two test runs starting cold at once wait for each other).
exec 9>"$cache/control-plane/.build.lock"
flock 9
mapfile -t todo < <(missing)
if [[ ${#todo[@]} -eq 0 ]]; then
  echo "$out"
  exit 0
fi
minor="${KUBE_VERSION#v1.}"; minor="${minor%%.*}"
tmp="$out.tmp.$$"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)
echo "build-control-plane: building ${todo[*]} (kube $KUBE_VERSION, etcd $ETCD_VERSION; cold build, several minutes)" >&2
cd "$here/tools"
# GOTOOLCHAIN=auto: an older local Go (>= 1.21) fetches the go.mod's toolchain from the Go
# module proxy; with a new enough Go (as on this machine kind) the local one is used.
export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -mod=readonly" GOTOOLCHAIN="${GOTOOLCHAIN_OVERRIDE:-auto}"
pkgs=()
for name in "${todo[@]}"; do
  [[ "$name" == etcd ]] || pkgs+=("k8s.io/kubernetes/cmd/$name")
done
if [[ ${#pkgs[@]} -gt 0 ]]; then
  go build -trimpath -o "$tmp/" -ldflags "-s -w \
    -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION \
    -X k8s.io/component-base/version.gitMajor=1 \
    -X k8s.io/component-base/version.gitMinor=$minor" \
    "${pkgs[@]}" >&2
fi
if [[ " ${todo[*]} " == *" etcd "* ]]; then
  go build -trimpath -ldflags "-s -w" -o "$tmp/etcd" go.etcd.io/etcd/server/v3 >&2
fi
# Each binary lands by rename, so a binary another run is using is never half-written.
mkdir -p "$out"
for name in "${todo[@]}"; do
  mv -f "$tmp/$name" "$out/$name"
done
echo "build-control-plane: built ${todo[*]} in $(( $(date +%s) - start ))s" >&2
echo "$out"
