"""Every timestamp backupctl writes or reads, in one place: UTC ISO 8601 with a `Z`.

The precision differs by where the text lives, and each is on disk or in JSON, so each is
kept exactly and named by its precision (never "normalise" one into another):

* `iso_ms`: milliseconds - backup started/finished (manifests, `-o json`), job rows,
  scheduler bookkeeping. Orders backups taken within the same second.
* `iso_s`: seconds - policy times (minute-aligned), `expires`, the repository config's
  `created`.
* `iso_us`: microseconds - PITR moments (WAL/binlog commit times and recovery windows).

Parsing accepts all three (`parse_iso` keeps the offset as written, `parse_iso_utc`
converts to UTC). A leaf module: it imports only `datetime` and `typing`.
"""

from __future__ import annotations

import datetime as dt
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
