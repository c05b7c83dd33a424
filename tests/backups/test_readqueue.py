"""backups/readqueue.py: items reach the stream in scan order, small reads are batched, and a
batch that fails or a queue that is cancelled loses nothing silently."""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from backupctl.backups import readqueue
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


def _run(ops: list[tuple[str, str]], read_delay: Any = None) -> tuple[list[str], list[str], list[int]]:
    """Feed `ops` ((kind, path), kind in known/small/large/here/skip) through a queue; the
    stream's paths, the emitted paths and the size of every pool task (files read per task)."""
    stream = _Stream()
    emitted: list[str] = []
    task_sizes: list[int] = []
    reading = threading.local()

    def read(entry: Entry) -> Item | None:
        if read_delay:
            time.sleep(read_delay())
        reading.count = getattr(reading, "count", 0) + 1
        return None if entry.path.startswith("skip") else _item(entry.path, "file")

    real_group, real_one = readqueue._group, readqueue._one

    def group(read_: Any, slots: list[Any]) -> list[Item | None]:
        task_sizes.append(sum(isinstance(s, Entry) for s in slots))
        return real_group(read_, slots)

    def one(read_: Any, entry: Entry) -> list[Item | None]:
        task_sizes.append(1)
        return real_one(read_, entry)

    with ThreadPoolExecutor(2) as pool, pytest.MonkeyPatch.context() as mp:
        mp.setattr(readqueue, "_group", group)
        mp.setattr(readqueue, "_one", one)
        queue = InScanOrder(stream, pool, read, lambda item: emitted.append(item.path))  # type: ignore[arg-type]
        for kind, path in ops:
            entry = Entry(path=path, kind="file", size=100 if kind != "large" else 10 << 20)
            if kind == "known":
                queue.known(_item(path))
            elif kind in ("small", "skip"):
                queue.read_small(entry)
            elif kind == "large":
                queue.read_large(entry)
            else:
                queue.read_here(entry)
            queue.drain(4)
        queue.drain(0)
    return stream.paths, emitted, task_sizes


def test_items_keep_scan_order_whatever_finishes_first() -> None:
    rng = random.Random(7)
    kinds = ["known"] * 3 + ["small"] * 10 + ["large", "here", "skip"]
    ops = [
        (k, f"{k if k == 'skip' else 'p'}{i:04}") for i, k in enumerate(rng.choice(kinds) for _ in range(700))
    ]
    paths, emitted, sizes = _run(ops, read_delay=lambda: rng.random() / 2000)
    expected = [p for k, p in ops if k != "skip"]
    assert paths == expected
    assert emitted == expected
    # Small reads went in batches: far fewer tasks than small files, none over the limit.
    small = sum(k in ("small", "skip") for k, _ in ops)
    assert max(sizes) <= readqueue.BATCH_READS
    assert len(sizes) < small / 4


def test_a_batch_stops_at_its_byte_limit() -> None:
    ops = [("small", f"f{i}") for i in range(10)]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(readqueue, "BATCH_BYTES", 300)  # three files of 100 bytes
        paths, _, sizes = _run(ops)
    assert paths == [p for _, p in ops]
    assert sizes == [3, 3, 3, 1]


def test_known_items_behind_a_batch_wait_for_it_and_a_group_is_bounded() -> None:
    ops = (
        [("small", "a")]
        + [("known", f"k{i:04}") for i in range(readqueue.GROUP_SLOTS + 5)]
        + [("small", "b")]
    )
    paths, _, sizes = _run(ops)
    assert paths == [p for _, p in ops]
    assert sizes == [1, 1]  # the first group closed at GROUP_SLOTS slots, not at the end


def test_a_failed_read_reaches_the_caller_and_cancel_drops_the_rest() -> None:
    stream = _Stream()

    def read(entry: Entry) -> Item | None:
        if entry.path == "bad":
            raise OSError("disk on fire")
        return _item(entry.path, "file")

    with ThreadPoolExecutor(2) as pool:
        queue = InScanOrder(stream, pool, read, lambda item: None)  # type: ignore[arg-type]
        for path in ("ok1", "bad", "ok2"):
            queue.read_small(Entry(path=path, kind="file", size=10))
        with pytest.raises(OSError, match="disk on fire"):
            queue.drain(0)
        queue.cancel()
        queue.drain(0)
    assert stream.paths == []  # the batch with the failed read stored none of its items
