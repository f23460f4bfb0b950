"""The script the drill Job's scratch OpenBao container runs.

Guarantees (of :data:`DRILL_SERVER_SCRIPT`, POSIX ``sh``): the server listens on 127.0.0.1
only, with a single-node Raft store in ``DRILL_DIR``; it is stopped (TERM, then KILL after
15 s) once ``DRILL_DONE_FILE`` exists, and the script then exits 0; a server that dies on its
own makes the script exit with the server's status; a ``DRILL_SEAL_CONFIG`` that is set but
not a readable file makes it exit 1 without starting a server, and the seal file is never
printed. Defined in the contract so the controller (which builds the drill Job) can take it
without importing :mod:`executor.drill`; that module re-exports it.
"""

from __future__ import annotations

#: The drill Job's OpenBao container runs this with ``sh -c`` (POSIX sh; busybox works), env
#: DRILL_DIR (an empty writable directory), DRILL_PORT (API port on 127.0.0.1; the cluster
#: port is DRILL_PORT+1) and DRILL_DONE_FILE (the executor's OBB_DRILL_DONE_FILE). It writes a
#: single-node Raft config, starts ``bao server`` in the background, and polls every 0.5 s
#: until the done file exists (then TERMs the server, KILLs it after 15 s, exits 0) or the
#: server died (exits with the server's status).
#:
#: Optional env DRILL_SEAL_CONFIG: a file holding the live cluster's ``seal "..." {...}``
#: stanza (HCL, mounted from the Secret or ConfigMap the user names). When it is set and
#: readable, the server gets it as a second ``-config`` (``bao server`` merges several);
#: when it is set but not readable, the script exits 1 without starting a server. The file
#: is never printed.
DRILL_SERVER_SCRIPT = r"""set -u
: "${DRILL_DIR:?DRILL_DIR is required}" "${DRILL_PORT:?DRILL_PORT is required}"
: "${DRILL_DONE_FILE:?DRILL_DONE_FILE is required}"
mkdir -p "$DRILL_DIR/raft" || exit 1
cluster_port=$((DRILL_PORT + 1))
cat > "$DRILL_DIR/drill.hcl" <<HCL || exit 1
storage "raft" {
  path = "$DRILL_DIR/raft"
  node_id = "drill"
  performance_multiplier = 1
}
listener "tcp" {
  address = "127.0.0.1:$DRILL_PORT"
  cluster_address = "127.0.0.1:$cluster_port"
  tls_disable = true
}
api_addr = "http://127.0.0.1:$DRILL_PORT"
cluster_addr = "http://127.0.0.1:$cluster_port"
disable_mlock = true
ui = false
HCL
seal_config=${DRILL_SEAL_CONFIG:-}
if [ -n "$seal_config" ]; then
  if [ ! -r "$seal_config" ] || [ ! -f "$seal_config" ]; then
    echo "drill server: DRILL_SEAL_CONFIG $seal_config is not a readable file" >&2
    exit 1
  fi
  echo "drill server: using the seal configuration in $seal_config"
  bao server -config="$DRILL_DIR/drill.hcl" -config="$seal_config" &
else
  bao server -config="$DRILL_DIR/drill.hcl" &
fi
pid=$!
stopped=0
trap 'stopped=1; kill -TERM "$pid" 2>/dev/null' TERM INT
while kill -0 "$pid" 2>/dev/null; do
  if [ -e "$DRILL_DONE_FILE" ]; then
    stopped=1
    kill -TERM "$pid" 2>/dev/null
    i=0
    while kill -0 "$pid" 2>/dev/null && [ "$i" -lt 30 ]; do
      sleep 0.5
      i=$((i + 1))
    done
    kill -KILL "$pid" 2>/dev/null
    break
  fi
  sleep 0.5
done
wait "$pid"
status=$?
if [ "$stopped" = 1 ]; then
  echo "drill server: stopped after $DRILL_DONE_FILE appeared (server status $status)"
  exit 0
fi
echo "drill server: bao server exited with status $status" >&2
exit "$status"
"""
