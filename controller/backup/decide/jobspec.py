"""The executor Job builder: a pure function from (cluster, record, purpose) to a Job manifest.

Guarantees:

* the Job name is given by the caller (derived by :mod:`controller.backup.decide.names`, <= 63
  characters), so a second create answers AlreadyExists: at most one Job per record/purpose;
* the Job is owned by its OpenBaoBackup record (garbage-collected with it) and carries the
  labels the controller's informers select on (:mod:`.vocabulary`); every label value is a
  valid DNS label (a record name longer than 63 characters is shortened with a hash);
* the manifest is plain JSON: every mapping copied from the cached (deep-frozen) spec is
  thawed, so the client can serialise it whatever the spec holds;
* both the Job and its pods carry :data:`RESULT_FINALIZER`: neither can disappear (TTL,
  garbage collection, a human) before the controller has recorded the executor's report;
* hardened pod: runAsNonRoot with a fixed non-root UID, read-only root filesystem, every
  capability dropped, no privilege escalation, seccomp RuntimeDefault, no automounted API
  token; OpenBao login uses a projected, audience-bound token with a short lifetime;
* ``backoffLimit: 0`` (a failed backup is retried by the controller's accounting, never
  silently by the Job controller) and ``activeDeadlineSeconds`` from the cluster's spec; the
  executor's own deadline (``OBB_TIMEOUT``) is set below it so a report is always written;
* credentials are only REFERENCED (``envFrom.secretRef``, secret volumes): the controller never
  reads a Secret; environment variable names come from :mod:`executor.contract`, the single
  definition of the contract;
* the executor image is the controller's own or one its operator trusts
  (:class:`~.images.ImagePolicy`, ``--executor-image-allowlist``): a spec naming another image
  raises :class:`~.images.ImageNotAllowed` and no manifest is built, whatever the purpose.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from controller.backup.decide.images import ImagePolicy, policy_of
from controller.backup.decide.names import fit_label
from controller.backup.decide.spec import Auth, ClusterSpec, KeyRef, Target
from controller.backup.decide.vocabulary import (
    LABEL_BACKUP,
    LABEL_CLUSTER,
    LABEL_MANAGED_BY,
    LABEL_PURPOSE,
    LABEL_RESTORE,
    MANAGED_BY,
    RESULT_FINALIZER,
)
from controller.cache.store import thaw
from controller.kube.resources import OPENBAO_BACKUP, Resource
from executor import contract as c

Purpose = Literal["backup", "delete", "verify", "restore", "drill"]
OPENBAO_PURPOSES: frozenset[str] = frozenset({"backup", "restore", "drill"})
"""Purposes whose Job talks to OpenBao (and so gets its address, auth and CA)."""


@dataclass(frozen=True)
class RestoreRun:
    """What a ``verify`` or ``restore`` Job restores: the key, and for restore, force."""

    key: str
    force: bool = False


JSON = dict[str, Any]

__all__ = [
    "DEFAULT_RESOURCES",
    "EXECUTOR_UID",
    "RESULT_FINALIZER",
    "Purpose",
    "RestoreRun",
    "build_job",
]

EXECUTOR_UID = 65532
TOKEN_DIR = "/var/run/secrets/openbao-backup"
STATIC_TOKEN_DIR = "/var/run/secrets/openbao-backup-token"
STORAGE_SECRET_DIR = "/var/run/secrets/openbao-backup-storage"
IRSA_TOKEN_DIR = "/var/run/secrets/eks.amazonaws.com/serviceaccount"
OPENBAO_CA_DIR = "/etc/openbao-backup/openbao-ca"
STORAGE_CA_DIR = "/etc/openbao-backup/storage-ca"
TERMINATION_LOG = "/dev/termination-log"
GCS_CREDENTIALS_KEY = "credentials.json"
DEFAULT_RESOURCES: Mapping[str, Any] = {
    "requests": {"cpu": "100m", "memory": "128Mi"},
    "limits": {"memory": "512Mi"},
}


def build_job(
    *,
    cluster: ClusterSpec,
    record: Mapping[str, Any],
    job_name: str,
    purpose: Purpose,
    image: str | ImagePolicy,
    ttl_seconds_after_finished: int,
    delete_keys: Sequence[str] = (),
    target_override: Target | None = None,
    auth_override: Auth | None = None,
    restore: RestoreRun | None = None,
    owner: Resource = OPENBAO_BACKUP,
) -> JSON:
    """The Job for ``purpose`` of ``record`` (an OpenBaoBackup, or for ``verify`` and
    ``restore`` an OpenBaoRestore: ``owner=OPENBAO_RESTORE``) of ``cluster``. ``image`` is the
    controller's :class:`~.images.ImagePolicy` (a plain reference trusts that image alone);
    :class:`~.images.ImageNotAllowed` if the spec names an image it does not trust."""
    backup = cluster.backup
    assert backup is not None, "build_job needs a cluster with spec.backup"
    executor_image = policy_of(image).executor_image(backup.executor.image)
    assert (restore is not None) == (purpose in ("verify", "restore", "drill")), "what to restore"
    target = target_override or backup.target
    meta = record["metadata"]
    deadline = backup.executor.active_deadline_seconds
    owner_label = LABEL_BACKUP if owner == OPENBAO_BACKUP else LABEL_RESTORE
    labels = {
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_CLUSTER: cluster.name,
        owner_label: fit_label(str(meta["name"])),
        LABEL_PURPOSE: purpose,
    }
    env: dict[str, str] = {
        c.TERMINATION_MESSAGE_PATH.name: TERMINATION_LOG,
        c.TIMEOUT.name: str(max(deadline - 20, 10)),
        c.CLUSTER_NAMESPACE.name: cluster.namespace,
        c.CLUSTER_NAME.name: cluster.name,
        c.PROVIDER.name: target.provider,
        c.BUCKET.name: target.bucket,
        c.PATH_PREFIX.name: target.path_prefix,
    }
    volumes: list[JSON] = [{"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}}]
    mounts: list[JSON] = [{"name": "tmp", "mountPath": "/tmp"}]
    env_from: list[JSON] = []

    def mount_ref(vol: str, ref: KeyRef, directory: str, *, configmap: bool = False) -> str:
        source = (
            {"configMap": {"name": ref.name, "items": [{"key": ref.key, "path": "ca.crt"}]}}
            if configmap
            else {"secret": {"secretName": ref.name, "items": [{"key": ref.key, "path": "ca.crt"}]}}
        )
        volumes.append({"name": vol, **source})
        mounts.append({"name": vol, "mountPath": directory, "readOnly": True})
        return f"{directory}/ca.crt"

    # -- storage ------------------------------------------------------------------------------
    optional = {
        c.ENDPOINT.name: target.endpoint,
        c.REGION.name: target.region if target.provider == "s3" else None,
        c.GCS_PROJECT.name: target.gcs_project,
        c.AZURE_ACCOUNT.name: target.azure_account,
    }
    env.update({k: str(v) for k, v in optional.items() if v})
    if target.provider == "s3" and target.use_path_style is not None:
        env[c.USE_PATH_STYLE.name] = "true" if target.use_path_style else "false"
    if target.provider == "gcs":
        env[c.EMULATOR.name] = "true" if target.gcs_emulator else "false"
    if purpose == "backup":
        if target.part_size:
            env[c.PART_SIZE.name] = target.part_size
        if target.concurrency:
            env[c.CONCURRENCY.name] = str(target.concurrency)
    if target.ca_secret is not None:
        env[c.STORAGE_CACERT.name] = mount_ref("storage-ca", target.ca_secret, STORAGE_CA_DIR)
    if target.credentials_secret:
        if target.provider == "gcs":
            volumes.append(
                {"name": "storage-credentials", "secret": {"secretName": target.credentials_secret}}
            )
            mounts.append(
                {"name": "storage-credentials", "mountPath": STORAGE_SECRET_DIR, "readOnly": True}
            )
            env[c.GOOGLE_APPLICATION_CREDENTIALS.name] = (
                f"{STORAGE_SECRET_DIR}/{GCS_CREDENTIALS_KEY}"
            )
        else:
            env_from.append({"secretRef": {"name": target.credentials_secret}})
    if target.provider == "s3" and target.role_arn:
        env[c.AWS_ROLE_ARN.name] = target.role_arn
        env[c.AWS_WEB_IDENTITY_TOKEN_FILE.name] = f"{IRSA_TOKEN_DIR}/token"
        volumes.append(_projected_token("aws-iam-token", "sts.amazonaws.com", 3600))
        mounts.append({"name": "aws-iam-token", "mountPath": IRSA_TOKEN_DIR, "readOnly": True})

    # -- OpenBao (backup and restore only: delete and verify Jobs never talk to OpenBao) -----
    if purpose in OPENBAO_PURPOSES:
        auth = auth_override or backup.auth
        env.update({c.OPENBAO_ADDR.name: cluster.address, c.AUTH_METHOD.name: auth.method})
        if purpose == "backup":
            env.update(
                {
                    c.TRIGGER.name: str(record.get("spec", {}).get("trigger") or "manual"),
                    c.BACKUP_NAME.name: str(meta["name"]),
                    c.CLUSTER_UID.name: cluster.uid,
                }
            )
            if backup.marker is not None:
                env[c.MARKER_PATH.name] = backup.marker.path
                env[c.MARKER_KV_VERSION.name] = str(backup.marker.kv_version)
        if auth.method in ("jwt", "kubernetes"):
            env[c.AUTH_MOUNT.name] = auth.mount
            env[c.AUTH_ROLE.name] = str(auth.role)
            env[c.AUTH_TOKEN_FILE.name] = f"{TOKEN_DIR}/token"
            volumes.append(_projected_token("openbao-token", auth.audience, 600))
            mounts.append({"name": "openbao-token", "mountPath": TOKEN_DIR, "readOnly": True})
        elif auth.token_secret is not None:
            ref = auth.token_secret
            volumes.append(
                {
                    "name": "openbao-static-token",
                    "secret": {
                        "secretName": ref.name,
                        "items": [{"key": ref.key, "path": "token"}],
                    },
                }
            )
            mounts.append(
                {"name": "openbao-static-token", "mountPath": STATIC_TOKEN_DIR, "readOnly": True}
            )
            env[c.OPENBAO_TOKEN_FILE.name] = f"{STATIC_TOKEN_DIR}/token"
        if cluster.ca_configmap is not None:
            env[c.OPENBAO_CACERT.name] = mount_ref(
                "openbao-ca", cluster.ca_configmap, OPENBAO_CA_DIR, configmap=True
            )
        elif cluster.ca_secret is not None:
            env[c.OPENBAO_CACERT.name] = mount_ref("openbao-ca", cluster.ca_secret, OPENBAO_CA_DIR)
    if purpose == "delete":
        env[c.DELETE_KEYS.name] = json.dumps(list(delete_keys), separators=(",", ":"))
    elif purpose == "verify" and restore is not None:
        env[c.VERIFY_KEY.name] = restore.key
    elif purpose == "drill" and restore is not None:
        env[c.DRILL_KEY.name] = restore.key
    elif purpose == "restore" and restore is not None:
        env[c.RESTORE_KEY.name] = restore.key
        env[c.RESTORE_FORCE.name] = "true" if restore.force else "false"

    ex = backup.executor
    container: JSON = {
        "name": "executor",
        "image": executor_image,
        "command": ["python", "-m", "executor", purpose],
        "env": [{"name": k, "value": v} for k, v in sorted(env.items())],
        "volumeMounts": mounts,
        "resources": thaw(ex.resources) if ex.resources else thaw(DEFAULT_RESOURCES),
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    if env_from:
        container["envFrom"] = env_from
    if ex.image_pull_policy:
        container["imagePullPolicy"] = ex.image_pull_policy
    pod_spec: JSON = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": EXECUTOR_UID,
            "runAsGroup": EXECUTOR_UID,
            "fsGroup": EXECUTOR_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": volumes,
        "activeDeadlineSeconds": deadline,
        "terminationGracePeriodSeconds": 30,
    }
    if ex.service_account_name:
        pod_spec["serviceAccountName"] = ex.service_account_name
    if ex.node_selector:
        pod_spec["nodeSelector"] = thaw(ex.node_selector)
    if ex.tolerations:
        pod_spec["tolerations"] = [thaw(t) for t in ex.tolerations]
    if ex.priority_class_name:
        pod_spec["priorityClassName"] = ex.priority_class_name
    if ex.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": n} for n in ex.image_pull_secrets]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name,
            "namespace": cluster.namespace,
            "labels": labels,
            "finalizers": [RESULT_FINALIZER],
            "ownerReferences": [
                {
                    "apiVersion": owner.api_version,
                    "kind": owner.kind,
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": deadline,
            "ttlSecondsAfterFinished": ttl_seconds_after_finished,
            "template": {
                "metadata": {
                    "labels": {**thaw(ex.pod_labels), **labels},
                    "annotations": thaw(ex.pod_annotations),
                    "finalizers": [RESULT_FINALIZER],
                },
                "spec": pod_spec,
            },
        },
    }


def _projected_token(name: str, audience: str, seconds: int) -> JSON:
    return {
        "name": name,
        "projected": {
            "sources": [
                {
                    "serviceAccountToken": {
                        "audience": audience,
                        "expirationSeconds": max(seconds, 600),
                        "path": "token",
                    }
                }
            ],
        },
    }
