"""The project's CRDs as documents (manifests/crds/*.yaml), for fixtures and dev tools."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

CRD_DIR = Path(__file__).resolve().parents[2] / "manifests" / "crds"


def load_crds() -> list[dict[str, Any]]:
    """Every CRD document in manifests/crds/, in file-name order."""
    docs: list[dict[str, Any]] = []
    for path in sorted(CRD_DIR.glob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return docs
