"""The list of reconcilers the controller runs: the one place the backup manager plugs in.

To add a reconciler, write a module in this package that defines a
:class:`~controller.reconcilers.base.ReconcilerSpec` and add it to :func:`registry`.
Today: the backup manager (:mod:`controller.reconcilers.backups`), which drives everything of
one OpenBaoCluster: its backups, their deletion, and its restores.
"""

from __future__ import annotations

from controller.reconcilers import backups
from controller.reconcilers.base import Context, ReconcilerSpec, Watch, owner_keys

__all__ = ["Context", "ReconcilerSpec", "Watch", "owner_keys", "registry"]


def registry() -> tuple[ReconcilerSpec, ...]:
    """Every reconciler the controller runs, in start order."""
    return (backups.SPEC,)
