"""Every timestamp backupctl writes or reads, in one place: UTC ISO 8601 with a `Z`.

The precision differs by where the text lives, and each is on disk or in JSON, so each is
kept exactly and named by its precision (never "normalise" one into another):

* `iso_ms`: milliseconds - backup started/finished (manifests, `-o json`), job rows,
  scheduler bookkeeping. Orders backups taken within the same second.
* `iso_s`: seconds - policy times (minute-aligned), `expires`, the repository config's
  `created`.
* `iso_us`: microseconds - PITR moments (WAL/binlog commit times and recovery windows).

Parsing accepts all three (`parse_iso` keeps the offset as written, `parse_iso_utc`
converts to UTC); `parse_time_arg` reads a moment given on the command line (`--since 7d`).
A leaf module: it imports only `datetime`, `re` and `typing`.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import overload


def utcnow() -> dt.datetime:
    """The current time, timezone-aware, in UTC."""
    return dt.datetime.now(dt.UTC)


def iso_ms(t: dt.datetime) -> str:
    """`YYYY-MM-DDTHH:MM:SS.mmmZ`; `t` must already be in UTC (it is not converted)."""
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def now_iso_ms() -> str:
    """The current time as `iso_ms`."""
    return iso_ms(utcnow())


@overload
def iso_s(t: dt.datetime) -> str: ...
@overload
def iso_s(t: None) -> None: ...
def iso_s(t: dt.datetime | None) -> str | None:
    """`YYYY-MM-DDTHH:MM:SSZ` of `t` converted to UTC; None stays None."""
    if t is None:
        return None
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@overload
def iso_us(t: dt.datetime) -> str: ...
@overload
def iso_us(t: None) -> None: ...
def iso_us(t: dt.datetime | None) -> str | None:
    """`YYYY-MM-DDTHH:MM:SS.ffffffZ` of `t` converted to UTC; None stays None."""
    if t is None:
        return None
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z"


def parse_iso(text: str) -> dt.datetime:
    """An ISO 8601 timestamp (a trailing `Z` means UTC), with the offset as written."""
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def parse_iso_utc(text: str) -> dt.datetime:
    """`parse_iso`, converted to UTC."""
    return parse_iso(text).astimezone(dt.UTC)


_RELATIVE = re.compile(r"^(\d+)\s*(s|m|min|h|d|w)$")
_UNIT_SECONDS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_time_arg(text: str, now: dt.datetime | None = None) -> dt.datetime:
    """A moment given on the command line, in UTC: `30m`, `12h`, `7d`, `2w` (that long before
    `now`), an ISO date `2026-12-01` (local midnight), or an ISO date-time `2026-12-01T10:00`
    / `2026-12-01 10:00` (local time unless it carries `Z` or an offset). ValueError names
    the accepted forms."""
    value = text.strip()
    match = _RELATIVE.match(value.lower())
    if match:
        try:
            ago = dt.timedelta(seconds=int(match.group(1)) * _UNIT_SECONDS[match.group(2)])
            return (now or utcnow()).astimezone(dt.UTC) - ago
        except OverflowError:
            raise ValueError(f"{text!r} reaches back before the year 1") from None
    try:
        t = dt.datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: give an age (30m, 12h, 7d, 2w) or an ISO date or date-time "
            "(2026-12-01, 2026-12-01T10:00, 2026-12-01T10:00Z)"
        ) from None
    if t.tzinfo is None:
        t = t.astimezone()  # a naive time is local time
    return t.astimezone(dt.UTC)
