"""Talking to OpenBao: TLS, login, the active node, the snapshot stream and the restore upload.

Guarantees (each stated in full by the module that keeps it):

* TLS is always verified; there is no switch to turn verification off
  (:mod:`executor.tls`);
* authentication is a login with the projected ServiceAccount token, whose token is revoked
  on exit, or a static token file, never revoked; every token is registered as a secret as
  soon as it is read (:mod:`executor.openbao.auth`);
* the snapshot is taken from and restored to the ACTIVE node, and a snapshot counts only if
  the node that served it was the active node for the whole stream
  (:mod:`executor.openbao.leader`);
* the snapshot body is streamed as received, the restore body from an async iterable
  (:mod:`executor.openbao.snapshot_stream`, :mod:`executor.openbao.restore_upload`);
* aiohttp errors are translated in this package, once: connection/TLS/timeouts while locating
  or logging in -> LeaderError, refused credentials -> AuthError, any failure of the snapshot
  stream or a refused restore -> SnapshotError, 403 on a snapshot path -> AuthError.

:class:`OpenBao` (:mod:`executor.openbao.client`) is the one client the executor's modes use.
"""

from executor.openbao.client import OpenBao
from executor.openbao.leader import Leader
from executor.openbao.restore_upload import FORCE_PATH
from executor.openbao.snapshot_stream import SNAPSHOT_PATH, SnapshotStream

__all__ = ["FORCE_PATH", "SNAPSHOT_PATH", "Leader", "OpenBao", "SnapshotStream"]
