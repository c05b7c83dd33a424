"""value and CSV output (`-f value`, `-f csv`): records and scalars written as lines of text.

cli/output.py decides what the document is (records, one record, or scalars) and which
keys are its columns; this module only writes them to stdout. value is the OpenStack
CLI's `-f value`: the values only, space-separated, one record per line, a line break
inside a value written as `\\n` so that a record stays one line. CSV follows RFC 4180
(CRLF line ends, quotes where needed) with a header of keys. Nested data is written as in
JSON. output.py imports this module only when one of these formats is asked for.
"""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any


def write_records(records: Sequence[Mapping[str, Any]], keys: Sequence[str], *, csv: bool) -> None:
    """One line per record with the values of `keys`; CSV with a header of the keys."""
    lines = [[flat_value(r.get(k)) for k in keys] for r in records]
    if csv:
        _write_csv([list(keys), *lines])
    else:  # one record per line, also when a value holds a line break (a comment): as \n
        sys.stdout.write("".join(" ".join(_one_line(v) for v in line) + "\n" for line in lines))


def write_values(items: Sequence[Any], *, csv: bool) -> None:
    """A list of scalars (or one): one per line; CSV under the header `value`."""
    if csv:
        _write_csv([["value"], *([flat_value(v)] for v in items)])
    else:
        sys.stdout.write("".join(flat_value(v) + "\n" for v in items))


def flat_value(value: Any) -> str:
    """A value in value/CSV output: as in JSON for numbers, booleans and nested data; empty for null."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return ",".join(value)
    return json.dumps(value)


def _one_line(value: str) -> str:
    return value.replace("\r", "\\r").replace("\n", "\\n")


def _write_csv(rows: Sequence[Sequence[str]]) -> None:
    import csv

    buf = io.StringIO()
    csv.writer(buf, lineterminator="\r\n").writerows(rows)
    sys.stdout.write(buf.getvalue())
