#!/usr/bin/env bash
# Install everything the dev/test environment needs on a fresh machine of this kind:
#   - Python deps from the committed lock (requirements/lock.txt) into .venv, via uv;
#   - Azurite (pinned, from npm) into the cache;
#   - kube-apiserver, kube-controller-manager and etcd built from Go modules (cached).
# Idempotent: a warm machine pays a few seconds.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${OPENBAO_BACKUP_CACHE:-$HOME/.cache/openbao-backup}"
AZURITE_VERSION=3.35.0
mkdir -p "$cache"

need() { command -v "$1" >/dev/null 2>&1; }
if ! need go || ! need node || ! need npm || ! need python3; then
  if need apt-get; then
    echo "install-deps: installing Debian packages" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq golang nodejs npm python3 python3-venv >/dev/null
  fi
fi
for tool in go node npm python3; do
  need "$tool" || { echo "install-deps: $tool is required and could not be installed" >&2; exit 1; }
done

# Python: uv from PyPI (pinned), then an exact sync of the lock file.
if [[ ! -x "$root/.venv/bin/python" ]]; then
  python3 -m pip install -q --disable-pip-version-check "uv==0.13.8" >&2 || true
  if need uv; then uv venv -q "$root/.venv" --python python3 >&2
  else python3 -m venv "$root/.venv"; fi
fi
if need uv; then
  uv pip sync -q --python "$root/.venv/bin/python" "$root/requirements/lock.txt" >&2
  uv pip install -q --python "$root/.venv/bin/python" --no-deps -e "$root" >&2
else
  "$root/.venv/bin/pip" install -q --require-hashes -r "$root/requirements/lock.txt" >&2
  "$root/.venv/bin/pip" install -q --no-deps -e "$root" >&2
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
