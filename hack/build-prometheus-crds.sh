#!/usr/bin/env bash
# The Prometheus Operator's CRDs (monitoring.coreos.com/v1: ServiceMonitor, PodMonitor,
# PrometheusRule...), for tests/chart to apply to the real apiserver so the chart's monitoring
# objects are validated against the Operator's schema. Generated, as the Operator's own build
# does, by controller-gen from the Operator's published API types (both pinned in
# hack/tools/promcrds/go.mod; the Operator's main module, whose zip has the YAML, is not served
# here). Cached by both versions under the shared cache (flock, rename into place, no-op when
# warm). Prints the directory of the CRD files.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mod="$here/tools/promcrds/go.mod"
version_of() {
  awk -v m="$1" '$1==m{print $2; exit} $1=="require" && $2==m{print $3; exit}' "$mod"
}
API="github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring"
API_VERSION="$(version_of "$API")"
CG_VERSION="$(version_of sigs.k8s.io/controller-tools)"
[[ -n "$API_VERSION" && -n "$CG_VERSION" ]] || { echo "build-prometheus-crds: versions missing in $mod" >&2; exit 1; }
cache="${OPENBAO_BACKUP_CACHE:-$HOME/.cache/openbao-backup}"
out="$cache/prometheus-operator-crds/${API_VERSION}-controller-gen-${CG_VERSION}"

if [[ -f "$out/monitoring.coreos.com_servicemonitors.yaml" ]]; then
  echo "$out"
  exit 0
fi
command -v go >/dev/null || { echo "build-prometheus-crds: Go toolchain not found on PATH" >&2; exit 1; }
mkdir -p "$cache/prometheus-operator-crds"
exec 9>"$cache/prometheus-operator-crds/.build.lock"
flock 9
if [[ -f "$out/monitoring.coreos.com_servicemonitors.yaml" ]]; then
  echo "$out"
  exit 0
fi
tmp="$out.tmp.$$"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp"
start=$(date +%s)
echo "build-prometheus-crds: controller-gen $CG_VERSION, Operator API $API_VERSION (cold: about 2 minutes)" >&2
cd "$here/tools/promcrds"
export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -mod=readonly" GOTOOLCHAIN="${GOTOOLCHAIN_OVERRIDE:-auto}"
go build -trimpath -ldflags "-s -w" -o "$tmp/controller-gen" sigs.k8s.io/controller-tools/cmd/controller-gen >&2
"$tmp/controller-gen" crd:crdVersions=v1,allowDangerousTypes=true paths="$API/v1" \
  output:crd:dir="$tmp/crds" >&2
rm -rf "$out"
mv "$tmp/crds" "$out"
echo "build-prometheus-crds: done in $(( $(date +%s) - start ))s" >&2
echo "$out"
