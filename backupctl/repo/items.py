"""The item stream: a backup's per-source list of entries, stored as tree blobs.

Each entry is one JSON line (keys below); the lines are concatenated and cut into
TREE blobs by content-defined chunking, so an unchanged stretch of a tree dedups
against the previous backup. The manifest lists the tree blob IDs of each source.

    {"p": path, "k": kind, "m": mode, "u": uid, "g": gid, "un": user, "gn": group,
     "mt": mtime_ns, "ct": ctime_ns, "i": inode, "s": size, "t": target,
     "c": [chunk id hex, ...], "x": {xattr name: base64 value}, "r": [major, minor],
     "sp": 1}

"x" (extended attributes, including system.posix_acl_access/_default and
security.capability), "r" (device numbers of "chardev"/"blockdev" items) and "sp" (the
file had holes: restore all-zero chunks as holes) are optional and absent in items
written before they existed; readers ignore keys they do not know. Kinds: file, dir,
symlink, hardlink, fifo, chardev, blockdev.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from backupctl.repo.chunker import TREE_CHUNKS, PushChunker
from backupctl.repo.codec import dump_json, load_json
from backupctl.repo.pack import TREE
from backupctl.repo.repository import Repository
from backupctl.repo.writer import BlobWriter
from backupctl.sources.base import Entry


@dataclass
class Item:
    path: str
    kind: str
    mode: int = 0
    uid: int = 0
    gid: int = 0
    user: str = ""
    group: str = ""
    mtime_ns: int = 0
    ctime_ns: int = 0
    inode: int = 0
    size: int = 0
    target: str = ""
    chunks: list[bytes] = field(default_factory=list)
    xattrs: dict[str, bytes] | None = None
    rdev: tuple[int, int] | None = None
    sparse: bool = False
    # The line this item was decoded from (read_items), without its newline; None for an
    # item made here. The stream writer copies it instead of encoding the item again: an
    # unchanged file reuses its parent's item (backups/archiver.py _reuse). Items are never
    # changed once made, and dataclasses.replace() leaves it None (init=False).
    line: bytes | None = field(default=None, init=False, compare=False, repr=False)

    @classmethod
    def from_entry(cls, e: Entry, size: int, chunks: list[bytes]) -> Item:
        return cls(
            e.path,
            e.kind,
            e.mode,
            e.uid,
            e.gid,
            e.user,
            e.group,
            e.mtime_ns,
            e.ctime_ns,
            e.inode,
            size,
            e.target,
            chunks,
            e.xattrs or None,
            e.rdev,
            e.sparse,
        )

    def to_json(self) -> bytes:
        doc = {
            "p": self.path,
            "k": self.kind,
            "m": self.mode,
            "u": self.uid,
            "g": self.gid,
            "mt": self.mtime_ns,
        }
        if self.user:
            doc["un"] = self.user
        if self.group:
            doc["gn"] = self.group
        if self.ctime_ns:
            doc["ct"] = self.ctime_ns
        if self.inode:
            doc["i"] = self.inode
        if self.kind == "file":
            doc["s"] = self.size
            doc["c"] = [c.hex() for c in self.chunks]
        if self.target:
            doc["t"] = self.target
        if self.xattrs:
            doc["x"] = {k: base64.b64encode(v).decode() for k, v in self.xattrs.items()}
        if self.rdev is not None:
            doc["r"] = list(self.rdev)
        if self.sparse:
            doc["sp"] = 1
        return dump_line(doc)

    @classmethod
    def from_json(cls, line: bytes) -> Item:
        item = cls._decode(line)
        item.line = line.rstrip(b"\n")
        return item

    @classmethod
    def _decode(cls, line: bytes) -> Item:
        d = load_json(line)
        return cls(
            d["p"],
            d["k"],
            d.get("m", 0),
            d.get("u", 0),
            d.get("g", 0),
            d.get("un", ""),
            d.get("gn", ""),
            d.get("mt", 0),
            d.get("ct", 0),
            d.get("i", 0),
            d.get("s", 0),
            d.get("t", ""),
            [bytes.fromhex(c) for c in d.get("c", ())],
            {k: base64.b64decode(v) for k, v in d["x"].items()} if "x" in d else None,
            (d["r"][0], d["r"][1]) if "r" in d else None,
            bool(d.get("sp")),
        )


def dump_line(doc: dict[str, Any]) -> bytes:
    """One item line, exactly as `json.dumps(doc, separators=(",", ":"))` writes it (keys in
    the order given), so that item streams stay byte for byte what they were and keep
    deduplicating (codec.dump_json: orjson when that gives the same bytes)."""
    return dump_json(doc, sort_keys=False) + b"\n"


class ItemStreamWriter:
    def __init__(self, writer: BlobWriter) -> None:
        self.writer = writer
        self.chunker = PushChunker(TREE_CHUNKS)
        self.blob_ids: list[bytes] = []
        self._buf: list[bytes] = []
        self._buf_size = 0

    def add(self, item: Item) -> None:
        if item.line is not None:
            self._buf += (item.line, b"\n")
            self._buf_size += len(item.line) + 1
        else:
            line = item.to_json()
            self._buf.append(line)
            self._buf_size += len(line)
        if self._buf_size >= 1 << 20:
            self._flush()

    def _flush(self) -> None:
        data = b"".join(self._buf)
        self._buf, self._buf_size = [], 0
        for chunk in self.chunker.feed(data):
            self.blob_ids.append(self.writer.add(chunk, TREE))

    def close(self) -> list[bytes]:
        self._flush()
        for chunk in self.chunker.close():
            self.blob_ids.append(self.writer.add(chunk, TREE))
        return self.blob_ids


def path_key(path: str) -> str:
    """The order of a source's item stream: component-wise, so that a directory's whole
    subtree follows it before its next sibling ("a", "a/b", "a-", "a.b"). The files
    source walks in this order (children sorted by name, roots sorted by this key) and the
    streaming parent merge (backups/archiver.py) relies on it. "/" becomes NUL, which sorts
    below every character a name can hold; str comparison is by code point, the same
    order as backups/browse.py sort_key's UTF-8 (surrogatepass) bytes, including the
    surrogate escapes of names that are not UTF-8."""
    return path.replace("/", "\0")


def read_items(repo: Repository, tree: list[bytes]) -> Iterator[Item]:
    """The items of a stored item stream, in stored order, one tree blob in memory at a time."""
    carry = b""
    for blob_id in tree:
        data = carry + repo.load_blob(blob_id)
        lines = data.split(b"\n")
        carry = lines.pop()
        for line in lines:
            if line:
                yield Item.from_json(line)
    if carry.strip():
        yield Item.from_json(carry)
