"""backups/readqueue.py: items reach the stream in scan order, and a read that fails or a queue
that is cancelled loses nothing silently."""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from backupctl.backups.readqueue import InScanOrder
from backupctl.repo.items import Item
from backupctl.sources.base import Entry


class _Stream:
    def __init__(self) -> None:
        self.paths: list[str] = []

    def add(self, item: Item) -> None:
        self.paths.append(item.path)


def _item(path: str, kind: str = "dir") -> Item:
    return Item.from_entry(Entry(path=path, kind=kind), 0, [])  # type: ignore[arg-type]


def _run(ops: list[tuple[str, str]], read_delay: Any = None) -> tuple[list[str], list[str]]:
    """Feed `ops` ((kind, path), kind in known/large/here/skip) through a queue, draining to
    4 waiting slots after each; the stream's paths and the emitted paths."""
    stream = _Stream()
    emitted: list[str] = []

    def read(entry: Entry) -> Item | None:
        if read_delay:
            time.sleep(read_delay())
        return None if entry.path.startswith("skip") else _item(entry.path, "file")

    with ThreadPoolExecutor(2) as pool:
        queue = InScanOrder(stream, pool, read, lambda item: emitted.append(item.path))  # type: ignore[arg-type]
        for kind, path in ops:
            entry = Entry(path=path, kind="file", size=10 << 20)
            if kind == "known":
                queue.known(_item(path))
            elif kind in ("large", "skip"):
                queue.read_large(entry)
            else:
                queue.read_here(entry)
            queue.drain(4)
        queue.drain(0)
    return stream.paths, emitted


def test_items_keep_scan_order_whatever_finishes_first() -> None:
    rng = random.Random(7)
    kinds = ["known"] * 10 + ["large"] * 3 + ["here", "skip"]
    ops = [
        (k, f"{k if k == 'skip' else 'p'}{i:04}") for i, k in enumerate(rng.choice(kinds) for _ in range(700))
    ]
    paths, emitted = _run(ops, read_delay=lambda: rng.random() / 2000)
    expected = [p for k, p in ops if k != "skip"]
    assert paths == expected
    assert emitted == expected


def test_known_items_wait_behind_a_pending_read_and_go_straight_in_otherwise() -> None:
    stream = _Stream()
    release = threading.Event()

    def read(entry: Entry) -> Item | None:
        release.wait(5)
        return _item(entry.path, "file")

    with ThreadPoolExecutor(1) as pool:
        queue = InScanOrder(stream, pool, read, lambda item: None)  # type: ignore[arg-type]
        queue.known(_item("a"))
        assert stream.paths == ["a"]  # nothing waited before it
        queue.read_large(Entry(path="b", kind="file", size=10 << 20))
        queue.known(_item("c"))
        assert stream.paths == ["a"]  # c waits behind b's read
        release.set()
        queue.drain(0)
    assert stream.paths == ["a", "b", "c"]


def test_a_failed_read_reaches_the_caller_and_cancel_drops_the_rest() -> None:
    stream = _Stream()

    def read(entry: Entry) -> Item | None:
        if entry.path == "bad":
            raise OSError("disk on fire")
        return _item(entry.path, "file")

    with ThreadPoolExecutor(2) as pool:
        queue = InScanOrder(stream, pool, read, lambda item: None)  # type: ignore[arg-type]
        for path in ("ok1", "bad", "ok2"):
            queue.read_large(Entry(path=path, kind="file", size=10 << 20))
        with pytest.raises(OSError, match="disk on fire"):
            queue.drain(0)
        queue.cancel()
        queue.drain(0)
    # ok1 went in before the failure; nothing after the failed read did
    assert stream.paths == ["ok1"]
