#!/usr/bin/env bash
# Install everything the dev/test environment needs on a fresh machine of this kind:
#   - Python deps from the committed lock (requirements/lock.txt) into .venv, via uv;
#   - Azurite (pinned, from npm) into the cache;
#   - kube-apiserver, kube-controller-manager, kubectl and etcd, and helm, built from Go modules (cached).
# Idempotent: a warm machine pays a few seconds.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${OPENBAO_BACKUP_CACHE:-$HOME/.cache/openbao-backup}"
AZURITE_VERSION=3.35.0
mkdir -p "$cache"

need() { command -v "$1" >/dev/null 2>&1; }
# Toolchains: this machine kind ships Go, Node 20 and Python 3.11; a bare Debian gets them
# from apt (best effort: Debian's Go is older than the go.mod's, but Go >= 1.21 fetches the
# right toolchain from the Go module proxy, see build-control-plane.sh).
if ! need go || ! need node || ! need npm || ! need python3; then
  if need apt-get; then
    echo "install-deps: installing Debian packages" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq golang-go nodejs npm python3 python3-venv python3-pip >/dev/null
  fi
fi
# promtool (checks and unit-tests the shipped alert rules) from Debian's prometheus package.
if ! need promtool && need apt-get; then
  echo "install-deps: installing promtool (Debian package prometheus)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
# The real-node lane (hack/devenv/realnode.py): containerd + runc run real pods, dockerd
# (on a private data root) builds the images, debootstrap makes the base image from Debian's
# packages, CNI plugins give the pod bridge, socat forwards loopback servers onto it.
realnode_pkgs=(docker.io containerd runc debootstrap iptables containernetworking-plugins socat conntrack binutils)
if ! need containerd || ! need dockerd || ! need debootstrap || ! need socat || ! need conntrack || ! need strip \
   || [[ ! -x /usr/lib/cni/bridge ]]; then
  if need apt-get; then
    echo "install-deps: installing the real-node packages (${realnode_pkgs[*]})" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${realnode_pkgs[@]}" >/dev/null
  fi
fi
for tool in go node npm python3 promtool containerd dockerd runc debootstrap iptables socat conntrack strip gcc; do
  need "$tool" || { echo "install-deps: $tool is required and could not be installed" >&2; exit 1; }
done
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11, 3))' || {
  echo "install-deps: Python >= 3.11.3 is required (gcloud-aio-auth); found $(python3 -V)" >&2
  exit 1
}
node_major="$(node -p 'process.versions.node.split(".")[0]')"
(( node_major >= 18 )) || { echo "install-deps: Node >= 18 is required for Azurite" >&2; exit 1; }

# Python: uv from PyPI (pinned), then an exact sync of the hashed lock file.
if ! python3 -m uv --version >/dev/null 2>&1; then
  python3 -m pip install -q --disable-pip-version-check "uv==0.13.8" >&2 || true
fi
if python3 -m uv --version >/dev/null 2>&1; then
  [[ -x "$root/.venv/bin/python" ]] || python3 -m uv venv -q "$root/.venv" --python python3 >&2
  python3 -m uv pip sync -q --python "$root/.venv/bin/python" "$root/requirements/lock.txt" >&2
  python3 -m uv pip install -q --python "$root/.venv/bin/python" --no-deps -e "$root" >&2
else
  echo "install-deps: uv unavailable; installing with pip" >&2
  [[ -x "$root/.venv/bin/python" ]] || python3 -m venv "$root/.venv"
  "$root/.venv/bin/python" -m pip install -q --require-hashes -r "$root/requirements/lock.txt" >&2
  "$root/.venv/bin/python" -m pip install -q --no-deps -e "$root" >&2
fi

# Azurite (Node 20 needs <= 3.35.x).
az="$cache/azurite-$AZURITE_VERSION"
if [[ ! -x "$az/node_modules/.bin/azurite-blob" ]]; then
  echo "install-deps: npm ci azurite@$AZURITE_VERSION (hack/azurite/package-lock.json)" >&2
  mkdir -p "$az"
  cp "$root/hack/azurite/package.json" "$root/hack/azurite/package-lock.json" "$az/"
  (cd "$az" && npm ci --silent --no-audit --no-fund >&2)
fi

# Control plane binaries (cold build only once per machine).
bash "$root/hack/build-control-plane.sh" >/dev/null
# helm (lints, renders and installs the chart), from its Go module, cached like the above.
bash "$root/hack/build-helm.sh" >/dev/null
# The Prometheus Operator's CRDs, generated from its API types (tests/chart applies them).
bash "$root/hack/build-prometheus-crds.sh" >/dev/null
