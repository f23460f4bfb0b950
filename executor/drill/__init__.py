"""``python -m executor drill``: prove a stored backup comes back, in a scratch OpenBao.

The drill Job's pod runs two containers sharing an emptyDir: an OpenBao server started by
:data:`SERVER_SCRIPT` on 127.0.0.1 (``OBB_DRILL_ADDR``), and this executor.

Guarantees (each stated in full by the module that keeps it):

* nothing here talks to the live cluster: the only OpenBao address used is ``OBB_DRILL_ADDR``
  (loopback only), and the scratch server must be UNinitialised;
* the steps, in order: (a) the object is verified against its manifest; (b) the scratch
  server answers ``sys/health``; (c) it is initialised for its seal type; (d) the verified
  object is restored into it with ``snapshot-force``; (e) the restored copy unseals (itself,
  or with the live cluster's keys; Shamir without keys: a PARTIAL success); (f) the freshness
  marker is read back and must match. :mod:`executor.drill.run` keeps (a), (d) and (f) and
  the report, :mod:`executor.drill.scratch` keeps (b), (c) and (e);
* ``OBB_DRILL_DONE_FILE`` is created by :mod:`executor.__main__` when the run ends, whatever
  happened, so the server container stops.
"""

from executor.contract import DRILL_SERVER_SCRIPT
from executor.drill.run import run_drill

__all__ = ["SERVER_SCRIPT", "run_drill"]

#: The scratch server container's ``sh -c`` script (env DRILL_DIR, DRILL_PORT, DRILL_DONE_FILE);
#: defined in :mod:`executor.contract` so the controller can import it from there.
SERVER_SCRIPT = DRILL_SERVER_SCRIPT
