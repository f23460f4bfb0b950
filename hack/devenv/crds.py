"""The project's CRDs as documents (charts/openbao-backup/crds/*.yaml, the chart's CRDs and the
only copy: the install manifest is rendered from the chart), for fixtures and dev tools."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

CRD_DIR = Path(__file__).resolve().parents[2] / "charts" / "openbao-backup" / "crds"


def load_crds() -> list[dict[str, Any]]:
    """Every CRD document in CRD_DIR, in file-name order."""
    docs: list[dict[str, Any]] = []
    for path in sorted(CRD_DIR.glob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return docs
