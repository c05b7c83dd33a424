"""The MariaDB/MySQL binary log file format (v4): event headers and `scan_binlog`.

Pure parsing: no server, no repository, no other backupctl.pitr module. `HEADER` is the
common event header (timestamp, type, server id, event size, next position, flags) and
`BINLOG_MAGIC` the 4 bytes every binary log starts with; both are public because the
stream (pitr.binlog_stream) cuts a growing file after its last complete event with them.
"""

from __future__ import annotations

import datetime as dt
import struct
from typing import Any

from backupctl.errors import IntegrityError
from backupctl.timefmt import iso_us

BINLOG_MAGIC = b"\xfebin"


HEADER = struct.Struct("<IBIIIH")  # timestamp, type, server id, event size, next position, flags


_GTID_EVENT = 162  # MariaDB GTID event: starts every transaction


_XID_EVENT = 16


_QUERY_EVENT = 2


_ROTATE_EVENT = 4


_STOP_EVENT = 3


def scan_binlog(data: bytes, name: str = "binary log") -> dict[str, Any]:
    """Facts about one binary log file from its event headers (binlog format v4).

    first/last event time (UTC, whole seconds), the time of the last transaction (last GTID,
    XID or query event), the first and end positions, the number of events, the server id,
    and how the file ends (rotate: closed normally; stop: server shut down).
    """
    if data[:4] != BINLOG_MAGIC:
        raise IntegrityError(f"{name}: not a binary log (bad magic)")
    pos, events = 4, 0
    first_time: int | None = None
    last_time: int | None = None
    last_trx: int | None = None
    server_id: int | None = None
    last_type = None
    while pos + HEADER.size <= len(data):
        ts, typ, sid, size, _next_pos, _flags = HEADER.unpack_from(data, pos)
        if size < HEADER.size or pos + size > len(data):
            raise IntegrityError(f"{name}: truncated or damaged event at position {pos}")
        if ts:
            first_time = ts if first_time is None else first_time
            last_time = ts
            if typ in (_GTID_EVENT, _XID_EVENT, _QUERY_EVENT):
                last_trx = ts
        server_id = sid if server_id is None else server_id
        last_type = typ
        events += 1
        pos += size
    if pos != len(data):
        raise IntegrityError(f"{name}: {len(data) - pos} trailing bytes after the last event")

    def iso(ts: int | None) -> str | None:
        return iso_us(dt.datetime.fromtimestamp(ts, dt.UTC)) if ts is not None else None

    return {
        "first_event_time": iso(first_time),
        "last_event_time": iso(last_time),
        "last_transaction_time": iso(last_trx),
        "start_position": 4,
        "end_position": pos,
        "events": events,
        "server_id": server_id,
        "closed_by": {_ROTATE_EVENT: "rotate", _STOP_EVENT: "stop"}.get(last_type or -1, "none"),
    }
