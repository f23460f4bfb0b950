"""``python -m controller``: parse settings, configure logging, run the app.

Exit codes: 0 clean shutdown (SIGTERM/SIGINT), 1 leadership lost or fatal error,
2 configuration error.
"""

from __future__ import annotations

import asyncio
import sys

from controller import logging as controller_logging
from controller import settings as controller_settings
from controller.app import main
from controller.errors import ConfigError


def run() -> int:
    try:
        settings = controller_settings.parse()
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    controller_logging.configure(log_format=settings.log_format, level=settings.log_level)
    return asyncio.run(main(settings))


if __name__ == "__main__":
    sys.exit(run())
