"""The executor image allowlist (issue 11, security): pure decisions, the Job builders that
apply them, the failure they raise, and the setting that configures them."""

from __future__ import annotations

from typing import Any

import pytest

from controller.backup.decide import names
from controller.backup.decide.drill import DEFAULT_OPENBAO_IMAGE
from controller.backup.decide.drilljob import build_drill_job
from controller.backup.decide.failures import Kind, classify
from controller.backup.decide.images import (
    IMAGE_NOT_ALLOWED,
    ImageNotAllowed,
    ImagePolicy,
    matches,
    policy_of,
)
from controller.backup.decide.jobspec import Purpose, RestoreRun, build_job
from controller.backup.decide.spec import ClusterSpec, parse_cluster
from controller.errors import ConfigError
from controller.settings import Settings, parse

OWN = "ghcr.io/openbao-backup/openbao-backup:0.1.0"
DIGEST = "sha256:" + "a" * 64
POLICY = ImagePolicy(
    default=OWN,
    allowlist=(
        "registry.acme.internal/openbao/*",
        "ghcr.io/acme/openbao-backup@sha256:*",
        "ghcr.io/acme/openbao-backup:0.2.0",
        "quay.io/acme/openbao:2.4.1",
    ),
)
RECORD = {
    "metadata": {"name": "bao-1", "namespace": "team-a", "uid": "r-1"},
    "spec": {"cluster": "bao", "trigger": "manual"},
    "status": {"key": "team-a/bao/20261130T120000Z-0123abcd.snap"},
}


@pytest.mark.parametrize(
    ("image", "entry", "want"),
    [
        ("ghcr.io/a/b:1", "ghcr.io/a/b:1", True),
        ("ghcr.io/a/b:1", "ghcr.io/a/b:2", False),
        ("ghcr.io/a/b:10", "ghcr.io/a/b:1", False),  # exact means exact, not a prefix
        ("ghcr.io/a/b", "ghcr.io/a/b:1", False),
        (f"ghcr.io/a/b@{DIGEST}", "ghcr.io/a/b@sha256:*", True),
        ("ghcr.io/a/b:1", "ghcr.io/a/b@sha256:*", False),  # a tag is not a digest
        ("ghcr.io/a/b-evil@sha256:00", "ghcr.io/a/b@sha256:*", False),
        ("registry.x/openbao/backup:1", "registry.x/openbao/*", True),
        ("registry.x/openbao-evil/backup:1", "registry.x/openbao/*", False),
        ("GHCR.io/a/b:1", "ghcr.io/a/b:1", False),  # compared as written
        ("anything/at:all", "*", True),
    ],
)
def test_an_entry_is_an_exact_reference_or_a_prefix_ending_in_a_star(
    image: str, entry: str, want: bool
) -> None:
    assert matches(image, entry) is want


@pytest.mark.parametrize(
    ("image", "want"),
    [
        (OWN, True),  # the controller's own image is always trusted
        ("registry.acme.internal/openbao/backup:1", True),
        (f"ghcr.io/acme/openbao-backup@{DIGEST}", True),
        ("ghcr.io/acme/openbao-backup:0.2.0", True),
        ("ghcr.io/acme/openbao-backup:0.2.1", False),
        ("ghcr.io/openbao-backup/openbao-backup:latest", False),
        ("evil.example/exfiltrate:latest", False),
        (DEFAULT_OPENBAO_IMAGE, False),  # the drill's default is not an executor image
    ],
)
def test_which_executor_images_a_policy_runs(image: str, want: bool) -> None:
    assert POLICY.allows(image, builtin=OWN) is want
    if want:
        assert POLICY.executor_image(image) == image
    else:
        with pytest.raises(ImageNotAllowed, match=r"spec\.backup\.executor\.image"):
            POLICY.executor_image(image)


def test_the_default_policy_runs_only_the_controllers_own_image() -> None:
    policy = policy_of(OWN)
    assert policy == ImagePolicy(default=OWN)
    assert policy_of(policy) is policy
    assert policy.executor_image(None) == OWN
    assert policy.executor_image(OWN) == OWN
    with pytest.raises(ImageNotAllowed) as info:
        policy.executor_image("ghcr.io/openbao-backup/openbao-backup:0.1.1")
    message = str(info.value)
    assert "'ghcr.io/openbao-backup/openbao-backup:0.1.1'" in message
    assert OWN in message and "entries: none" in message
    assert policy.openbao_image(DEFAULT_OPENBAO_IMAGE) == DEFAULT_OPENBAO_IMAGE
    with pytest.raises(ImageNotAllowed, match=r"spec\.backup\.verify\.openbaoImage"):
        policy.openbao_image("quay.io/acme/openbao:2.4.1")


def test_star_alone_trusts_every_image() -> None:
    policy = ImagePolicy(default=OWN, allowlist=("*",))
    assert policy.executor_image("evil.example/x:1") == "evil.example/x:1"
    assert policy.openbao_image("evil.example/y:1") == "evil.example/y:1"


def cluster(**backup: Any) -> ClusterSpec:
    spec: dict[str, Any] = {
        "target": {"provider": "s3", "bucket": "b", "credentialsSecretRef": {"name": "creds"}},
        "auth": {"tokenSecretRef": {"name": "root-token"}},
        **backup,
    }
    return parse_cluster(
        {"metadata": {"name": "bao", "namespace": "team-a", "uid": "c-1"}, "spec": {"backup": spec}}
    )


def test_problems_name_every_untrusted_image_of_a_spec() -> None:
    assert POLICY.problems(None) == []
    assert POLICY.problems(cluster().backup) == []
    assert POLICY.problems(cluster(executor={"image": OWN}).backup) == []
    assert POLICY.problems(cluster(verify={"schedule": "@daily"}).backup) == []
    trusted = cluster(
        executor={"image": "ghcr.io/acme/openbao-backup:0.2.0"},
        verify={"schedule": "@daily", "openbaoImage": "quay.io/acme/openbao:2.4.1"},
    )
    assert POLICY.problems(trusted.backup) == []
    bad = cluster(
        executor={"image": "evil.example/a:1"},
        verify={"schedule": "@daily", "openbaoImage": "evil.example/b:1"},
    )
    problems = POLICY.problems(bad.backup)
    assert [p.split(":", 1)[0] for p in problems] == [
        "spec.backup.executor.image",
        "spec.backup.verify.openbaoImage",
    ]
    assert "'evil.example/a:1'" in problems[0] and "'evil.example/b:1'" in problems[1]


def build(spec: ClusterSpec, purpose: Purpose, image: str | ImagePolicy) -> dict[str, Any]:
    restore = RestoreRun(key="k.snap") if purpose in ("verify", "restore", "drill") else None
    return build_job(
        cluster=spec,
        record=RECORD,
        job_name=names.job_name(record="bao-1", purpose=names.JobPurpose.BACKUP),
        purpose=purpose,
        image=image,
        ttl_seconds_after_finished=60,
        delete_keys=["k.snap"] if purpose == "delete" else (),
        restore=restore,
    )


PURPOSES: tuple[Purpose, ...] = ("backup", "delete", "verify", "restore", "drill")


@pytest.mark.parametrize("purpose", PURPOSES)
def test_no_job_of_any_purpose_runs_an_untrusted_image(purpose: Purpose) -> None:
    """The escalation: a spec naming any image (with any Secret) got a Job running it."""
    evil = cluster(executor={"image": "evil.example/exfiltrate:latest"})
    with pytest.raises(ImageNotAllowed, match=r"evil\.example/exfiltrate:latest"):
        build(evil, purpose, POLICY)
    with pytest.raises(ImageNotAllowed):
        build(evil, purpose, OWN)  # a plain reference trusts that image alone
    job = build(cluster(), purpose, POLICY)
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == OWN
    allowed = cluster(executor={"image": f"ghcr.io/acme/openbao-backup@{DIGEST}"})
    job = build(allowed, purpose, POLICY)
    image = job["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == f"ghcr.io/acme/openbao-backup@{DIGEST}"


def drill_job(spec: ClusterSpec, image: str | ImagePolicy) -> dict[str, Any]:
    return build_drill_job(
        cluster=spec,
        record=RECORD,
        job_name="bao-1-drill",
        image=image,
        ttl_seconds_after_finished=60,
    )


def test_the_drills_scratch_openbao_image_is_checked_too() -> None:
    """The scratch server receives the unseal keys and mounts the seal stanza."""
    default = drill_job(cluster(verify={"schedule": "@daily"}), OWN)
    images = {c["name"]: c["image"] for c in default["spec"]["template"]["spec"]["containers"]}
    assert images == {"executor": OWN, "openbao": DEFAULT_OPENBAO_IMAGE}
    evil = cluster(verify={"schedule": "@daily", "openbaoImage": "evil.example/bao:1"})
    with pytest.raises(ImageNotAllowed, match=r"spec\.backup\.verify\.openbaoImage"):
        drill_job(evil, POLICY)
    trusted = cluster(verify={"schedule": "@daily", "openbaoImage": "quay.io/acme/openbao:2.4.1"})
    job = drill_job(trusted, POLICY)
    assert job["spec"]["template"]["spec"]["containers"][1]["image"] == "quay.io/acme/openbao:2.4.1"


def test_an_untrusted_image_is_a_terminal_failure_with_its_own_reason() -> None:
    with pytest.raises(ImageNotAllowed) as info:
        POLICY.executor_image("evil.example/x:1")
    failure = classify(info.value)
    assert failure.kind is Kind.TERMINAL
    assert failure.reason == IMAGE_NOT_ALLOWED == "ExecutorImageNotAllowed"
    assert "spec.backup.executor.image" in failure.message
    assert not failure.ambiguous


def test_the_allowlist_setting_from_flags_and_environment() -> None:
    assert parse([], env={}).executor_image_allowlist == ()
    got = parse(
        [
            "--executor-image-allowlist",
            "ghcr.io/acme/openbao-backup@sha256:*, registry.acme.internal/openbao/*",
            "--executor-image-allowlist",
            "ghcr.io/acme/openbao-backup:0.2.0",
        ],
        env={"OPENBAO_BACKUP_EXECUTOR_IMAGE_ALLOWLIST": "ignored/when:flagged"},
    )
    assert got.executor_image_allowlist == (
        "ghcr.io/acme/openbao-backup@sha256:*",
        "registry.acme.internal/openbao/*",
        "ghcr.io/acme/openbao-backup:0.2.0",
    )
    env = {"OPENBAO_BACKUP_EXECUTOR_IMAGE_ALLOWLIST": "a/b:1,c/d@sha256:*"}
    assert parse([], env=env).executor_image_allowlist == ("a/b:1", "c/d@sha256:*")
    assert parse(["--executor-image-allowlist", "*"], env={}).executor_image_allowlist == ("*",)


@pytest.mark.parametrize(
    "entry",
    [
        "ghcr.io/acme/openbao-backup*",  # would also trust ghcr.io/acme/openbao-backup-evil
        "ghcr.io/*/openbao-backup:1",
        "ghcr.io/acme/openbao backup:1",
        "",
    ],
)
def test_an_allowlist_entry_that_would_trust_more_than_it_says_is_a_config_error(
    entry: str,
) -> None:
    with pytest.raises(ConfigError, match="allowlist entry"):
        Settings(executor_image_allowlist=(entry,))
