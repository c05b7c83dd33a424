"""Edit the user's YAML configuration in place, keeping comments, order and formatting.

Every function loads the file with ruamel.yaml's round-trip loader, changes one node,
writes the result atomically (temporary file in the same directory, fsync, rename, then
fsync of the directory) after copying the previous file to `<name>.bak`, and returns a
unified diff of the change ("" when nothing changed, in which case nothing is written).
Only the edited node is re-rendered; the rest of the file stays byte-for-byte the same.

Callers validate the result (e.g. `backupctl.policy.models.Policy.model_validate`) before
calling; `dry_run=True` returns the diff without writing, for "show and ask" flows.
"""

from __future__ import annotations

import difflib
import io
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.util import load_yaml_guess_indent

from backupctl.errors import ConfigError, NotFoundError

BACKUP_SUFFIX = ".bak"


def _yaml(indent: int, block_seq_indent: int) -> YAML:
    y = YAML(typ="rt")
    y.preserve_quotes = True
    y.width = 4096  # never re-wrap long lines
    y.indent(mapping=indent, sequence=indent + block_seq_indent, offset=block_seq_indent)
    return y


def _load(path: Path) -> tuple[str, Any, YAML]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"no configuration file at {path}") from None
    _, indent, block_seq_indent = load_yaml_guess_indent(text) if text.strip() else (None, 2, 0)
    y = _yaml(indent or 2, block_seq_indent or 0)
    data = y.load(text)
    if data is None:
        data = CommentedMap()
    if not isinstance(data, CommentedMap):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return text, data, y


def _dump(y: YAML, data: Any) -> str:
    buf = io.StringIO()
    y.dump(data, buf)
    return buf.getvalue()


def atomic_write(path: Path, text: str, keep_backup: bool = True) -> None:
    """Replace `path` with `text` atomically; the old file becomes `<path>.bak`."""
    path = Path(path)
    directory = path.parent
    if keep_backup and path.exists():
        shutil.copy2(path, path.with_name(path.name + BACKUP_SUFFIX))
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o7777)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _edit(path: str | Path, change: Callable[[CommentedMap], None], dry_run: bool = False) -> str:
    path = Path(path)
    before, data, y = _load(path)
    change(data)
    after = _dump(y, data)
    if after == before:
        return ""
    diff = "".join(
        difflib.unified_diff(
            before.splitlines(keepends=True), after.splitlines(keepends=True), f"{path} (before)", f"{path} (after)"
        )
    )
    if not dry_run:
        atomic_write(path, after)
    return diff


def _section(data: CommentedMap, key: str) -> CommentedMap:
    if data.get(key) is None:
        data[key] = CommentedMap()
    section = data[key]
    if not isinstance(section, CommentedMap):
        raise ConfigError(f"`{key}:` must be a mapping")
    return section


def _existing(data: CommentedMap, section: str, name: str, what: str) -> CommentedMap:
    node = (data.get(section) or {}).get(name)
    if node is None:
        raise NotFoundError(f"no {what} named {name!r} in the configuration")
    if not isinstance(node, CommentedMap):
        raise ConfigError(f"{section}.{name} must be a mapping")
    return node


def _plain(value: Any) -> Any:
    """Mappings become CommentedMaps so they render in block style like the rest."""
    if isinstance(value, Mapping):
        out = CommentedMap()
        for k, v in value.items():
            out[k] = _plain(v)
        return out
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _merge(node: CommentedMap, changes: Mapping[str, Any]) -> None:
    """Recursive update that keeps existing keys (and their comments) in place.

    A value of None removes the key.
    """
    for key, value in changes.items():
        if value is None:
            node.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(node.get(key), CommentedMap):
            _merge(node[key], value)
        elif node.get(key) != value:
            node[key] = _plain(value)


def set_policy(path: str | Path, name: str, mapping: Mapping[str, Any], *, dry_run: bool = False) -> str:
    """Create or replace `policies.NAME` entirely (new policies go last)."""

    def change(data: CommentedMap) -> None:
        policies = _section(data, "policies")
        if name in policies and isinstance(policies[name], CommentedMap):
            node = policies[name]
            for key in [k for k in node if k not in mapping]:
                del node[key]
            _merge(node, mapping)
        else:
            policies[name] = _plain(mapping)

    return _edit(path, change, dry_run)


def update_policy_fields(path: str | Path, name: str, changes: Mapping[str, Any], *, dry_run: bool = False) -> str:
    """Merge `changes` into an existing policy (nested mappings merge; None removes a key).

    E.g. {"status": "paused"} or {"retention": {"keep_daily": 14}}. Lists (schedules)
    are replaced as a whole.
    """
    return _edit(path, lambda data: _merge(_existing(data, "policies", name, "policy"), changes), dry_run)


def delete_policy(path: str | Path, name: str, *, dry_run: bool = False) -> str:
    """Remove `policies.NAME`. Deployments naming it are the caller's to check first."""

    def change(data: CommentedMap) -> None:
        _existing(data, "policies", name, "policy")
        del data["policies"][name]

    return _edit(path, change, dry_run)


def set_deployment_key(path: str | Path, dep: str, key: str, value: Any, *, dry_run: bool = False) -> str:
    """Set (or with value None, remove) one key of `deployments.DEP`, e.g. policy."""

    def change(data: CommentedMap) -> None:
        node = _existing(data, "deployments", dep, "deployment")
        if value is None:
            node.pop(key, None)
        else:
            node[key] = _plain(value)

    return _edit(path, change, dry_run)


def add_deployment(path: str | Path, name: str, mapping: Mapping[str, Any], *, dry_run: bool = False) -> str:
    """Append `deployments.NAME`; refuses to overwrite an existing deployment."""

    def change(data: CommentedMap) -> None:
        deployments = _section(data, "deployments")
        if name in deployments:
            raise ConfigError(f"a deployment named {name!r} already exists")
        deployments[name] = _plain(mapping)

    return _edit(path, change, dry_run)
