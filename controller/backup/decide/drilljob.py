"""The restore-drill Job: a pure function from (cluster, record) to a two-container Job.

Guarantees:

* the pod runs a scratch OpenBao (``spec.backup.verify.openbaoImage``) listening on the pod's
  own loopback only (``127.0.0.1:<port>``), its Raft storage on an emptyDir, next to the
  executor in mode ``drill``; the two share only that emptyDir (the executor creates the
  "done" file there, which stops the server, so the Job completes);
* the live cluster's unseal keys are mounted from the Secret the user names, into the drill
  pod only (the controller never reads them); without ``unsealKeysSecretRef`` the drill
  verifies what it can and says so; a named Secret that is missing (or lacks the key) fails
  the drill at once with reason ``UnsealKeysMissing``, never a pod stuck until its deadline;
* or, for a cluster that auto-unseals, the live cluster's ``seal`` stanza (a Secret or
  ConfigMap the user names) is mounted into the scratch server only, which then unseals the
  restored copy by itself;
* both images are trusted ones (:class:`~.images.ImagePolicy`): the executor's as in
  :func:`~.jobspec.build_job`, the scratch server's ``openbaoImage`` the built-in default or an
  allowlisted one; otherwise :class:`~.images.ImageNotAllowed` and no manifest;
* everything else (hardening, labels, finalizers, deadline, storage and auth wiring) is
  :func:`~.jobspec.build_job`'s, with purpose ``drill``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from controller.backup.decide.images import ImagePolicy, policy_of
from controller.backup.decide.jobspec import RestoreRun, build_job
from controller.backup.decide.spec import ClusterSpec, Target, parse_target
from executor import contract as c

JSON = dict[str, Any]
DRILL_DIR = "/var/lib/openbao-drill"
UNSEAL_KEYS_DIR = "/var/run/secrets/openbao-unseal-keys"
SEAL_DIR = "/etc/openbao-drill-seal"


def build_drill_job(
    *,
    cluster: ClusterSpec,
    record: Mapping[str, Any],
    job_name: str,
    image: str | ImagePolicy,
    ttl_seconds_after_finished: int,
) -> JSON:
    backup = cluster.backup
    assert backup is not None, "a drill needs spec.backup"
    assert backup.verify is not None, "a drill needs spec.backup.verify"
    verify = backup.verify
    openbao_image = policy_of(image).openbao_image(verify.openbao_image)
    key = str((record.get("status") or {}).get("key") or "")
    target = backup.target
    raw_target = (record.get("status") or {}).get("target")
    job = build_job(
        cluster=cluster,
        record=record,
        job_name=job_name,
        purpose="drill",
        image=image,
        ttl_seconds_after_finished=ttl_seconds_after_finished,
        restore=RestoreRun(key=key),
        target_override=_target(raw_target) or target,
    )
    pod = job["spec"]["template"]["spec"]
    executor = pod["containers"][0]
    scratch = f"http://127.0.0.1:{verify.port}"
    done = f"{DRILL_DIR}/done"
    env = {e["name"]: e["value"] for e in executor["env"]}
    env[c.OPENBAO_ADDR.name] = scratch
    env.pop(c.OPENBAO_CACERT.name, None)  # the scratch server speaks plain HTTP on loopback
    env[c.DRILL_ADDR.name] = scratch
    env[c.DRILL_DONE_FILE.name] = done
    if verify.unseal_keys is not None:
        secret, item = verify.unseal_keys
        pod["volumes"].append(
            {
                "name": "unseal-keys",
                # optional: a missing Secret must not hold the pod in ContainerCreating until
                # its deadline; the executor then fails at once naming OBB_UNSEAL_KEYS_FILE
                "secret": {
                    "secretName": secret,
                    "items": [{"key": item, "path": "keys"}],
                    "optional": True,
                },
            }
        )
        executor["volumeMounts"].append(
            {"name": "unseal-keys", "mountPath": UNSEAL_KEYS_DIR, "readOnly": True}
        )
        env[c.UNSEAL_KEYS_FILE.name] = f"{UNSEAL_KEYS_DIR}/keys"
    server_env = {
        "DRILL_DIR": DRILL_DIR,
        "DRILL_PORT": str(verify.port),
        "DRILL_DONE_FILE": done,
        "HOME": DRILL_DIR,
    }
    server_mounts: list[JSON] = [{"name": "drill", "mountPath": DRILL_DIR}]
    if verify.seal_config is not None:
        kind, name, item = verify.seal_config
        source_key = "secret" if kind == "Secret" else "configMap"
        name_key = "secretName" if kind == "Secret" else "name"
        pod["volumes"].append(
            {
                "name": "seal-config",
                # optional: a missing one fails the drill within its start timeout (the
                # server refuses to start), never a pod stuck in ContainerCreating
                source_key: {
                    name_key: name,
                    "items": [{"key": item, "path": "seal.hcl"}],
                    "optional": True,
                },
            }
        )
        server_mounts.append({"name": "seal-config", "mountPath": SEAL_DIR, "readOnly": True})
        server_env["DRILL_SEAL_CONFIG"] = f"{SEAL_DIR}/seal.hcl"
        env[c.DRILL_AUTO_UNSEAL.name] = "true"
    executor["env"] = [{"name": k, "value": v} for k, v in sorted(env.items())]
    pod["volumes"].append({"name": "drill", "emptyDir": {"sizeLimit": "4Gi"}})
    executor["volumeMounts"].append({"name": "drill", "mountPath": DRILL_DIR})
    server: JSON = {
        "name": "openbao",
        "image": openbao_image,
        "command": ["/bin/sh", "-c", c.DRILL_SERVER_SCRIPT],
        "env": [{"name": k, "value": v} for k, v in server_env.items()],
        "volumeMounts": server_mounts,
        "resources": executor["resources"],
        "securityContext": dict(executor["securityContext"]),
    }
    pod["containers"].append(server)
    return job


def _target(raw: Any) -> Target | None:
    """The target the record was written to (``status.target``), if it parses."""
    if not raw:
        return None
    try:
        return parse_target(raw)
    except ValueError:
        return None
