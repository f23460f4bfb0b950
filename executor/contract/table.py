"""The contract table: every environment variable the executor reads, in one tuple.

Guarantees:

* :data:`TABLE` holds every row of the section modules, each once, in section order (General,
  Cluster, OpenBao, Storage, Restore, Verify, Delete, Freshness marker, Drill, provider
  credentials) and, within a section, in the order the rows are written; ``docs/executor.md``
  is rendered in this order;
* :data:`BY_NAME` maps each variable name to its row; the parsers read no name outside it;
* :func:`unknown_variables` never raises.
"""

from __future__ import annotations

from collections.abc import Mapping

from executor.contract import (
    vars_general,
    vars_modes,
    vars_openbao,
    vars_providers,
    vars_storage,
)
from executor.contract.envvar import EnvVar

_SECTIONS = (vars_general, vars_openbao, vars_storage, vars_modes, vars_providers)

TABLE: tuple[EnvVar, ...] = tuple(
    v for section in _SECTIONS for v in list(vars(section).values()) if isinstance(v, EnvVar)
)
BY_NAME = {v.name: v for v in TABLE}


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """``OBB_`` variables that are not in the table (typos; ignored, but worth a warning)."""
    return sorted(k for k in environ if k.startswith("OBB_") and k not in BY_NAME)
