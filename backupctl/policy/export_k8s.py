"""`schedule export kubernetes`: the manifests that run the scheduler in a cluster.

Guarantees (tests/policy/test_policy_export.py validates them against the Kubernetes API schema):

* one CronJob per scheduled deployment (a paused policy or `policy: none` gets none), running
  `backupctl schedule run-due` with that deployment's own config, so one deployment's long
  backup never holds up another's (`concurrencyPolicy: Forbid` is per deployment);
* that config is a ConfigMap: the deployment alone, with the paths of the pod: the state
  directory and every local repository on PersistentVolumeClaims, the key and every
  `*_file` secret on Secret volumes mounted 0400, every `*_env` secret an environment
  variable from a Secret. No secret value is ever written into a manifest: the Secrets are
  referenced and created by the operator (docs/scheduling.md says how);
* the pod runs as root (uid 0) with every capability dropped but DAC_READ_SEARCH (reading
  what it backs up): Kubernetes mounts Secret files owned by root, and backupctl refuses a
  key file that others can read (an fsGroup would make it 0440).

A deployment whose schedules do not fit one cron expression and time zone is woken every
5 minutes (in UTC); run-due decides what is due, as everywhere.
"""

from __future__ import annotations

import copy
import io
import re
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from ruamel.yaml import YAML
from ruamel.yaml.scalarstring import DoubleQuotedScalarString, LiteralScalarString

from backupctl.policy.export import portable_cron
from backupctl.policy.resolve import effective_policy
from backupctl.policy.schedule import recurrence_text

if TYPE_CHECKING:
    from backupctl.config.models import Config
    from backupctl.policy.models import Policy

CONFIG_DIR = "/etc/backupctl"
CONFIG_FILE = f"{CONFIG_DIR}/config.yaml"  # the ConfigMap's one file
KEY_DIR = f"{CONFIG_DIR}/key"
SECRET_FILES_DIR = f"{CONFIG_DIR}/secrets"
STATE_DIR = "/var/lib/backupctl/state"
REPO_ROOT = "/var/lib/backupctl/repos"
KEY_SECRET = "backupctl-key"  # data: `key` (encryption.key_file) or `passphrase`
ENV_SECRET = "backupctl-env"  # data: one entry per `*_env` variable, named like it
FILES_SECRET = "backupctl-files"  # data: one entry per `*_file`, named as the notes say
STARTING_DEADLINE_S = 3600  # a Job that could not start within an hour is skipped
STATE_SIZE = "1Gi"
REPO_SIZE = "100Gi"
FALLBACK = ("*/5 * * * *", "UTC")
_READ_ONLY_0400 = 0o400


def k8s_name(*parts: str, limit: int = 52) -> str:
    """A DNS-1123 name (CronJob names are at most 52 characters)."""
    name = re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")
    return name[:limit].rstrip("-")


def _raw_config(config: Config) -> dict[str, Any]:
    """The config as written (not as validated: defaults stay implicit)."""
    if config.path is not None and Path(config.path).exists():
        from backupctl.config.loader import read_yaml

        return dict(read_yaml(Path(config.path)) or {})
    dumped: dict[str, Any] = config.model_dump(mode="json", exclude_unset=True, exclude_none=True)
    return dumped


class _Pod:
    """What one deployment's pod needs besides its config: env, mounts, volumes, notes."""

    def __init__(self) -> None:
        self.env: list[dict[str, Any]] = []
        self.file_items: list[dict[str, str]] = []
        self.files: dict[str, str] = {}  # FILES_SECRET key -> the file it holds on this host
        self.notes: list[str] = []
        self.volumes: list[dict[str, Any]] = []
        self.mounts: list[dict[str, Any]] = []

    def secrets(self, node: Any, prefix: str) -> Any:
        """`node` with every `*_env` variable taken from ENV_SECRET and every `*_file` path
        pointed at FILES_SECRET's mount (the file's content is never read)."""
        if isinstance(node, list):
            return [self.secrets(v, f"{prefix}-{i}") for i, v in enumerate(node)]
        if not isinstance(node, dict):
            return node
        out: dict[str, Any] = {}
        for key, value in node.items():
            if isinstance(value, str) and str(key).endswith("_env"):
                if all(e["name"] != value for e in self.env):
                    ref = {"name": ENV_SECRET, "key": value}
                    self.env.append({"name": value, "valueFrom": {"secretKeyRef": ref}})
                out[key] = value
            elif isinstance(value, str) and str(key).endswith("_file"):
                item = k8s_name(prefix, str(key).removesuffix("_file"), limit=253)
                self.file_items.append({"key": item, "path": item})
                self.files[item] = value
                out[key] = f"{SECRET_FILES_DIR}/{item}"
            else:
                out[key] = self.secrets(value, prefix)
        return out


def _scheduled(config: Config) -> list[tuple[str, Policy]]:
    """(deployment, policy) for every deployment with an active policy that has schedules."""
    scheduled: list[tuple[str, Policy]] = []
    for name in config.deployments:
        resolved = effective_policy(config, name)
        if resolved is None or resolved[1].paused or not resolved[1].schedules:
            continue
        scheduled.append((name, resolved[1]))
    return scheduled


def _meta(namespace: str | None, name: str, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name}
    if namespace:
        out["namespace"] = namespace
    out["labels"] = {"app.kubernetes.io/name": "backupctl", **extra.pop("labels", {})}
    out.update(extra)
    return out


def _claim(namespace: str | None, name: str, size: str, shared: bool) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": _meta(namespace, name),
        "spec": {
            # A repository several deployments' pods write to needs ReadWriteMany
            # (or one node); each deployment's state is its own.
            "accessModes": ["ReadWriteMany" if shared else "ReadWriteOnce"],
            "resources": {"requests": {"storage": size}},
        },
    }


def _used_destinations(raw: dict[str, Any], name: str, policy: Policy) -> list[str]:
    dep = raw.get("deployments", {}).get(name, {})
    names = list(policy.destinations or dep.get("destinations") or [])
    return list(dict.fromkeys(names))


def _repo_claims(
    raw: dict[str, Any], scheduled: list[tuple[str, Policy]], namespace: str | None
) -> list[dict[str, Any]]:
    """One claim per local repository a scheduled deployment uses (shared: ReadWriteMany)."""
    local_users: dict[str, int] = {}
    for name, policy in scheduled:
        for dest in _used_destinations(raw, name, policy):
            if (raw.get("destinations", {}).get(dest) or {}).get("type") == "local":
                local_users[dest] = local_users.get(dest, 0) + 1
    return [
        _claim(namespace, k8s_name("backupctl-repo", dest, limit=63), REPO_SIZE, users > 1)
        for dest, users in sorted(local_users.items())
    ]


def _pod_destination(pod: _Pod, raw: dict[str, Any], dest: str) -> Any:
    """A destination as the pod sees it; a local repository is mounted from its claim."""
    spec = copy.deepcopy(raw.get("destinations", {}).get(dest) or {})
    if spec.get("type") == "local":
        volume = k8s_name("repo", dest, limit=63)
        spec["path"] = f"{REPO_ROOT}/{dest}"
        claim_name = k8s_name("backupctl-repo", dest, limit=63)
        pod.volumes.append({"name": volume, "persistentVolumeClaim": {"claimName": claim_name}})
        pod.mounts.append({"name": volume, "mountPath": spec["path"]})
    return pod.secrets(spec, f"destination-{dest}")


def _pod_encryption(pod: _Pod, encryption: dict[str, Any]) -> dict[str, Any]:
    """The encryption settings with the key or passphrase file on KEY_SECRET's volume."""
    for field, item in (("key_file", "key"), ("passphrase_file", "passphrase")):
        if field in encryption:
            encryption[field] = f"{KEY_DIR}/{item}"
            secret = {"secretName": KEY_SECRET, "defaultMode": _READ_ONLY_0400}
            pod.volumes.insert(1, {"name": "key", "secret": secret})
            pod.mounts.insert(1, {"name": "key", "mountPath": KEY_DIR, "readOnly": True})
    if "passphrase_env" in encryption:
        ref = {"name": KEY_SECRET, "key": "passphrase"}
        pod.env.append({"name": encryption["passphrase_env"], "valueFrom": {"secretKeyRef": ref}})
    return encryption


def _pod_config(raw: dict[str, Any], name: str, policy: Policy) -> tuple[_Pod, dict[str, Any]]:
    """What the deployment's pod needs, and its config (the ConfigMap's one file)."""
    pod = _Pod()
    doc = {k: copy.deepcopy(v) for k, v in raw.items() if k not in ("destinations", "deployments")}
    pod.volumes = [
        {"name": "config", "configMap": {"name": k8s_name("backupctl", name, "config", limit=253)}},
        {
            "name": "state",
            "persistentVolumeClaim": {"claimName": k8s_name("backupctl", name, "state", limit=253)},
        },
    ]
    pod.mounts = [
        # subPath: one file, so that the Secret mounts beside it are not nested in a
        # read-only ConfigMap volume (a Job's pod is new each run: no update is missed).
        {"name": "config", "mountPath": CONFIG_FILE, "subPath": "config.yaml", "readOnly": True},
        {"name": "state", "mountPath": STATE_DIR},
    ]
    doc["destinations"] = {}
    for dest in _used_destinations(raw, name, policy):
        doc["destinations"][dest] = _pod_destination(pod, raw, dest)
    dep = copy.deepcopy(raw.get("deployments", {}).get(name) or {})
    for source in dep.get("sources") or []:
        if isinstance(source, dict) and source.get("type") == "files":
            pod.notes.append(
                f"deployment {name} reads {', '.join(map(str, source.get('paths') or []))}: "
                "mount a volume holding it there in CronJob " + k8s_name("backupctl", name)
            )
    doc["deployments"] = {name: pod.secrets(dep, f"{name}-source")}
    doc["encryption"] = _pod_encryption(pod, dict(doc.get("encryption") or {}))
    doc["settings"] = {**(doc.get("settings") or {}), "state_dir": STATE_DIR}
    if pod.file_items:
        secret = {"secretName": FILES_SECRET, "defaultMode": _READ_ONLY_0400, "items": pod.file_items}
        pod.volumes.append({"name": "secret-files", "secret": secret})
        pod.mounts.append({"name": "secret-files", "mountPath": SECRET_FILES_DIR, "readOnly": True})
    return pod, doc


def _container(image: str, run_args: Callable[[str], list[str]], pod: _Pod) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "backupctl",
        "image": image,
        "command": ["backupctl"],
        "args": run_args(CONFIG_FILE),
        "volumeMounts": pod.mounts,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"], "add": ["DAC_READ_SEARCH"]},
        },
    }
    if pod.env:
        container["env"] = pod.env
    return container


def _config_map(
    namespace: str | None, name: str, labels: dict[str, str], doc: dict[str, Any]
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(namespace, k8s_name("backupctl", name, "config", limit=253), labels=labels),
        "data": {"config.yaml": _dump(doc)},
    }


def _cron_job(
    namespace: str | None,
    name: str,
    labels: dict[str, str],
    policy: Policy,
    container: dict[str, Any],
    volumes: list[dict[str, Any]],
) -> dict[str, Any]:
    crons = {portable_cron(s) for s in policy.schedules}
    cron, tz = next(iter(crons)) if len(crons) == 1 else FALLBACK
    recurrences = "; ".join(recurrence_text(s) for s in policy.schedules)
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": _meta(
            namespace,
            k8s_name("backupctl", name),
            labels=labels,
            annotations={"backupctl/recurrence": recurrences},
        ),
        "spec": {
            "schedule": cron,
            "timeZone": tz,
            "concurrencyPolicy": "Forbid",
            "startingDeadlineSeconds": STARTING_DEADLINE_S,
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {
                "spec": {
                    "backoffLimit": 0,  # run-due records the slot: a retry would not rerun it
                    "template": {
                        "metadata": {"labels": {"app.kubernetes.io/name": "backupctl", **labels}},
                        "spec": {
                            "restartPolicy": "Never",
                            "securityContext": {"runAsUser": 0, "runAsGroup": 0},
                            "containers": [container],
                            "volumes": volumes,
                        },
                    },
                }
            },
        },
    }


def manifests(
    config: Config,
    *,
    image: str,
    namespace: str | None,
    run_args: Callable[[str], list[str]],
) -> tuple[list[str], list[dict[str, Any]]]:
    """(notes for the operator, manifests): claims for local repositories first, then per
    scheduled deployment its ConfigMap, state claim and CronJob."""
    raw = _raw_config(config)
    scheduled = _scheduled(config)
    notes: list[str] = []
    env_names: list[str] = []
    files: dict[str, str] = {}
    docs = _repo_claims(raw, scheduled, namespace)
    for name, policy in scheduled:
        pod, doc = _pod_config(raw, name, policy)
        notes.extend(pod.notes)
        env_names += [e["name"] for e in pod.env if e["valueFrom"]["secretKeyRef"]["name"] == ENV_SECRET]
        files.update(pod.files)
        labels = {"backupctl/deployment": k8s_name(name, limit=63)}
        docs.append(_config_map(namespace, name, labels, doc))
        docs.append(_claim(namespace, k8s_name("backupctl", name, "state", limit=253), STATE_SIZE, False))
        docs.append(_cron_job(namespace, name, labels, policy, _container(image, run_args, pod), pod.volumes))
    if scheduled:
        notes = _secret_commands(raw.get("encryption") or {}, env_names, files, namespace) + notes
    return notes, docs


def _secret_commands(
    encryption: dict[str, Any], env_names: list[str], files: dict[str, str], namespace: str | None
) -> list[str]:
    """kubectl commands that create the referenced Secrets from this host's files and
    environment (so that no secret value is ever part of the export)."""
    ns = f" -n {shlex.quote(namespace)}" if namespace else ""
    create = f"kubectl{ns} create secret generic"
    lines = ["Create the Secrets first, from this host's files and environment:"]
    if encryption.get("key_file"):
        lines.append(f"  {create} {KEY_SECRET} --from-file=key={shlex.quote(str(encryption['key_file']))}")
    elif encryption.get("passphrase_file"):
        path = shlex.quote(str(encryption["passphrase_file"]))
        lines.append(f"  {create} {KEY_SECRET} --from-file=passphrase={path}")
    elif encryption.get("passphrase_env"):
        lines.append(f'  {create} {KEY_SECRET} --from-literal=passphrase="${encryption["passphrase_env"]}"')
    if env_names:
        values = " ".join(f'--from-literal={n}="${n}"' for n in dict.fromkeys(env_names))
        lines.append(f"  {create} {ENV_SECRET} {values}")
    if files:
        values = " ".join(f"--from-file={k}={shlex.quote(v)}" for k, v in sorted(files.items()))
        lines.append(f"  {create} {FILES_SECRET} {values}")
    return lines


_YAML11_SPECIAL = re.compile(
    r"(?i)|~|null|y|n|yes|no|true|false|on|off|[-+]?(\.inf|\.nan)|[-+]?[0-9][0-9_:.]*([eE][-+]?[0-9]+)?"
    r"|0x[0-9a-f_]+|0o[0-7_]+|[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}.*"
)


def quote_ambiguous(node: Any) -> Any:
    """`node` with every string (key or value) that a YAML 1.1 reader (kubectl's) would not
    read as that string (`no`, `on`, `21:00`, `1e3`, dates) double-quoted when dumped."""
    if isinstance(node, dict):
        return {quote_ambiguous(k): quote_ambiguous(v) for k, v in node.items()}
    if isinstance(node, list):
        return [quote_ambiguous(v) for v in node]
    if isinstance(node, str) and _YAML11_SPECIAL.fullmatch(node):
        return DoubleQuotedScalarString(node)
    return node


def dump_all(docs: list[dict[str, Any]]) -> str:
    """YAML for kubectl: multi-line strings (the config) as literal blocks, ambiguous
    strings quoted, keys in the order given."""
    y = YAML(typ="rt")
    y.width = 4096
    buf = io.StringIO()
    y.dump_all([quote_ambiguous(d) for d in docs], buf)
    return buf.getvalue()


def _dump(doc: dict[str, Any]) -> LiteralScalarString:
    y = YAML(typ="rt")
    y.width = 4096
    buf = io.StringIO()
    y.dump(quote_ambiguous(doc), buf)
    return cast(LiteralScalarString, LiteralScalarString(buf.getvalue()))
