"""Row counts per table, counted while a logical dump streams into the repository.

A restore drill (backupctl/drill/) compares the tables of a restored database with these
counts, so they must be exact and must cost nothing but a pass over bytes the backup reads
anyway: no query, no second read. Each counter is fed the chunks the engine reads from the
dump tool (`CountingStream`) and keeps only a bounded carry between chunks.

* `CopyCounter`, for `pg_dump -Fp`: a table's rows are the lines between its
  `COPY <schema>.<table> (...) FROM stdin;` line and the `\\.` line that ends them (COPY's
  text format escapes newlines and backslashes inside values, so a row is exactly one line
  and no row can be the line `\\.`). Inside a COPY block the lines are counted with
  `bytes.count` and `bytes.find` (C speed); outside, only lines starting with `COPY ` are
  looked at. The key is the qualified name as pg_dump wrote it (quoted where needed, e.g.
  `public."Order"`), which is also how the drill names the table in SQL.
* `InsertCounter`, for `mariadb-dump`: each table's data follows a `-- Dumping data for
  table `t`` comment (also written for an empty table, which so counts 0) as
  `INSERT INTO `t` VALUES ...;` statements; the dump escapes newlines inside strings, so a
  raw newline is never part of a value and `;\n` always ends a statement. A statement's
  rows are its tuples' opening parentheses outside string literals. Newer dumps put each
  tuple on its own line (`),\n(`): where no `),(` occurs, the tuples are the lines starting
  with `(`, counted with `bytes.count`. Otherwise (older dumps: `VALUES (..),(..);` on one
  line), a `),(` may also sit inside a string, so the string literals (backslash escapes,
  `''`) are removed by one regular-expression substitution (C speed, but some 50 MB/s)
  before the parentheses are counted. Only whole lines are handed on (no string spans a
  line end); a partial line waits for the next chunk, so the carry is at most one line
  (one extended-insert buffer, or one row when a row is larger). The key is the table's
  name (the dump is of one database). Only INSERTs inside a table's data section (between
  its `-- Dumping data for table` title and `UNLOCK TABLES;`) count, never a trigger's or a
  routine's body.

A counter whose dump ended mid-block (a failed tool, which fails the backup anyway)
reports `complete` False, and its counts are not recorded.
"""

from __future__ import annotations

import re
from typing import IO, Protocol

from backupctl.sources.base import Entry


class RowCounter(Protocol):
    counts: dict[str, int]
    done: bool  # the dump was read to its end (close() was called)

    def feed(self, data: bytes) -> None: ...

    def close(self) -> None: ...

    @property
    def complete(self) -> bool: ...


_IDENT = rb'(?:"(?:[^"]|"")*"|[^\s".(]+)'
# pg_dump writes `COPY name (columns) FROM stdin;`, and `COPY name  FROM stdin;` (two spaces)
# for a table without columns.
_COPY_HEADER = re.compile(rb"^COPY (" + _IDENT + rb"(?:\." + _IDENT + rb")?) +(?:\(.*\) )?FROM stdin;\r?$")
_TERMINATOR = b"\\."


def _find_terminator(data: bytes, pos: int) -> int:
    """data.find(b"\\n\\\\.\\n", pos), about 10x faster on most dumps: COPY data holds a backslash
    only in escapes (\\N, \\t...), so a memchr for the first one usually lands on the
    terminator or finds none; past a backslash that is not it, find() takes over."""
    i = data.find(b"\\", pos + 1)
    if i < 0:
        return -1
    if data.startswith(b"\n\\.\n", i - 1):
        return i - 1
    return data.find(b"\n\\.\n", i)


class CopyCounter:
    """Rows of each `COPY ... FROM stdin;` block of a plain-format pg_dump (see the module doc)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self._table: str | None = None  # inside the data of this table
        self._rows = 0
        self._mid = False  # inside a line whose start is in `_line`
        self._line = bytearray()  # the start of the current line (capped, see _stash)
        self._skip = False  # the current line is known to be of no interest
        self.done = False

    @property
    def complete(self) -> bool:
        return self._table is None and not self._mid

    def feed(self, data: bytes) -> None:
        pos, n = 0, len(data)
        while pos < n:
            if self._mid:
                nl = data.find(b"\n", pos)
                end = n if nl < 0 else nl
                self._stash(data, pos, end)
                if nl < 0:
                    return
                pos = nl + 1
                self._mid = False
                self._end_line()
                continue
            if self._table is not None:  # at the start of a line of COPY data
                if data.startswith(b"\\.\n", pos):
                    self._close_block()
                    pos += 3
                    continue
                m = _find_terminator(data, pos)
                if m >= 0:
                    self._rows += data.count(b"\n", pos, m) + 1
                    self._close_block()
                    pos = m + 4
                    continue
                last = data.rfind(b"\n", pos)
                if last >= 0:
                    self._rows += data.count(b"\n", pos, last + 1)
                    pos = last + 1
                if pos < n:
                    self._mid = True  # the rest starts a line: stashed by the branch above
                continue
            # At the start of a line outside COPY data: only `COPY ` lines matter.
            if data.startswith(b"COPY ", pos) or (n - pos < 5 and b"COPY ".startswith(data[pos:])):
                self._mid = True
                continue
            m = data.find(b"\nCOPY ", pos)
            if m >= 0:
                pos = m + 1
                continue
            last = data.rfind(b"\n", pos)
            if last >= 0:  # none of the complete lines is a COPY line; the last one may start one
                pos = last + 1
                continue
            self._skip = True  # this line is not a COPY line: skip to its end
            self._mid = True

    def _stash(self, data: bytes, start: int, end: int) -> None:
        """Keep the start of the current line: 3 bytes inside COPY data (enough to tell `\\.`
        from a row), a whole `COPY ` line outside it, nothing of any other line."""
        if self._skip:
            return
        if self._table is not None:
            room = 3 - len(self._line)
            if room > 0:
                self._line += data[start : min(end, start + room)]
            return
        self._line += data[start:end]
        if not b"COPY ".startswith(bytes(self._line[:5])):
            self._skip = True
            self._line.clear()

    def _end_line(self) -> None:
        line = bytes(self._line)
        skipped = self._skip
        self._line.clear()
        self._skip = False
        if self._table is not None:
            if line == _TERMINATOR or line == _TERMINATOR + b"\r":
                self._close_block()
            else:
                self._rows += 1
            return
        if skipped:
            return
        m = _COPY_HEADER.match(line)
        if m:
            self._table = m.group(1).decode("utf-8", "surrogateescape")
            self._rows = 0

    def _close_block(self) -> None:
        assert self._table is not None
        self.counts[self._table] = self.counts.get(self._table, 0) + self._rows
        self._table = None
        self._rows = 0

    def close(self) -> None:
        if self._mid and not self._skip and self._table is None:
            self._mid = False
            self._end_line()
        self.done = True


_DATA_FOR = re.compile(rb"-- Dumping data for table `((?:[^`]|``)*)`\r?$")
_INSERT = re.compile(rb"INSERT (?:IGNORE )?INTO `((?:[^`]|``)*)`(?: \([^)]*\))? VALUES")
_STRING = re.compile(rb"'[^'\\\n]*(?:\\.[^'\\\n]*)*'", re.DOTALL)


class InsertCounter:
    """Rows of the INSERT statements of a mariadb-dump, per table (see the module doc)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self._section: str | None = None  # inside the data of this table
        self._insert: str | None = None  # inside an INSERT statement of this table
        self._carry = b""  # the start of a line not yet complete
        self.done = False

    @property
    def complete(self) -> bool:
        return self._insert is None and not self._carry

    def feed(self, data: bytes) -> None:
        if self._carry:
            data, self._carry = self._carry + data, b""
        pos, n = 0, len(data)
        while pos < n:
            if self._insert is not None:
                # A statement ends at the first line ending in `;`: raw newlines never occur
                # inside the dump's strings, so `;\n` cannot be part of a value.
                end = data.find(b";\n", pos)
                if end >= 0:
                    self._count(data, pos, end + 1)
                    self._insert = None
                    pos = end + 2
                    continue
                last = data.rfind(b"\n", pos)
                if last >= 0:  # complete lines: no string spans a line end
                    self._count(data, pos, last + 1)
                    pos = last + 1
                self._carry = data[pos:]
                return
            if data.startswith(b"INSERT ", pos):
                m = _INSERT.match(data, pos)
                if m and _unquote(m.group(1)) == self._section:
                    self._insert = self._section
                    pos = m.end()
                    continue
            nl = data.find(b"\n", pos)
            if nl < 0:
                self._carry = data[pos:]
                return
            if data.startswith(b"-- ", pos):  # a section's title (the lines around it are "--")
                m = _DATA_FOR.match(data, pos, nl)
                self._section = _unquote(m.group(1)) if m else None
                if self._section is not None:
                    self.counts.setdefault(self._section, 0)
            elif data.startswith(b"UNLOCK TABLES;", pos):
                self._section = None
            pos = nl + 1

    def _count(self, data: bytes, start: int, end: int) -> None:
        """Rows in data[start:end], whole lines of an INSERT's values: with the string
        literals removed only literals, commas and the tuples' parentheses are left."""
        assert self._insert is not None
        if data.find(b"),(", start, end) < 0:
            # Every tuple starts a line (the dump's one-tuple-per-line form, or one row): a raw
            # newline never occurs inside a string, so each `\n(` is a tuple. C speed.
            rows = data.count(b"\n(", start, end) + data.startswith((b"(", b" ("), start, end)
        else:
            rows = _STRING.sub(b"", data[start:end]).count(b"(")
        self.counts[self._insert] = self.counts.get(self._insert, 0) + rows

    def close(self) -> None:
        if self._carry and self._insert is not None:
            data, self._carry = self._carry + b"\n", b""
            self.feed(data)
        self._carry = b""
        self.done = True


def _unquote(name: bytes) -> str:
    return name.replace(b"``", b"`").decode("utf-8", "surrogateescape")


class CountingStream:
    """A dump tool's stdout that feeds every byte read through it to `counter` (the engine
    reads it with read(n) and closes it)."""

    def __init__(self, stream: IO[bytes], counter: RowCounter) -> None:
        self._stream = stream
        self._counter = counter
        self._eof = False

    def read(self, n: int = -1) -> bytes:
        data = self._stream.read(n)
        if data:
            self._counter.feed(data)
        elif n != 0 and not self._eof:
            self._eof = True
            self._counter.close()
        return data

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._stream.close()

    @property
    def eof(self) -> bool:
        return self._eof


def counted(entry: Entry, counter: RowCounter) -> Entry:
    """`entry` (a dump stream made by DatabaseSource._stream_entry) with every byte the engine
    reads from it also fed to `counter`."""
    opener = entry.open
    assert opener is not None

    def open_counted() -> IO[bytes]:
        return CountingStream(opener(), counter)  # type: ignore[return-value]

    entry.open = open_counted
    return entry


def recorded_counts(counters: list[tuple[str, RowCounter]]) -> dict[str, dict[str, int]]:
    """{database: {table: rows}} of the counters whose dump was read to its end."""
    return {name: dict(c.counts) for name, c in counters if c.done and c.complete}
