"""The list of reconcilers the controller runs: the one place the backup manager plugs in.

To add a reconciler, write a module in this package that defines a
:class:`~controller.reconcilers.base.ReconcilerSpec` and add it to :func:`registry`.
Today: the backup manager (:mod:`controller.reconcilers.backups`), and an observe-only
placeholder for OpenBaoRestore (restores are not implemented yet).
"""

from __future__ import annotations

from controller.reconcilers import backups, observer
from controller.reconcilers.base import Context, ReconcilerSpec, Watch, owner_keys

__all__ = ["Context", "ReconcilerSpec", "Watch", "owner_keys", "registry"]


def registry() -> tuple[ReconcilerSpec, ...]:
    """Every reconciler the controller runs, in start order."""
    return (backups.SPEC, observer.RESTORES)
