"""Entry point: ``python -m executor backup|restore|delete|verify|drill``.

Guarantees:

* the configuration comes only from the environment (:mod:`executor.contract`); a bad one ends
  the run with exit code 10 before any network call;
* whatever happens - success, an error of our tree, an unexpected exception, the
  ``OBB_TIMEOUT`` deadline, SIGTERM/SIGINT - the run ends by writing ONE result report
  (:mod:`executor.report`) to ``OBB_TERMINATION_MESSAGE_PATH`` and to stdout, and exits with
  the report's exit code; a deadline or signal is reported with the error class of the phase
  it interrupted (:mod:`executor.progress`), after in-flight uploads were aborted;
* logs are JSON lines on stderr; the report's error message and every log line pass through
  :func:`executor.secrets.scrub`;
* in ``drill`` mode, ``OBB_DRILL_DONE_FILE`` (when set) is created after the report was
  written, whatever happened, even with a bad configuration: the scratch OpenBao's container
  stops when it appears.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import signal
import sys
import traceback
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path

from executor import contract, log
from executor.contract import Config, load_config
from executor.errors import BY_CLASS, ConfigurationError, ExecutorError, InternalError
from executor.progress import Progress
from executor.report import EXIT_CODES, Report, ReportError
from executor.secrets import scrub

USAGE = (
    "usage: python -m executor backup|restore|delete|verify|drill   "
    "(configuration: OBB_* environment)"
)

Runner = Callable[..., Awaitable[None]]


def _runner(mode: str) -> Runner:
    if mode == "backup":
        from executor.backup import run_backup

        return run_backup
    if mode == "restore":
        from executor.restore import run_restore

        return run_restore
    if mode == "verify":
        from executor.verify import run_verify

        return run_verify
    if mode == "drill":
        from executor.drill import run_drill

        return run_drill
    from executor.delete import run_delete

    return run_delete


class _Stopped(Exception):
    """Raised into the run when a termination signal arrives."""


async def _run(*, config: Config, progress: Progress) -> ExecutorError | None:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    received: list[str] = []

    def on_signal(name: str) -> None:
        if not received:
            received.append(name)
            task.cancel(f"received {name}")

    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread
            loop.add_signal_handler(sig, on_signal, sig.name)
    deadline = config.timeout or None
    timeout_cm = asyncio.timeout(deadline)
    try:
        async with timeout_cm:
            await _runner(config.mode)(config=config, progress=progress)
        return None
    except ExecutorError as exc:
        return exc
    except TimeoutError:
        if timeout_cm.expired():
            return _phase_error(
                progress,
                f"deadline OBB_TIMEOUT={contract.env_number(config.timeout)}"
                f"s exceeded while {progress.phase}",
            )
        return _internal(sys.exc_info()[1])
    except asyncio.CancelledError:
        if received:
            return _phase_error(progress, f"terminated by {received[0]} while {progress.phase}")
        raise
    except Exception as exc:
        return _internal(exc)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)


def _phase_error(progress: Progress, message: str) -> ExecutorError:
    return BY_CLASS[progress.phase_class](message)


def _internal(exc: BaseException | None) -> ExecutorError:
    text = "".join(traceback.format_exception(exc)) if exc else "unknown"
    log.get_logger("executor").error("unexpected error", traceback=text)
    name = exc.__class__.__name__ if exc else "Exception"
    return InternalError(f"unexpected {name}: {exc}")


def _report(
    *, mode: str, progress: Progress, started: dt.datetime, error: ExecutorError | None
) -> Report:
    finished = dt.datetime.now(dt.UTC)
    report_error = None
    if error is not None:
        report_error = ReportError(error.error_class, scrub(error.message))
    return Report(
        mode=mode,  # type: ignore[arg-type]
        outcome="failed" if error else "succeeded",
        started_at=started,
        finished_at=finished,
        key=progress.key,
        manifest_key=progress.manifest_key,
        size=progress.size,
        sha256=progress.sha256,
        openbao_version=progress.openbao_version,
        raft_index=progress.raft_index,
        raft_term=progress.raft_term,
        deleted_keys=progress.deleted_keys,
        error=report_error,
        marker=progress.marker,
        drill=progress.drill,
        cleaned=progress.cleaned,
    )


def _write(report: Report, path: Path) -> None:
    text = report.to_json()
    try:
        path.write_text(text)
    except OSError as exc:
        log.get_logger("executor").error(
            "cannot write the termination message", path=str(path), error=str(exc)
        )
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    env = os.environ if environ is None else environ
    started = dt.datetime.now(dt.UTC)
    level = env.get(contract.LOG_LEVEL.name, "info").strip().lower()
    log.configure(level=level if level in ("debug", "info", "warning", "error") else "info")
    if len(args) != 1 or args[0] not in contract.MODES:
        sys.stderr.write(USAGE + "\n")
        return EXIT_CODES["configuration"]
    mode = args[0]
    try:
        return _main(mode, env, started)
    finally:
        if mode == "drill":
            _signal_done(env.get(contract.DRILL_DONE_FILE.name, "").strip())


def _signal_done(path: str) -> None:
    """Create the drill's done file (best effort: a failure is logged)."""
    if not path:
        return
    try:
        Path(path).touch()
    except OSError as exc:
        log.get_logger("executor").error(
            "cannot create the drill's done file", path=path, error=str(exc)
        )


def _main(mode: str, env: Mapping[str, str], started: dt.datetime) -> int:
    logger = log.get_logger("executor")
    progress = Progress(mode=mode)
    term_path = Path(
        env.get(contract.TERMINATION_MESSAGE_PATH.name, "").strip()
        or contract.TERMINATION_MESSAGE_PATH.default
        or "/dev/termination-log"
    )
    error: ExecutorError | None
    try:
        config = load_config(mode=mode, environ=env)
    except ConfigurationError as exc:
        error = exc
    else:
        term_path = config.termination_message_path
        from executor import __version__

        logger.info(
            "starting",
            mode=mode,
            version=__version__,
            provider=config.storage.provider,
            bucket=config.storage.bucket,
            namespace=config.cluster.namespace,
            cluster=config.cluster.name,
        )
        unknown = contract.unknown_variables(env)
        if unknown:
            logger.warning("ignoring unknown variables (typos?)", variables=unknown)
        error = asyncio.run(_run(config=config, progress=progress))
    report = _report(mode=mode, progress=progress, started=started, error=error)
    if error is None:
        logger.info(
            "finished",
            mode=mode,
            outcome="succeeded",
            key=progress.key,
            duration_seconds=report.duration_seconds,
        )
    else:
        logger.error(
            "finished",
            mode=mode,
            outcome="failed",
            error_class=error.error_class,
            error=scrub(error.message),
            phase=progress.phase,
        )
    _write(report, term_path)
    return report.exit_code


if __name__ == "__main__":
    sys.exit(main())
