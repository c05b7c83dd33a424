"""Reading a repository's index files into an Index: in parallel, in bounded memory.

Issue 14: a repository of 10 million blobs has about 1 GB of index JSON. The files are
fetched and decoded by a small thread pool (decryption, decompression and the destination's
I/O release the GIL), at most a few files ahead of the thread that adds them, so the decoded
documents waiting in memory stay a handful whatever the repository's size. Adding goes
column by column (Index.add_doc), and the cyclic garbage collector is paused meanwhile:
the decoded JSON holds millions of lists and no cycle, and the collections that its
allocations would trigger make the load about a third slower.
"""

from __future__ import annotations

import gc
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

from backupctl.destinations.base import Destination, NotFound
from backupctl.errors import IntegrityError
from backupctl.repo.codec import Codec
from backupctl.repo.index import Index


def read_index_files(
    dest: Destination, codec: Codec, names: list[str], index: Index, on_damaged: Callable[[str, str], None]
) -> set[str]:
    """Add the index files `names` ("index/<id>") to `index`; returns the IDs added. A file
    that fails authentication or decoding is reported to on_damaged(name, why) and
    skipped; one that vanished meanwhile (a concurrent prune) is skipped silently."""

    def fetch(name: str) -> dict[str, Any] | str:
        try:
            doc = codec.decode_doc(dest.get(name), b"index", name)
        except NotFound:
            return {}
        except IntegrityError as exc:
            return exc.message
        if not isinstance(doc, dict) or not isinstance(doc.get("packs", []), list):
            return f"{name}: not an index file"
        return doc

    added: set[str] = set()
    workers = max(1, min(8, dest.options.connections))
    with ThreadPoolExecutor(max_workers=workers) as pool, _gc_paused():
        for name, doc in _in_order(pool, fetch, names, ahead=2 * workers):
            if isinstance(doc, dict) and doc:
                try:
                    index.add_doc(doc)
                except (KeyError, ValueError, TypeError):
                    doc = f"{name}: malformed index entries"
                else:
                    added.add(name.split("/", 1)[1])
            if isinstance(doc, str):
                on_damaged(name, doc)
    return added


def _in_order(
    pool: ThreadPoolExecutor, fn: Callable[[str], Any], items: list[str], ahead: int
) -> Iterator[tuple[str, Any]]:
    """(item, fn(item)) in the order of `items`, with at most `ahead` calls submitted and
    not yet consumed (pool.map would run them all and keep every result)."""
    pending: deque[tuple[str, Future[Any]]] = deque()
    todo = iter(items)
    for item in todo:
        pending.append((item, pool.submit(fn, item)))
        if len(pending) >= ahead:
            break
    while pending:
        item, future = pending.popleft()
        result = future.result()
        nxt = next(todo, None)
        if nxt is not None:
            pending.append((nxt, pool.submit(fn, nxt)))
        yield item, result


@contextmanager
def _gc_paused() -> Iterator[None]:
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
