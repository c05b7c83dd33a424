"""The user's config file as the policy commands read and write it.

Reading: the `policies:` section as written (friendly forms kept), or the built-in default
written out. Writing: write_checked runs yaml_edit steps (comments, order and formatting
kept; atomic), keeps `<file>.bak` as the file was before the command, then loads the file
again as the CLI would; if it no longer loads, the previous file is put back and
ConfigError (exit 4) is raised. WriteResult is what every policy write reports.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backupctl.config.loader import load_config, read_yaml
from backupctl.config.models import Config
from backupctl.errors import BackupctlError, ConfigError, NotFoundError
from backupctl.policy import yaml_edit
from backupctl.policy.models import DEFAULT_POLICY, DEFAULT_POLICY_NAME, NO_POLICY, Policy
from backupctl.policy.resolve import (
    get_policy,
    policies,
)


def config_path(config: Config) -> Path:
    if config.path is None:
        raise ConfigError("the configuration was not read from a file; nothing to write to")
    return Path(config.path)


def raw_policies(config: Config) -> dict[str, dict[str, Any]]:
    """The `policies:` section as written in the file (friendly forms kept)."""
    raw = read_yaml(config_path(config)) or {}
    section = raw.get("policies") if isinstance(raw, dict) else None
    return {str(k): dict(v) for k, v in (section or {}).items() if isinstance(v, dict)}


def dump_policy(policy: Policy) -> dict[str, Any]:
    """A readable mapping of a policy (the built-in default, when it is written out)."""
    doc = policy.model_dump(mode="json", exclude_none=True, exclude_defaults=True)
    doc["schedules"] = [
        {
            "type": s.type,
            **s.model_dump(mode="json", exclude_none=True, exclude_defaults=True),
            "timezone": s.timezone,
        }
        for s in policy.schedules
    ]
    doc["status"] = policy.status
    return doc


def in_file_or_builtin(config: Config, name: str) -> tuple[dict[str, Any], bool]:
    """(raw mapping, whether it is in the file). Unknown names: NotFoundError."""
    raw = raw_policies(config)
    if name in raw:
        return raw[name], True
    if name == DEFAULT_POLICY_NAME:
        return dump_policy(DEFAULT_POLICY), False
    get_policy(config, name)  # raises NotFoundError listing the known ones
    raise NotFoundError(f"no policy named {name!r}")


def check_deployments(config: Config, names: Iterable[str]) -> None:
    for d in names:
        if d not in config.deployments:
            known = ", ".join(sorted(config.deployments)) or "none defined"
            raise NotFoundError(f"no deployment named {d!r} (defined: {known})")


# ---- checked writes -------------------------------------------------------------------


def _diff(path: Path, before: str, after: str) -> str:
    return "".join(
        difflib.unified_diff(
            before.splitlines(keepends=True),
            after.splitlines(keepends=True),
            f"{path} (before)",
            f"{path} (after)",
        )
    )


def validate_file(path: Path) -> Config:
    """Load the file as the CLI would, including every deployment's policy reference."""
    config = load_config(path)
    for dep_name, dep in config.deployments.items():
        name = dep.policy or DEFAULT_POLICY_NAME
        if name != NO_POLICY and name not in policies(config):
            raise ConfigError(f"{path}: deployments.{dep_name}.policy: unknown policy {name!r}")
    return config


def write_checked(path: Path, steps: Sequence[Callable[[Path], str]]) -> str:
    """Run yaml_edit steps on `path`, keep the original in `.bak`, re-validate; diff.

    If a step fails or the result does not load, the original file is put back
    (ConfigError, exit 4, for an invalid result).
    """
    path = Path(path)
    original = path.read_text()
    backup = path.with_name(path.name + yaml_edit.BACKUP_SUFFIX)
    try:
        for step in steps:
            step(path)
    except BaseException:
        if path.read_text() != original:
            yaml_edit.atomic_write(path, original, keep_backup=False)
        raise
    after = path.read_text()
    if after == original:
        return ""
    # Several steps each refreshed the .bak; it must hold the file as it was before us.
    yaml_edit.atomic_write(backup, original, keep_backup=False)
    try:
        validate_file(path)
    except BackupctlError as exc:
        yaml_edit.atomic_write(path, original, keep_backup=False)
        raise ConfigError(
            f"the change would leave an invalid configuration, so {path} was restored from {backup.name}: "
            f"{exc.message}"
        ) from None
    return _diff(path, original, after)


def assign_steps(deployments: Sequence[str], value: str) -> list[Callable[[Path], str]]:
    def step(dep: str) -> Callable[[Path], str]:
        return lambda p: yaml_edit.set_deployment_key(p, dep, "policy", value)

    return [step(d) for d in deployments]


@dataclass
class WriteResult:
    policy: str
    action: str
    diff: str
    deployments: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.diff)

    def as_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "action": self.action,
            "changed": self.changed,
            "deployments": self.deployments,
            "notes": self.notes,
            "diff": self.diff,
        }
