"""The executor's process exit codes.

Guarantees: :data:`EXIT_CODES` gives every error class of :data:`~executor.errors.ErrorClass`
its own non-zero code, distinct from the others and from :data:`EXIT_OK` (0, succeeded);
``docs/executor.md`` lists them and the controller maps a code back to its class.
"""

from __future__ import annotations

from executor.errors import ErrorClass

EXIT_CODES: dict[ErrorClass, int] = {
    "configuration": 10,
    "auth": 11,
    "leader": 12,
    "snapshot": 13,
    "storage": 14,
    "verification": 15,
    "internal": 1,
}
EXIT_OK = 0
