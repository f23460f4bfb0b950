"""What a row of the contract table is, and the vocabularies and limits the rows name.

Guarantees:

* :class:`EnvVar` is immutable; :func:`row` builds one and is the only way the section modules
  (:mod:`executor.contract.vars_general` ... :mod:`executor.contract.vars_providers`) make
  rows;
* :data:`MODES`, :data:`PROVIDERS` and :data:`AUTH_METHODS` are exactly the members of the
  :data:`Mode`, :data:`Provider` and :data:`AuthMethod` literals, in their order;
* the limits (:data:`DEFAULT_PART_SIZE`, :data:`MAX_DELETE_KEYS_JSON`, :data:`MAX_KEY_LENGTH`)
  are defined here once: the rows quote them and the parsers enforce them.

Imports only the standard library.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

Mode = Literal["backup", "restore", "delete", "verify", "drill"]
Provider = Literal["s3", "gcs", "azure"]
AuthMethod = Literal["jwt", "kubernetes", "token"]

MODES: tuple[Mode, ...] = get_args(Mode)
PROVIDERS: tuple[Provider, ...] = get_args(Provider)
AUTH_METHODS: tuple[AuthMethod, ...] = get_args(AuthMethod)

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

#: OBB_PART_SIZE when unset, per provider; measured with hack/bench/executor_throughput.py and
#: hack/bench/executor_variants.py (docs/executor-performance.md). Every provider gets 64 MiB
#: of part buffers at the default concurrency (4). S3 and Azure: 4 x 16 MiB; 8 x 8, 16 x 4
#: and 32 x 2 MiB were within this machine's noise on moto and Azurite (throughput bound by
#: the emulators), so the middle keeps both fewer requests than 8 MiB parts and more parallel
#: round trips than 2 x 32 MiB. Re-measured on S3 at 256 MiB (3 interleaved runs): 4 x 16
#: 82 MiB/s 1.69 CPU s, 5 x 16 (OBB_CONCURRENCY=5) 84 MiB/s 1.83 s and 16 MiB more RSS,
#: 8 x 8 93 MiB/s 1.89 s: no gain beyond the noise for more CPU, so 4 stays. GCS: 2 x 32 MiB
#: (one chunk sending, one filling), because a resumable upload sends one chunk at a time
#: and fake-gcs-server re-copies the whole object on every chunk: 16 MiB chunks ran at 45
#: MiB/s, 32 MiB at 56, 64 MiB at 84 (RSS 86 / 117 / 181 MiB); 64 MiB would cost 128 MiB of
#: buffers, twice the other providers', for an emulator's quadratic cost that GCS does not have.
DEFAULT_PART_SIZE = {"s3": 16 * MiB, "gcs": 32 * MiB, "azure": 16 * MiB}

#: Largest accepted ``OBB_DELETE_KEYS`` JSON, so a delete report always fits in 4 KiB.
MAX_DELETE_KEYS_JSON = 3000
#: Longest snapshot key accepted (the OpenBaoRestore CRD's limit; S3 and GCS allow 1024 bytes).
MAX_KEY_LENGTH = 1024


@dataclass(frozen=True)
class EnvVar:
    """One row of the contract table."""

    name: str
    meaning: str
    default: str | None = None
    modes: tuple[Mode, ...] = MODES
    providers: tuple[Provider, ...] = PROVIDERS
    required: str = "no"
    secret: bool = False
    standard: bool = False
    section: str = ""


#: Modes that talk to the live OpenBao.
BAO_MODES: tuple[Mode, ...] = ("backup", "restore")
#: Modes that log in to an OpenBao (drill: to the restored copy).
AUTH_MODES: tuple[Mode, ...] = ("backup", "restore", "drill")


def row(section: str, name: str, meaning: str, **kw: object) -> EnvVar:
    """One row of ``section``; ``kw`` are the other :class:`EnvVar` fields."""
    return EnvVar(name=name, meaning=meaning, section=section, **kw)  # type: ignore[arg-type]
