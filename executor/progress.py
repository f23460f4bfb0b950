"""What a run has established so far: the report is built from it whatever happens.

Guarantees: each mode updates :class:`Progress` as facts become true (the key chosen, the
object committed, the manifest written, the keys deleted), and ``phase`` always names the step
in progress, so a deadline or a signal can be reported with the right error class.
"""

from __future__ import annotations

from dataclasses import dataclass

from executor.errors import ErrorClass
from executor.layout import Marker
from executor.report import Cleaned, DrillResult

#: The error class a deadline/termination is reported as, by phase.
PHASE_CLASS: dict[str, ErrorClass] = {
    "starting": "internal",
    "locating the active OpenBao node": "leader",
    "logging in to OpenBao": "auth",
    "opening the storage": "storage",
    "removing abandoned uploads": "storage",
    "streaming the snapshot": "snapshot",
    "committing the snapshot": "storage",
    "writing the manifest": "storage",
    "reading the manifest": "storage",
    "verifying the stored snapshot": "storage",
    "uploading the snapshot to OpenBao": "snapshot",
    "waiting for OpenBao after the restore": "leader",
    "deleting": "storage",
    "writing the freshness marker": "snapshot",
    "starting the scratch OpenBao": "leader",
    "initialising the scratch OpenBao": "leader",
    "unsealing the restored copy": "leader",
    "checking the freshness marker": "verification",
    "finishing": "internal",
}


@dataclass
class Progress:
    mode: str
    phase: str = "starting"
    key: str | None = None
    manifest_key: str | None = None
    size: int | None = None
    sha256: str | None = None
    openbao_version: str | None = None
    raft_index: int | None = None
    raft_term: int | None = None
    deleted_keys: tuple[str, ...] | None = None
    marker: Marker | None = None
    drill: DrillResult | None = None
    cleaned: Cleaned | None = None

    def enter(self, phase: str) -> None:
        assert phase in PHASE_CLASS, phase
        self.phase = phase

    @property
    def phase_class(self) -> ErrorClass:
        return PHASE_CLASS.get(self.phase, "internal")
