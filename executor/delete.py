"""``python -m executor delete``: remove snapshots and their manifests.

Guarantees:

* every key was checked by :func:`executor.contract.load_config` to be a ``.snap`` key directly
  under ``<pathPrefix>/<namespace>/<cluster>/`` before anything is deleted (a key outside it
  fails the whole run with a configuration error and deletes nothing);
* for each key the MANIFEST is deleted first, then the snapshot: an interruption leaves at
  worst a snapshot without manifest, which readers already treat as "not a backup"
  (see :mod:`executor.layout`), never a manifest pointing at nothing;
* deletion is idempotent: absent objects count as deleted; ``deletedKeys`` in the report lists
  the snapshot keys that are now gone, in order, even when a later key fails.
"""

from __future__ import annotations

from executor.contract import Config
from executor.layout import manifest_key
from executor.log import get_logger
from executor.progress import Progress
from executor.storage import open_sink

log = get_logger("executor.delete")


async def run_delete(*, config: Config, progress: Progress) -> None:
    assert config.delete is not None
    progress.deleted_keys = ()
    progress.enter("opening the storage")
    async with open_sink(settings=config.storage) as sink:
        progress.enter("deleting")
        for key in config.delete.keys:
            await sink.delete(key=manifest_key(key))
            await sink.delete(key=key)
            progress.deleted_keys = (*progress.deleted_keys, key)
            log.info("deleted", key=key)
