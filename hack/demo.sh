#!/usr/bin/env bash
# The main job on the local default: a real local Kubernetes control plane, the node agent,
# a real OpenBao and an S3 server on 127.0.0.1; the controller; a sample OpenBaoCluster; a
# manual backup triggered with kubectl, watched to success. Installs what it needs first.
# Pass --keep to leave everything running afterwards (Ctrl-C stops it).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/hack/install-deps.sh"
export PYTHONPATH="$root/hack${PYTHONPATH:+:$PYTHONPATH}"
exec "$root/.venv/bin/python" -m devenv demo "$@"
