"""Looking into a stored backup: list its items, compare two backups, select paths to restore.

Guarantees:

* Everything streams. Items are read tree blob by tree blob (repo/items.py); memory does
  not grow with the tree. `diff` is a merge of two path-ordered item streams, never two
  dictionaries of paths.
* Path order is component-wise (a directory, then everything below it, then its next
  sibling: `a`, `a/b`, `a.txt`), which is the order the files source walks in. A stored
  stream that is not in that order (a files source with several `paths:` roots stores the
  outermost roots first) is sorted through a temporary on-disk SQLite table, so memory stays
  bounded there too.
* `RestoreSelection` keeps an item when it or a directory above it matches an --include
  pattern (all items when there is none) and neither it nor a directory above it matches an
  --exclude pattern. Patterns are fnmatch globs matched like the files source's `exclude:`:
  against the base name and the full path (with or without the leading `/`). The
  directories above a kept item are kept too (so they get their stored metadata), and a kept
  hard link keeps the file it links to (a hard link cannot be made to a file that is not
  there).
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import os
import sqlite3
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Any

from backupctl.repo.items import Item, read_items
from backupctl.repo.repository import Repository

ItemsFactory = Callable[[], Iterator[Item]]


def sort_key(path: str) -> bytes:
    """Component-wise path order as bytes: `/` sorts below every other character."""
    return path.encode("utf-8", "surrogatepass").replace(b"/", b"\x00")


def shown_path(path: str, source: str = "") -> str:
    """A stored path for people and JSON: a non-UTF-8 byte shows as `\\xNN`; a files
    source's paths are absolute (they are stored without the leading `/`)."""
    text = path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return "/" + text if source == "files" else text


def _is_ordered(items: Iterator[Item]) -> bool:
    last = b""
    for item in items:
        key = sort_key(item.path)
        if key < last:
            return False
        last = key
    return True


def ordered_items(repo: Repository, tree: list[bytes]) -> Iterator[Item]:
    """The items of one stored source in path order (see module docstring)."""
    if _is_ordered(read_items(repo, tree)):
        yield from read_items(repo, tree)
        return
    with tempfile.TemporaryDirectory(prefix="backupctl-sort-") as tmp:
        db = sqlite3.connect(os.path.join(tmp, "items.db"))
        try:
            db.execute("CREATE TABLE items (k BLOB, line BLOB)")
            batch: list[tuple[bytes, bytes]] = []
            for item in read_items(repo, tree):
                batch.append((sort_key(item.path), item.to_json()))
                if len(batch) >= 1000:
                    db.executemany("INSERT INTO items VALUES (?, ?)", batch)
                    batch.clear()
            db.executemany("INSERT INTO items VALUES (?, ?)", batch)
            db.execute("CREATE INDEX items_k ON items (k)")
            for (line,) in db.execute("SELECT line FROM items ORDER BY k"):
                yield Item.from_json(line)
        finally:
            db.close()


def _tree(src: Mapping[str, Any]) -> list[bytes]:
    return [bytes.fromhex(b) for b in src["tree"]]


def source_label(src: Mapping[str, Any]) -> str:
    return str(src["type"])


def _iso(ns: int) -> str:
    """UTC with milliseconds, truncated (the one precision of JSON output; mtime_ns is exact)."""
    seconds, rest = divmod(ns, 1_000_000_000)
    t = dt.datetime.fromtimestamp(seconds, tz=dt.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S") + f".{rest // 1_000_000:03d}Z"


def item_row(item: Item, source: str) -> dict[str, Any]:
    """One `backup ls` record (keys documented in docs/guide.md)."""
    return {
        "path": shown_path(item.path, source),
        "type": item.kind,
        "size": item.size if item.kind == "file" else 0,
        "mode": f"{item.mode:04o}",
        "mtime": _iso(item.mtime_ns),
        "mtime_ns": item.mtime_ns,
        "user": item.user or str(item.uid),
        "group": item.group or str(item.gid),
        "target": shown_path(item.target, source if item.kind == "hardlink" else "") if item.target else None,
        "source": source,
    }


def _normal(path: str | None) -> str:
    return (path or "").strip("/")


def list_items(
    repo: Repository, manifest: Mapping[str, Any], path: str | None = None
) -> Iterator[dict[str, Any]]:
    """The `backup ls` records of every stored source, in path order; with `path`, only
    that path and what lies below it (absolute or without the leading `/`)."""
    prefix = _normal(path)
    repo.load_index()
    for src in manifest["sources"]:
        label = source_label(src)
        for item in ordered_items(repo, _tree(src)):
            if prefix and item.path != prefix and not item.path.startswith(prefix + "/"):
                continue
            yield item_row(item, label)


# ---- diff --------------------------------------------------------------------------


def changes(old: Item, new: Item) -> list[str]:
    """What differs between two versions of one path: type, content, mode, owner, mtime."""
    if old.kind != new.kind:
        return ["type"]
    out = []
    if (old.size, old.chunks, old.target, old.rdev) != (new.size, new.chunks, new.target, new.rdev):
        out.append("content")
    if old.mode != new.mode:
        out.append("mode")
    if (old.uid, old.gid, old.user, old.group) != (new.uid, new.gid, new.user, new.group):
        out.append("owner")
    if old.mtime_ns != new.mtime_ns:
        out.append("mtime")
    return out


def _diff_row(
    change: str, old: Item | None, new: Item | None, source: str, what: list[str]
) -> dict[str, Any]:
    item = new or old
    assert item is not None
    return {
        "change": change,
        "path": shown_path(item.path, source),
        "type": item.kind,
        "old_size": (old.size if old.kind == "file" else 0) if old else None,
        "new_size": (new.size if new.kind == "file" else 0) if new else None,
        "changes": what,
        "source": source,
    }


def _merge(a: Iterator[Item], b: Iterator[Item], source: str) -> Iterator[dict[str, Any]]:
    end = object()
    x: Any = next(a, end)
    y: Any = next(b, end)
    while x is not end or y is not end:
        kx = sort_key(x.path) if x is not end else None
        ky = sort_key(y.path) if y is not end else None
        if ky is None or (kx is not None and kx < ky):
            yield _diff_row("removed", x, None, source, [])
            x = next(a, end)
        elif kx is None or ky < kx:
            yield _diff_row("added", None, y, source, [])
            y = next(b, end)
        else:
            what = changes(x, y)
            if what:
                yield _diff_row("changed", x, y, source, what)
            x, y = next(a, end), next(b, end)


def diff_backups(
    repo_a: Repository, manifest_a: Mapping[str, Any], repo_b: Repository, manifest_b: Mapping[str, Any]
) -> Iterator[dict[str, Any]]:
    """Added, removed and changed paths from backup A to backup B, in path order per source.

    Sources are paired by type and description (the same configured source), then the
    rest by type in order (a source whose options changed between the two backups); a
    source in only one backup shows all its entries as added or removed."""
    from backupctl.backups.archiver import source_key

    def key(src: Mapping[str, Any]) -> str:
        return source_key(src["type"], src["describe"])

    rest_a = list(manifest_a["sources"])
    rest_b = list(manifest_b["sources"])
    pairs: list[tuple[Mapping[str, Any] | None, Mapping[str, Any] | None]] = []
    for same in (key, source_label):
        for sa in list(rest_a):
            sb = next((b for b in rest_b if same(b) == same(sa)), None)
            if sb is not None:
                pairs.append((sa, sb))
                rest_a.remove(sa)
                rest_b.remove(sb)
    pairs += [(sa, None) for sa in rest_a] + [(None, sb) for sb in rest_b]
    repo_a.load_index()
    repo_b.load_index()
    for sa, sb in pairs:
        label = source_label(sa or sb or {"type": "?"})
        yield from _merge(
            ordered_items(repo_a, _tree(sa)) if sa else iter(()),
            ordered_items(repo_b, _tree(sb)) if sb else iter(()),
            label,
        )


# ---- restore selection -------------------------------------------------------------


def _matches(patterns: tuple[str, ...], path: str) -> bool:
    name = path.rsplit("/", 1)[-1]
    full = "/" + path
    return any(
        fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(full, p) or fnmatch.fnmatchcase(path, p)
        for p in patterns
    )


def _clean_patterns(patterns: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(p.rstrip("/") or "/" for p in patterns)


@dataclass(frozen=True)
class RestoreSelection:
    """--include/--exclude of `backup restore` (see module docstring)."""

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "include", _clean_patterns(self.include))
        object.__setattr__(self, "exclude", _clean_patterns(self.exclude))
        object.__setattr__(self, "_state", lru_cache(maxsize=4096)(self._state_uncached))

    def __bool__(self) -> bool:
        return bool(self.include or self.exclude)

    def _state_uncached(self, path: str) -> tuple[bool, bool]:
        """(included, excluded) of `path`, inherited from the directories above it."""
        parent = path.rsplit("/", 1)[0] if "/" in path else ""
        inc, exc = self._state(parent) if parent else (not self.include, False)  # type: ignore[attr-defined]
        return (inc or _matches(self.include, path), exc or _matches(self.exclude, path))

    def wants(self, path: str) -> bool:
        inc, exc = self._state(path)  # type: ignore[attr-defined]
        return bool(inc and not exc)

    def select(self, items: ItemsFactory) -> Iterator[Item]:
        """The kept items of a stream, in its order, with the directories above them."""
        # First pass: files that kept hard links point to (they must be restored too).
        link_targets = {
            i.target
            for i in items()
            if i.kind == "hardlink" and self.wants(i.path) and not self.wants(i.target)
        }
        pending: list[list[Any]] = []  # [path, dir item, already emitted] down to the current one
        for item in items():
            while pending and not item.path.startswith(pending[-1][0] + "/"):
                pending.pop()
            keep = self.wants(item.path) or item.path in link_targets
            if keep:
                for entry in pending:
                    if not entry[2]:
                        entry[2] = True
                        yield entry[1]
                yield item
            if item.kind == "dir":
                pending.append([item.path, item, keep])


def check_selection(
    repo: Repository, record: Mapping[str, Any], manifest: Mapping[str, Any], selection: RestoreSelection
) -> list[int]:
    """Refuse --include/--exclude where they cannot apply (a database dump is restored
    whole) or where they select nothing, before a restore touches anything. Returns how
    many entries each source will restore (for "N of M entries" when a restore stops)."""
    from backupctl.errors import UsageError

    repo.load_index()
    others = sorted({s["type"] for s in manifest["sources"] if s["type"] != "files"})
    if others:
        raise UsageError(
            f"--include/--exclude select paths of files sources; backup {record['short_id']} "
            f"also holds {', '.join(others)} (restored whole)",
            hint="restore without --include/--exclude, or use `backupctl backup ls` and a files backup",
        )
    counts = [
        sum(1 for _ in selection.select(partial(read_items, repo, _tree(s)))) for s in manifest["sources"]
    ]
    if not any(counts):
        raise UsageError(
            f"no path in backup {record['short_id']} matches the --include/--exclude patterns",
            hint=f"see `backupctl backup ls {record['short_id']}`; patterns match base names and "
            "absolute paths (e.g. /srv/app/docs or '*.conf')",
        )
    return counts
