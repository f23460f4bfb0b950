#!/usr/bin/env bash
# Build helm (lints, renders and installs charts/openbao-backup) from its published Go module,
# pinned in hack/tools/helm/go.mod (a module of its own: helm's k8s.io versions differ from the
# control plane's in hack/tools/go.mod), into the same cache as the control plane, keyed by
# version. A warm cache makes this a no-op; one build at a time per cache (flock); the binary
# lands by rename, so a helm another run is using is never half-written. Prints the binary's
# path.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# `require helm.sh/helm/v4 vX` (one line) or inside a require block.
HELM_VERSION="$(awk '$1=="helm.sh/helm/v4"{print $2; exit} $2=="helm.sh/helm/v4"{print $3; exit}' \
  "$here/tools/helm/go.mod")"
[[ -n "$HELM_VERSION" ]] || { echo "build-helm: no helm.sh/helm/v4 in hack/tools/helm/go.mod" >&2; exit 1; }
cache="${OPENBAO_BACKUP_CACHE:-$HOME/.cache/openbao-backup}"
out="$cache/helm/helm-${HELM_VERSION}/helm"

if [[ -x "$out" ]]; then
  echo "$out"
  exit 0
fi
command -v go >/dev/null || { echo "build-helm: Go toolchain not found on PATH" >&2; exit 1; }
mkdir -p "$cache/helm"
exec 9>"$cache/helm/.build.lock"
flock 9
if [[ -x "$out" ]]; then  # built by the run we waited for
  echo "$out"
  exit 0
fi
mkdir -p "$(dirname "$out")"
tmp="$out.tmp.$$"
trap 'rm -f "$tmp"' EXIT
start=$(date +%s)
echo "build-helm: building helm $HELM_VERSION (cold build: 3-5 CPU-minutes, a few minutes on 2 cores)" >&2
cd "$here/tools/helm"
# GOTOOLCHAIN=auto: as in build-control-plane.sh, an older local Go fetches the go.mod's.
export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -mod=readonly" GOTOOLCHAIN="${GOTOOLCHAIN_OVERRIDE:-auto}"
go build -trimpath -o "$tmp" -ldflags "-s -w \
  -X helm.sh/helm/v4/internal/version.version=$HELM_VERSION \
  -X helm.sh/helm/v4/internal/version.metadata= \
  -X helm.sh/helm/v4/internal/version.gitTreeState=clean" \
  helm.sh/helm/v4/cmd/helm >&2
mv -f "$tmp" "$out"
echo "build-helm: built helm $HELM_VERSION in $(( $(date +%s) - start ))s" >&2
echo "$out"
