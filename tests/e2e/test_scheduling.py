"""Scheduled backups: one record and one Job per window, across replicas and crashes."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from devenv.controller import ControllerProcess

from tests.e2e.conftest import Env, until

pytestmark = pytest.mark.integration


async def test_per_minute_schedule_with_two_replicas(
    env: Env, controller_kubeconfig: Path, session_dir: Path
) -> None:
    standby = ControllerProcess(
        kubeconfig=controller_kubeconfig,
        workdir=session_dir / "controller",
        identity="controller-1",
    )
    standby.start()
    try:
        created = dt.datetime.now(dt.UTC)
        await env.create_cluster("bao", schedule="* * * * *", startingDeadlineSeconds=300)

        async def first_window() -> dict[str, Any] | None:
            for rec in await env.backups("bao"):
                if (rec.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                    return rec
            return None

        rec = await until(first_window, timeout=150, what="the first scheduled backup")
        assert rec["status"]["phase"] == "Succeeded", rec["status"]
        assert rec["spec"]["trigger"] == "scheduled"
        window = dt.datetime.fromisoformat(rec["status"]["scheduledTime"].replace("Z", "+00:00"))
        assert window > created and window.second == 0
        assert rec["metadata"]["name"] == f"bao-{window:%Y%m%d%H%M}"

        async def next_is_set() -> dict[str, Any] | None:
            obj = await env.get("openbaoclusters", "bao")
            backup = ((obj or {}).get("status") or {}).get("backup") or {}
            return backup if backup.get("lastAttemptScheduledTime") else None

        backup = await until(next_is_set, what="status after the first window")
        assert backup["lastAttemptScheduledTime"] == rec["status"]["scheduledTime"]
        nxt = dt.datetime.fromisoformat(str(backup["nextScheduledBackup"]).replace("Z", "+00:00"))
        assert nxt > window and nxt.second == 0
        # what the backup-age alert compares the age with
        assert env.metric("openbao_backup_schedule_interval_seconds", cluster="bao") == 60.0
        assert env.metric("openbao_backup_suspended", cluster="bao") == 0.0
        # two replicas, one window: exactly one record and one Job for it
        names = [
            r["metadata"]["name"]
            for r in await env.backups("bao")
            if r["status"].get("scheduledTime") == rec["status"]["scheduledTime"]
        ]
        assert names == [rec["metadata"]["name"]]
        jobs = [
            j.metadata.name
            for j in await env.jobs()
            if j.metadata.name.startswith(str(rec["metadata"]["name"]))
        ]
        assert jobs == [f"{rec['metadata']['name']}-backup"]
        standby.check_alive()
    finally:
        standby.stop()


async def test_controller_killed_while_job_runs(env: Env) -> None:
    await env.create_cluster("bao")
    await env.trigger("bao", "crash")

    async def job_exists() -> list[object]:
        return await env.jobs()

    jobs = await until(job_exists, interval=0.05, what="the backup Job")
    env.controller.kill()  # SIGKILL: no drain, no lease release
    try:

        async def job_finished() -> bool:
            for job in await env.jobs():
                for cond in job.status.conditions or ():
                    if cond.type in ("Complete", "Failed") and cond.status == "True":
                        return True
            return False

        await until(job_finished, what="the Job to finish while the controller is down")
    finally:
        env.controller.start()
    name = jobs[0].metadata.name.removesuffix("-backup")
    done = await env.wait_phase(name, {"Succeeded", "Failed"})
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert [j.metadata.name for j in await env.jobs()] == [jobs[0].metadata.name]

    async def counted() -> dict[str, Any] | None:
        obj = await env.get("openbaoclusters", "bao")
        backup = ((obj or {}).get("status") or {}).get("backup") or {}
        return backup if backup.get("lastBackupRecord") == name else None

    backup = await until(counted, what="the outcome recorded after the restart")
    assert backup["consecutiveFailures"] == 0

    async def finalizers_released() -> bool:
        job = next(j for j in await env.jobs() if j.metadata.name == jobs[0].metadata.name)
        return not (job.metadata.finalizers or [])

    await until(finalizers_released, what="the Job's result finalizer removed")


async def test_downtime_runs_one_catch_up_and_reports_the_rest_missed(env: Env) -> None:
    """The controller is down across two windows: on restart exactly one catch-up backup
    (the newest window) runs; the older window is reported missed, never silently dropped."""
    await env.create_cluster("bao", schedule="* * * * *")

    async def idle() -> dict[str, Any] | None:
        obj = await env.get("openbaoclusters", "bao")
        backup = ((obj or {}).get("status") or {}).get("backup") or {}
        return backup if backup.get("nextScheduledBackup") else None

    first_next = dt.datetime.fromisoformat(
        str((await until(idle, what="nextScheduledBackup"))["nextScheduledBackup"]).replace(
            "Z", "+00:00"
        )
    )
    env.controller.kill()
    try:
        second = first_next + dt.timedelta(minutes=1)

        async def two_windows_passed() -> bool:
            return dt.datetime.now(dt.UTC) > second + dt.timedelta(seconds=2)

        await until(two_windows_passed, timeout=200, interval=1.0, what="two windows to pass")
        assert await env.backups("bao") == []
    finally:
        env.controller.start()

    async def one_done() -> list[dict[str, Any]] | None:
        recs = await env.backups("bao")
        done = [r for r in recs if (r.get("status") or {}).get("phase") == "Succeeded"]
        return recs if done else None

    recs = await until(one_done, what="the catch-up backup")
    assert len(recs) == 1, [r["metadata"]["name"] for r in recs]
    window = recs[0]["status"]["scheduledTime"]
    assert dt.datetime.fromisoformat(window.replace("Z", "+00:00")) >= second

    async def missed() -> dict[str, Any] | None:
        obj = await env.get("openbaoclusters", "bao")
        backup = ((obj or {}).get("status") or {}).get("backup") or {}
        return backup if backup.get("missedWindows") else None

    backup = await until(missed, what="missed windows in status")
    assert backup["missedWindows"] >= 1
    assert await until(lambda: env.events("MissedSchedule"), what="MissedSchedule event")
    assert (env.metric("openbao_backup_missed_schedules_total", cluster="bao") or 0) >= 1
