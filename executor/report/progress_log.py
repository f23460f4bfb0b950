"""The progress log events a backup writes while it streams (a best-effort second channel).

Guarantees: while a backup streams, the executor logs ``"event": PROGRESS_EVENT`` lines with
the integer fields ``bytes`` and ``bytes_per_second`` at most every :data:`PROGRESS_INTERVAL`
seconds, and one ``"event": STREAMED_EVENT`` line (the same fields plus ``seconds``) when the
stream ends; ``kubectl openbao-backup backup --wait`` follows them. The names are defined here
once, for the executor and the plugin.
"""

from __future__ import annotations

#: Log events of a backup's streaming progress (see this module's docstring).
PROGRESS_EVENT = "snapshot streaming"
STREAMED_EVENT = "snapshot streamed"
#: Seconds between progress lines: often enough for a live rate, few enough that a one-hour
#: stream logs under 2,000 lines.
PROGRESS_INTERVAL = 2.0
