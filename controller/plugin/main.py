"""``kubectl openbao-backup``: back up, list, inspect and restore from the command line.

Installed with the package as the executable ``kubectl-openbao_backup``, which kubectl runs
as ``kubectl openbao-backup …`` when it is on ``PATH``::

    kubectl openbao-backup backup vault -n openbao --wait   # live progress, exit 0/1
    kubectl openbao-backup list [vault] [-n openbao | -A]   # the catalog
    kubectl openbao-backup status vault -n openbao          # schedule, last success, conditions
    kubectl openbao-backup restore vault --backup NAME -n openbao [--wait]

Guarantees: exit status 0 when the command (and what it waited for) succeeded, 1 when the
waited-for backup or restore failed, 2 for a usage error or an API error (the message names
the request and the API's answer; credentials are never printed). The kubeconfig is read
like kubectl reads it (``--kubeconfig``, ``KUBECONFIG``, ``~/.kube/config``; the namespace
defaults to the context's).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Sequence
from typing import Any

import anyio
from kubernetes_asyncio import config as kube_config
from kubernetes_asyncio.client import ApiClient, Configuration

from controller.errors import OpenBaoBackupError
from controller.kube.client import KubeApi
from controller.kube.resources import OPENBAO_BACKUP, OPENBAO_RESTORE
from controller.plugin import commands, views

#: How long ``--wait`` waits by default: longer than the executor's default deadline (1 h).
DEFAULT_WAIT_SECONDS = 2 * 3600.0


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)  # accepted after the command, as kubectl
    common.add_argument("--kubeconfig", default=None)
    common.add_argument("--context", default=None)
    common.add_argument("-n", "--namespace", default=None)
    p = argparse.ArgumentParser(prog="kubectl openbao-backup", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("backup", help="back a cluster up now", parents=[common])
    b.add_argument("cluster")
    b.add_argument("--wait", action="store_true", help="follow the run until it ends")
    b.add_argument("--timeout", type=float, default=DEFAULT_WAIT_SECONDS)
    ls = sub.add_parser("list", help="the backup catalog", parents=[common])
    ls.add_argument("cluster", nargs="?")
    ls.add_argument("-A", "--all-namespaces", action="store_true")
    s = sub.add_parser("status", help="a cluster's backup status", parents=[common])
    s.add_argument("cluster")
    r = sub.add_parser(
        "restore", help="restore a cluster from one of its backups", parents=[common]
    )
    r.add_argument("cluster")
    r.add_argument("--backup", required=True, help="the OpenBaoBackup to restore")
    r.add_argument("--wait", action="store_true")
    r.add_argument("--timeout", type=float, default=DEFAULT_WAIT_SECONDS)
    return p


def _say(line: str) -> None:
    print(line, flush=True)


async def _connect(args: argparse.Namespace) -> tuple[KubeApi, str]:
    cfg = Configuration()
    await kube_config.load_kube_config(
        config_file=args.kubeconfig,
        context=args.context,
        client_configuration=cfg,
        persist_config=False,
    )
    namespace = args.namespace
    if namespace is None:
        _, active = kube_config.list_kube_config_contexts(config_file=args.kubeconfig)
        ctx: dict[str, Any] = (active or {}).get("context") or {}
        namespace = ctx.get("namespace") or "default"
    return KubeApi(client=ApiClient(configuration=cfg)), str(namespace)


async def _run(args: argparse.Namespace) -> int:
    api, ns = await _connect(args)
    now = dt.datetime.now(dt.UTC)
    try:
        if args.command == "list":
            scope = None if args.all_namespaces else ns
            recs = await commands.records(api, namespace=scope, cluster=args.cluster)
            _say(views.catalog(recs, now=now, namespaces=args.all_namespaces))
            return 0
        if args.command == "status":
            obj = await commands.cluster(api, namespace=ns, name=args.cluster)
            recs = await commands.records(api, namespace=ns, cluster=args.cluster)
            _say(views.cluster_status(obj, recs, now=now))
            return 0
        if args.command == "backup":
            created = await commands.create_backup(api, namespace=ns, cluster=args.cluster)
            resource, follow = OPENBAO_BACKUP, True
        else:
            created = await commands.create_restore(
                api, namespace=ns, cluster=args.cluster, backup=args.backup
            )
            resource, follow = OPENBAO_RESTORE, False
        name = created["metadata"]["name"]
        _say(f"{resource.kind.lower()}/{name} created")
        if not args.wait:
            return 0
        path = resource.path(namespace=ns, name=name)
        done = await commands.wait(
            api, path=path, say=_say, follow_logs=follow, timeout=args.timeout
        )
        _say(views.outcome(done))
        return 0 if (done.get("status") or {}).get("phase") == "Succeeded" else 1
    finally:
        await api.client.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return anyio.run(_run, args)
    except OpenBaoBackupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except TimeoutError:
        print("error: timed out waiting (the run goes on; see `list`/`status`)", file=sys.stderr)
        return 2
    except (kube_config.ConfigException, OSError) as exc:
        print(f"error: cannot load the kubeconfig: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
