"""Fixtures of the executor tests (the servers come from tests/conftest.py)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import structlog

from executor import secrets


@pytest.fixture(autouse=True)
def _isolate_global_state() -> Iterator[None]:
    """In-process runs of ``executor.__main__.main`` configure logging and register secrets;
    undo both so other tests see the process as it was."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    config = structlog.get_config()
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        structlog.configure(**config)
        secrets.reset_for_tests()
