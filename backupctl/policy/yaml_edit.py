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

from backupctl.errors import ConfigError, NotFoundError

BACKUP_SUFFIX = ".bak"


Key = str
Path_ = tuple[Key, ...]


def _plain(value: Any) -> Any:
    """Deep copy into plain dicts/lists (ruamel's own nodes included)."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _indent_of(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _is_blank_or_comment(line: str) -> bool:
    s = line.strip()
    return not s or s.startswith("#")


class _Doc:
    """The file as lines plus ruamel's map of where each key is; re-parsed after each splice."""

    def __init__(self, text: str) -> None:
        if text and not text.endswith("\n"):
            text += "\n"
        self.set_text(text)
        self.step, self.seq_offset = self._guess_style()

    def set_text(self, text: str) -> None:
        self.lines = text.splitlines(keepends=True)
        data = YAML(typ="rt").load(text) if text.strip() else None
        if data is None:
            data = CommentedMap()
        if not isinstance(data, CommentedMap):
            raise ConfigError("the top level of the configuration must be a mapping")
        self.data = data

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def _guess_style(self) -> tuple[int, int]:
        step, offset = 2, 2
        for i, line in enumerate(self.lines[:-1]):
            stripped = line.strip()
            if _is_blank_or_comment(line) or not stripped.endswith(":"):
                continue
            nxt = next((ln for ln in self.lines[i + 1 :] if not _is_blank_or_comment(ln)), "")
            delta = _indent_of(nxt) - _indent_of(line)
            if nxt.lstrip().startswith("- "):
                offset = max(delta, 0)
            elif delta > 0 and step == 2:
                step = delta
        return step, offset

    # -- locating ---------------------------------------------------------------------

    def lookup(self, path: Path_) -> Any:
        node: Any = self.data
        for key in path:
            if not isinstance(node, CommentedMap) or key not in node:
                return _MISSING
            node = node[key]
        return node

    def block(self, parent: CommentedMap, key: Key) -> tuple[int, int, int]:
        """(first line, end line, column) of `key: value` inside block mapping `parent`."""
        line, col = parent.lc.key(key)
        end = line + 1
        while end < len(self.lines):
            text = self.lines[end]
            if not _is_blank_or_comment(text):
                ind, stripped = _indent_of(text), text.strip()
                if stripped in ("---", "...") or ind < col or (ind == col and not stripped.startswith("-")):
                    break
            end += 1
        while (
            end - 1 > line
            and _is_blank_or_comment(self.lines[end - 1])
            and (not self.lines[end - 1].strip() or _indent_of(self.lines[end - 1]) <= col)
        ):
            end -= 1
        return line, end, col

    # -- rendering --------------------------------------------------------------------

    def render(self, key: Key, value: Any, seq_offset: int | None = None) -> list[str]:
        offset = self.seq_offset if seq_offset is None else seq_offset
        y = YAML(typ="rt")
        y.width = 4096
        y.indent(mapping=self.step, sequence=max(self.step, offset + 2), offset=offset)
        buf = io.StringIO()
        y.dump({key: _plain(value)}, buf)
        return buf.getvalue().splitlines(keepends=True)

    def splice(self, start: int, end: int, new: list[str]) -> None:
        self.set_text("".join(self.lines[:start] + new + self.lines[end:]))

    # -- edits ------------------------------------------------------------------------

    def set(self, path: Path_, value: Any) -> None:
        parent = self.lookup(path[:-1])
        key = path[-1]
        if parent is _MISSING or parent is None or (isinstance(parent, CommentedMap) and not parent):
            if len(path) == 1:
                parent = self.data
            else:
                return self.set(path[:-1], {key: value})
        if not isinstance(parent, CommentedMap):
            raise ConfigError(f"{'.'.join(path[:-1])} is not a mapping")
        if parent.fa.flow_style() and len(path) > 1:
            merged = _plain(parent)
            merged[key] = value
            return self.set(path[:-1], merged)
        if key not in parent:
            return self._insert(parent, key, value)
        current = parent[key]
        if _plain(current) == _plain(value):
            return None
        line, end, col = self.block(parent, key)
        vline, vcol = parent.lc.value(key)
        if self._inline_scalar(current, value, line, vline, end):
            return self._replace_scalar(line, vcol, key, value)
        rendered = self.render(key, value, self._local_seq_offset(line, end, col))
        prefix = self.lines[line][:col]
        new = [prefix + rendered[0]] + [" " * col + r for r in rendered[1:]]
        return self.splice(line, end, new)

    def _local_seq_offset(self, line: int, end: int, col: int) -> int | None:
        """How this block already indents its list items, to render it the same way."""
        body = [ln for ln in self.lines[line + 1 : end] if not _is_blank_or_comment(ln)]
        if body and body[0].lstrip().startswith("- "):
            return max(_indent_of(body[0]) - col, 0)
        return None

    def _inline_scalar(self, current: Any, value: Any, line: int, vline: int, end: int) -> bool:
        scalar = (str, int, float, bool)
        if (
            not isinstance(value, scalar)
            or not isinstance(current, scalar)
            or vline != line
            or end != line + 1
        ):
            return False
        return not self.lines[line].rstrip("\n")[self._after_colon(line) :].lstrip().startswith(("|", ">"))

    def _after_colon(self, line: int) -> int:
        return self.lines[line].find(":") + 1

    def _replace_scalar(self, line: int, vcol: int, key: Key, value: Any) -> None:
        text = self.lines[line]
        rest = text[vcol:].rstrip("\n")
        end = _scalar_end(rest)
        rendered = self.render(key, value)[0].rstrip("\n")
        new_value = rendered.split(":", 1)[1].strip()
        self.splice(line, line + 1, [text[:vcol] + new_value + rest[end:] + "\n"])

    def _insert(self, parent: CommentedMap, key: Key, value: Any) -> None:
        if parent is self.data:
            col, at = 0, len(self.lines)
            while at > 0 and not self.lines[at - 1].strip():
                at -= 1
            at = len(self.lines) if at == len(self.lines) else at
        else:
            last = list(parent)[-1]
            _, at, _ = self.block(parent, last)
            col = parent.lc.key(list(parent)[0])[1]
        rendered = self.render(key, value)
        self.splice(at, at, [" " * col + r for r in rendered])

    def delete(self, path: Path_) -> None:
        parent = self.lookup(path[:-1])
        key = path[-1]
        if not isinstance(parent, CommentedMap) or key not in parent:
            return
        line, end, col = self.block(parent, key)
        if parent.fa.flow_style() or self.lines[line][:col].strip():
            remaining = _plain(parent)
            del remaining[key]
            return self.set(path[:-1], remaining)
        if len(parent) == 1 and len(path) > 1:
            return self.set(path[:-1], {})
        start = line
        while (
            start > 0
            and self.lines[start - 1].strip().startswith("#")
            and _indent_of(self.lines[start - 1]) == col
        ):
            start -= 1
        next_blank = end >= len(self.lines) or not self.lines[end].strip()
        while next_blank and start > 0 and not self.lines[start - 1].strip():
            start -= 1
        return self.splice(start, end, [])

    def merge(self, path: Path_, changes: Mapping[str, Any], replace: bool = False) -> None:
        """Apply `changes` key by key so untouched lines stay as they are.

        None deletes a key; nested mappings merge into block mappings; with `replace`,
        keys absent from `changes` are deleted too.
        """
        node = self.lookup(path)
        if replace and isinstance(node, CommentedMap):
            for key in [k for k in node if k not in changes]:
                self.delete(path + (key,))
        for key, value in changes.items():
            sub = path + (key,)
            current = self.lookup(sub)
            if value is None:
                self.delete(sub)
            elif (
                isinstance(value, Mapping)
                and isinstance(current, CommentedMap)
                and current
                and not current.fa.flow_style()
            ):
                self.merge(sub, value, replace)
            else:
                self.set(sub, value)


_MISSING = object()


def _scalar_end(rest: str) -> int:
    """Length of the scalar at the start of `rest` (a value and maybe a comment)."""
    if rest[:1] in ("'", '"'):
        quote, i = rest[0], 1
        while i < len(rest):
            if quote == '"' and rest[i] == "\\":
                i += 2
                continue
            if rest[i] == quote:
                if quote == "'" and rest[i + 1 : i + 2] == "'":
                    i += 2
                    continue
                return i + 1
            i += 1
        return len(rest)
    comment = rest.find(" #")
    return len(rest[: comment if comment >= 0 else len(rest)].rstrip())


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


def _edit(path: str | Path, change: Callable[[_Doc], None], dry_run: bool = False) -> str:
    path = Path(path)
    try:
        before = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"no configuration file at {path}") from None
    doc = _Doc(before)
    change(doc)
    after = doc.text
    if after == before:
        return ""
    diff = "".join(
        difflib.unified_diff(
            before.splitlines(keepends=True),
            after.splitlines(keepends=True),
            f"{path} (before)",
            f"{path} (after)",
        )
    )
    if not dry_run:
        atomic_write(path, after)
    return diff


def _require(doc: _Doc, section: str, name: str, what: str) -> None:
    if not isinstance(doc.lookup((section, name)), CommentedMap):
        if doc.lookup((section, name)) is _MISSING:
            raise NotFoundError(f"no {what} named {name!r} in the configuration")
        raise ConfigError(f"{section}.{name} must be a mapping")


def set_policy(path: str | Path, name: str, mapping: Mapping[str, Any], *, dry_run: bool = False) -> str:
    """Create `policies.NAME` (appended last) or make an existing one equal to `mapping`.

    An existing policy is changed key by key, so lines and comments of unchanged keys stay.
    """

    def change(doc: _Doc) -> None:
        if isinstance(doc.lookup(("policies", name)), CommentedMap):
            doc.merge(("policies", name), mapping, replace=True)
        else:
            doc.set(("policies", name), dict(mapping))

    return _edit(path, change, dry_run)


def update_policy_fields(
    path: str | Path, name: str, changes: Mapping[str, Any], *, dry_run: bool = False
) -> str:
    """Merge `changes` into an existing policy (nested mappings merge; None removes a key).

    E.g. {"status": "paused"} or {"retention": {"keep_daily": 14}}. Lists (schedules)
    are replaced as a whole.
    """

    def change(doc: _Doc) -> None:
        _require(doc, "policies", name, "policy")
        doc.merge(("policies", name), changes)

    return _edit(path, change, dry_run)


def delete_policy(path: str | Path, name: str, *, dry_run: bool = False) -> str:
    """Remove `policies.NAME`. Deployments naming it are the caller's to check first."""

    def change(doc: _Doc) -> None:
        _require(doc, "policies", name, "policy")
        doc.delete(("policies", name))

    return _edit(path, change, dry_run)


def set_deployment_key(path: str | Path, dep: str, key: str, value: Any, *, dry_run: bool = False) -> str:
    """Set (or with value None, remove) one key of `deployments.DEP`, e.g. policy."""

    def change(doc: _Doc) -> None:
        _require(doc, "deployments", dep, "deployment")
        if value is None:
            doc.delete(("deployments", dep, key))
        else:
            doc.set(("deployments", dep, key), value)

    return _edit(path, change, dry_run)


def add_deployment(path: str | Path, name: str, mapping: Mapping[str, Any], *, dry_run: bool = False) -> str:
    """Append `deployments.NAME`; refuses to overwrite an existing deployment."""

    def change(doc: _Doc) -> None:
        if doc.lookup(("deployments", name)) is not _MISSING:
            raise ConfigError(f"a deployment named {name!r} already exists")
        doc.set(("deployments", name), dict(mapping))

    return _edit(path, change, dry_run)
