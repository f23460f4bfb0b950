"""Object storage for snapshots: one :class:`~executor.storage.base.SnapshotSink` per provider.

Guarantees: :func:`open_sink` imports only the selected provider's client library, and the
sink it yields is closed (connections, credentials) when the context exits.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from executor.contract import StorageSettings
from executor.storage.base import SnapshotSink


@asynccontextmanager
async def open_sink(*, settings: StorageSettings) -> AsyncIterator[SnapshotSink]:
    """The sink for ``settings.provider``."""
    if settings.provider == "s3":
        from executor.storage.s3 import open_s3

        async with open_s3(settings=settings) as s3:
            yield s3
    elif settings.provider == "gcs":
        from executor.storage.gcs import open_gcs

        async with open_gcs(settings=settings) as gcs:
            yield gcs
    else:
        from executor.storage.azure import open_azure

        async with open_azure(settings=settings) as azure:
            yield azure
